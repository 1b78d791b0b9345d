//! What a run prints for a person: one line per point as it finishes, then
//! a table of every point with the best value of each column marked, and
//! where the report is; or, for scripts (`--json`), the same figures as
//! one JSON document on stdout.
//!
//! Every figure is read from the point's `run.json` summary ([`Row::of`]),
//! so the terminal, the JSON and the file cannot disagree. Colour is only
//! for a terminal, and never with `NO_COLOR` set (no-color.org).

use super::files::RunJson;
use crate::run::result::{PointResult, Probe, ProbeKind};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::Path;

/// Where the per-point lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    /// Stdout carries the JSON summary.
    Stderr,
    Nowhere,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub lines: Dest,
    pub color: bool,
}

impl Terminal {
    /// Nothing printed: tests and scripted runs.
    pub fn quiet() -> Terminal {
        Terminal {
            lines: Dest::Nowhere,
            color: false,
        }
    }

    /// As `run` prints: lines on stdout, or on stderr when stdout carries
    /// the JSON summary, none with `--quiet`; colour when the lines' stream
    /// is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect(json: bool, quiet: bool) -> Terminal {
        let lines = match (quiet, json) {
            (true, _) => Dest::Nowhere,
            (false, true) => Dest::Stderr,
            (false, false) => Dest::Stdout,
        };
        let is_tty = match lines {
            Dest::Stdout => std::io::stdout().is_terminal(),
            Dest::Stderr => std::io::stderr().is_terminal(),
            Dest::Nowhere => false,
        };
        Terminal {
            lines,
            color: wants_color(is_tty, std::env::var_os("NO_COLOR").as_deref()),
        }
    }

    /// Prints `text` (one or more lines) where the lines go.
    pub fn emit(&self, text: &str) {
        match self.lines {
            Dest::Stdout => println!("{text}"),
            Dest::Stderr => eprintln!("{text}"),
            Dest::Nowhere => {}
        }
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (no-color.org).
fn wants_color(is_tty: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_tty && no_color.is_none_or(|v| v.is_empty())
}

const BOLD_GREEN: &str = "\x1b[1;32m";
const RED: &str = "\x1b[31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

fn paint(text: &str, code: &str, color: bool) -> String {
    if color {
        format!("{code}{text}{RESET}")
    } else {
        text.to_string()
    }
}

/// One point's figures as the terminal and `--json` show them, all from
/// its `run.json` summary. Latencies in ms; cores are CPU seconds of the
/// measured window per second of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub point: usize,
    pub repeat: u32,
    pub label: String,
    /// msg/s asked for (a ramp's mean); 0 in max-rate mode.
    pub target_msgs: f64,
    pub max_rate_found: Option<f64>,
    /// Whether the measured window sustained `max_rate_found`; `false`:
    /// no window within the attempts sustained a rate.
    #[serde(default)]
    pub max_rate_confirmed: Option<bool>,
    /// A ramp's first and last rate.
    pub ramp: Option<(f64, f64)>,
    pub publish_msgs: f64,
    pub publish_mb: f64,
    pub publish_p50_ms: f64,
    pub publish_p99_ms: f64,
    pub publish_p99_9_ms: f64,
    pub publish_max_ms: f64,
    /// Absent without consumers.
    pub e2e_p99_ms: Option<f64>,
    pub errors: u64,
    /// Absent when no broker process was watched.
    pub broker_cores: Option<f64>,
    pub client_cores: Option<f64>,
    /// Absent in backlog mode, which has no sustain check.
    pub sustained: Option<bool>,
    pub unsustained_because: Vec<String>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

impl Row {
    pub fn of(p: &PointResult) -> Row {
        let window_s = p.window_s.max(1e-9);
        let cpu = p.cpu.as_ref();
        Row {
            point: p.index,
            repeat: p.repeat,
            label: p.label.clone(),
            target_msgs: p.target_rate,
            max_rate_found: p.max_rate_found,
            max_rate_confirmed: p.max_rate_confirmed,
            ramp: match (p.rate_steps.first(), p.rate_steps.last()) {
                (Some(a), Some(b)) => Some((a.rate, b.rate)),
                _ => None,
            },
            publish_msgs: p.publish_rate_msgs,
            publish_mb: p.publish_rate_mb,
            publish_p50_ms: ms(p.publish_latency.p50_us),
            publish_p99_ms: ms(p.publish_latency.p99_us),
            publish_p99_9_ms: ms(p.publish_latency.p99_9_us),
            publish_max_ms: ms(p.publish_latency.max_us),
            e2e_p99_ms: (p.end_to_end.count > 0).then(|| ms(p.end_to_end.p99_us)),
            errors: p.errors,
            broker_cores: cpu.and_then(|c| c.broker_cpu_s).map(|s| s / window_s),
            client_cores: cpu.map(|c| c.client_cpu_s / window_s),
            sustained: p.sustain.as_ref().map(|s| s.sustained),
            unsustained_because: p.sustain.as_ref().map_or(Vec::new(), |s| s.why_not.clone()),
        }
    }

    fn target(&self) -> String {
        match (self.ramp, self.max_rate_found, self.max_rate_confirmed) {
            (Some((a, b)), _, _) => format!("{a:.0}→{b:.0}"),
            (None, Some(found), _) => format!("max→{found:.0}"),
            (None, None, Some(false)) => "max→none".to_string(),
            (None, None, _) => format!("{:.0}", self.target_msgs),
        }
    }
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
}

/// The line printed as a point finishes.
pub fn point_line(p: &PointResult, color: bool) -> String {
    let r = Row::of(p);
    let mut line = format!(
        "point {} `{}`: target {} msg/s, achieved {:.0} msg/s {:.2} MB/s; publish p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms; e2e p99 {} ms; ",
        r.point,
        r.label,
        r.target(),
        r.publish_msgs,
        r.publish_mb,
        r.publish_p50_ms,
        r.publish_p99_ms,
        r.publish_p99_9_ms,
        r.publish_max_ms,
        opt(r.e2e_p99_ms, 2),
    );
    let errors = format!("errors {}", r.errors);
    line.push_str(&if r.errors > 0 {
        paint(&errors, RED, color)
    } else {
        errors
    });
    line.push_str(&format!(
        "; cores broker {} client {}",
        opt(r.broker_cores, 2),
        opt(r.client_cores, 2)
    ));
    line.push_str(&extras(p));
    if let Some(story) = max_rate_story(p) {
        let story = match p.max_rate_confirmed {
            Some(false) => paint(&story, RED, color),
            _ => story,
        };
        line.push_str(&format!("\n  {story}"));
    }
    if r.sustained == Some(false) {
        let why = format!("UNSUSTAINED: {}", r.unsustained_because.join("; "));
        line.push_str(&format!("\n  {}", paint(&why, RED, color)));
    }
    line
}

/// How a max-rate point's rate was found: whether a measured window
/// confirmed it, then every probe and window with its verdict.
pub fn max_rate_story(p: &PointResult) -> Option<String> {
    story(p.max_rate_found, p.max_rate_confirmed, &p.max_rate_search)
}

fn story(found: Option<f64>, confirmed: Option<bool>, search: &[Probe]) -> Option<String> {
    if search.is_empty() {
        return None;
    }
    let windows: Vec<&Probe> = search
        .iter()
        .filter(|pr| pr.kind == ProbeKind::Window)
        .collect();
    let headline = match (found, confirmed, windows.first()) {
        (Some(found), Some(true), Some(first)) if windows.len() > 1 => format!(
            "max rate {found:.0} msg/s, sustained by the measured window after {} step(s) down from the search's {:.0}",
            windows.len() - 1,
            first.rate
        ),
        (Some(found), Some(true), _) => {
            format!("max rate {found:.0} msg/s, searched and sustained by the measured window")
        }
        (_, Some(false), _) => format!(
            "NO MAX RATE CONFIRMED: none of the {} measured windows sustained the rate it asked for",
            windows.len()
        ),
        (Some(found), _, _) => format!(
            "max rate {found:.0} msg/s from the search's probes alone: the measured window was not judged"
        ),
        (None, _, _) => "no max rate found".to_string(),
    };
    let steps: Vec<String> = search
        .iter()
        .map(|pr| match (pr.kind, pr.rate) {
            (ProbeKind::Unpaced, _) | (_, 0.0) => format!("unpaced {:.0} msg/s", pr.achieved),
            (ProbeKind::Search, r) if pr.sustained => format!("{r:.0} ok"),
            (ProbeKind::Search, r) => format!("{r:.0} no"),
            (ProbeKind::Window, r) if pr.sustained => {
                format!("window {r:.0} sustained ({:.1} s)", pr.window_s)
            }
            (ProbeKind::Window, r) => format!(
                "window {r:.0} NOT sustained, delivered {:.0} ({:.1} s)",
                pr.achieved, pr.window_s
            ),
        })
        .collect();
    let probe_s = search
        .iter()
        .find(|pr| pr.kind == ProbeKind::Search && pr.window_s > 0.0)
        .map_or(String::new(), |pr| {
            format!(" ({:.1} s probes)", pr.window_s)
        });
    Some(format!("{headline}; search{probe_s}: {}", steps.join(", ")))
}

/// What only some points have: unsent or unconsumed messages,
/// transactions, the disk's bare sync latency.
fn extras(r: &PointResult) -> String {
    let mut out = String::new();
    if r.unsent > 0 || r.unconsumed > 0 {
        out.push_str(&format!(
            "; unsent {}, unconsumed {}",
            r.unsent, r.unconsumed
        ));
    }
    if let Some(t) = &r.transactions {
        out.push_str(&format!(
            "; {} messages per transaction: {:.1} commits/s, commit p99 {:.2} ms, {} aborted",
            t.messages_per_transaction,
            t.rate_per_s,
            ms(t.commit_latency.p99_us),
            t.aborted
        ));
    }
    if let Some(d) = &r.disk_sync {
        out.push_str(&format!(
            "; bare fdatasync p99 {:.2} ms",
            ms(d.latency.p99_us)
        ));
    }
    out
}

/// Which way a column improves.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    Neither,
}

struct Column {
    header: &'static str,
    better: Better,
    left: bool,
    /// The cell's text and the value that ranks it.
    cell: fn(&Row) -> (String, Option<f64>),
}

const COLUMNS: &[Column] = &[
    Column {
        header: "#",
        better: Better::Neither,
        left: false,
        cell: |r| (r.point.to_string(), None),
    },
    Column {
        header: "run",
        better: Better::Neither,
        left: false,
        cell: |r| ((r.repeat + 1).to_string(), None),
    },
    Column {
        header: "settings",
        better: Better::Neither,
        left: true,
        cell: |r| (r.label.clone(), None),
    },
    Column {
        header: "target msg/s",
        better: Better::Neither,
        left: false,
        cell: |r| (r.target(), None),
    },
    Column {
        header: "msg/s",
        better: Better::Higher,
        left: false,
        cell: |r| (format!("{:.0}", r.publish_msgs), Some(r.publish_msgs)),
    },
    Column {
        header: "MB/s",
        better: Better::Higher,
        left: false,
        cell: |r| (format!("{:.2}", r.publish_mb), Some(r.publish_mb)),
    },
    Column {
        header: "p50 ms",
        better: Better::Lower,
        left: false,
        cell: |r| (format!("{:.2}", r.publish_p50_ms), Some(r.publish_p50_ms)),
    },
    Column {
        header: "p99 ms",
        better: Better::Lower,
        left: false,
        cell: |r| (format!("{:.2}", r.publish_p99_ms), Some(r.publish_p99_ms)),
    },
    Column {
        header: "p99.9 ms",
        better: Better::Lower,
        left: false,
        cell: |r| {
            (
                format!("{:.2}", r.publish_p99_9_ms),
                Some(r.publish_p99_9_ms),
            )
        },
    },
    Column {
        header: "max ms",
        better: Better::Lower,
        left: false,
        cell: |r| (format!("{:.2}", r.publish_max_ms), Some(r.publish_max_ms)),
    },
    Column {
        header: "e2e p99 ms",
        better: Better::Lower,
        left: false,
        cell: |r| (opt(r.e2e_p99_ms, 2), r.e2e_p99_ms),
    },
    Column {
        header: "errors",
        better: Better::Lower,
        left: false,
        cell: |r| (r.errors.to_string(), Some(r.errors as f64)),
    },
    Column {
        header: "broker cores",
        better: Better::Lower,
        left: false,
        cell: |r| (opt(r.broker_cores, 2), r.broker_cores),
    },
    Column {
        header: "client cores",
        better: Better::Lower,
        left: false,
        cell: |r| (opt(r.client_cores, 2), r.client_cores),
    },
    Column {
        header: "sustained",
        better: Better::Neither,
        left: true,
        cell: |r| {
            let s = match r.sustained {
                Some(true) => "yes",
                Some(false) => "UNSUSTAINED",
                None => "n/a",
            };
            (s.to_string(), None)
        },
    },
];

/// The mark after a column's best value (every point sharing it); only
/// with two points or more, where there is something to compare.
pub const BEST_MARK: char = '*';

/// The table of every point: aligned columns, the best value of each
/// ranked column marked with [`BEST_MARK`] (and bold green in colour).
pub fn table(rows: &[Row], color: bool) -> String {
    // Per row, each column's text and whether it is the column's best.
    let mut cells: Vec<Vec<(String, bool)>> = rows.iter().map(|_| Vec::new()).collect();
    for c in COLUMNS {
        let ranked: Vec<(String, Option<f64>)> = rows.iter().map(c.cell).collect();
        let best = best_of(&ranked, c.better, rows.len());
        for (i, (text, v)) in ranked.into_iter().enumerate() {
            let is_best = best.is_some() && v == best;
            let text = if is_best {
                format!("{text}{BEST_MARK}")
            } else {
                text
            };
            cells[i].push((text, is_best));
        }
    }
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(j, c)| {
            cells
                .iter()
                .map(|row| row[j].0.chars().count())
                .chain([c.header.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |text: &str, j: usize| {
        let fill = " ".repeat(widths[j] - text.chars().count());
        if COLUMNS[j].left {
            format!("{text}{fill}")
        } else {
            format!("{fill}{text}")
        }
    };
    let mut out = String::new();
    let header: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(j, c)| pad(c.header, j))
        .collect();
    out.push_str(&paint(header.join("  ").trim_end(), DIM, color));
    out.push('\n');
    for (row, r) in cells.iter().zip(rows) {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(j, (text, best))| {
                let padded = pad(text, j);
                if *best {
                    paint(&padded, BOLD_GREEN, color)
                } else if COLUMNS[j].header == "sustained" && r.sustained == Some(false) {
                    paint(&padded, RED, color)
                } else {
                    padded
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The best value of a column, when there are two rows or more to rank.
fn best_of(cells: &[(String, Option<f64>)], better: Better, rows: usize) -> Option<f64> {
    if rows < 2 {
        return None;
    }
    let values = cells.iter().filter_map(|(_, v)| *v);
    match better {
        Better::Neither => None,
        Better::Higher => values.reduce(f64::max),
        Better::Lower => values.reduce(f64::min),
    }
}

/// What `run` prints at the end: the table, then where the results and
/// the report are.
pub fn finish(run: &RunJson, dir: &Path, color: bool) -> String {
    let rows: Vec<Row> = run.points.iter().map(Row::of).collect();
    let mut out = table(&rows, color);
    if run.interrupted {
        out.push_str("interrupted: the last point was cut short\n");
    }
    out.push_str(&format!("results: {}\n", dir.display()));
    out.push_str(&format!("report:  {}\n", dir.join("report.html").display()));
    out
}

/// The run summary `--json` prints: the run's identity, where its files
/// are, and every point's [`Row`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub workload: String,
    pub started_utc: String,
    pub target: String,
    pub broker_version: Option<String>,
    pub interrupted: bool,
    pub results: String,
    pub report: String,
    pub warnings: Vec<String>,
    pub points: Vec<Row>,
}

pub fn summary(run: &RunJson, dir: &Path) -> Summary {
    Summary {
        workload: run.workload_name.clone(),
        started_utc: run.started_utc.clone(),
        target: run.environment.target.clone(),
        broker_version: run.environment.broker_version.clone(),
        interrupted: run.interrupted,
        results: dir.display().to_string(),
        report: dir.join("report.html").display().to_string(),
        warnings: run.warnings.clone(),
        points: run.points.iter().map(Row::of).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(point: usize, msgs: f64, p99: f64, errors: u64) -> Row {
        Row {
            point,
            repeat: 0,
            label: format!("linger.ms={point}"),
            target_msgs: 1_000.0,
            max_rate_found: None,
            max_rate_confirmed: None,
            ramp: None,
            publish_msgs: msgs,
            publish_mb: msgs / 1e4,
            publish_p50_ms: p99 / 2.0,
            publish_p99_ms: p99,
            publish_p99_9_ms: p99 * 2.0,
            publish_max_ms: p99 * 3.0,
            e2e_p99_ms: None,
            errors,
            broker_cores: Some(0.5),
            client_cores: None,
            sustained: Some(errors == 0),
            unsustained_because: Vec::new(),
        }
    }

    #[test]
    fn the_best_of_each_ranked_column_is_marked() {
        let rows = [row(0, 990.0, 4.0, 0), row(1, 1_000.0, 9.5, 3)];
        let t = table(&rows, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // Throughput is best high, latency and errors best low.
        assert!(lines[2].contains("1000*"), "{t}");
        assert!(
            lines[1].contains("4.00*") && !lines[2].contains("9.50*"),
            "{t}"
        );
        assert!(lines[1].contains(" 0*") && lines[2].contains(" 3 "), "{t}");
        // A tie marks both; an unknown value ("-") is never best.
        assert!(
            lines[1].contains("0.50*") && lines[2].contains("0.50*"),
            "{t}"
        );
        assert!(!t.contains("-*"), "{t}");
        assert!(lines[2].trim_end().ends_with("UNSUSTAINED"), "{t}");
        assert!(!t.contains('\x1b'), "no colour asked for: {t:?}");
    }

    #[test]
    fn columns_line_up_and_colour_does_not_shift_them() {
        let rows = [row(0, 5.0, 1.0, 0), row(12, 123_456.0, 100.25, 0)];
        let plain = table(&rows, false);
        let widths: Vec<usize> = plain.lines().map(|l| l.chars().count()).collect();
        // Right-aligned numbers end where their header ends.
        let header = plain.lines().next().unwrap();
        let end = header.find("msg/s ").unwrap() + "msg/s".len();
        for l in plain.lines().skip(1) {
            assert!(
                l[..end].ends_with(|c: char| c.is_ascii_digit() || c == '*'),
                "{plain}"
            );
        }
        assert!(widths.iter().all(|w| *w <= widths[0] + 1), "{plain}");
        let coloured = table(&rows, true);
        assert!(coloured.contains(BOLD_GREEN), "{coloured:?}");
        let stripped = strip_ansi(&coloured);
        assert_eq!(stripped, plain);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(wants_color(true, None));
        assert!(wants_color(true, Some(OsStr::new(""))));
        assert!(!wants_color(true, Some(OsStr::new("1"))));
        assert!(!wants_color(false, None));
        assert_eq!(Terminal::detect(false, true).lines, Dest::Nowhere);
        assert_eq!(Terminal::detect(true, false).lines, Dest::Stderr);
        assert!(!Terminal::detect(true, true).color);
    }

    fn attempt(kind: ProbeKind, rate: f64, achieved: f64, sustained: bool) -> Probe {
        Probe {
            kind,
            rate,
            window_s: if kind == ProbeKind::Window { 20.0 } else { 5.0 },
            achieved,
            sustained,
            why_not: Vec::new(),
        }
    }

    #[test]
    fn a_max_rate_line_says_whether_a_window_confirmed_the_rate() {
        let mut search = vec![
            attempt(ProbeKind::Unpaced, 0.0, 650_000.0, false),
            attempt(ProbeKind::Search, 650_000.0, 400_000.0, false),
            attempt(ProbeKind::Search, 325_000.0, 325_000.0, true),
            attempt(ProbeKind::Window, 325_000.0, 280_000.0, false),
            attempt(ProbeKind::Window, 252_000.0, 252_000.0, true),
        ];
        let s = story(Some(252_000.0), Some(true), &search).unwrap();
        assert!(
            s.starts_with("max rate 252000 msg/s, sustained by the measured window after 1 step(s) down from the search's 325000"),
            "{s}"
        );
        assert!(
            s.contains("(5.0 s probes): unpaced 650000 msg/s, 650000 no, 325000 ok"),
            "{s}"
        );
        assert!(
            s.ends_with("window 325000 NOT sustained, delivered 280000 (20.0 s), window 252000 sustained (20.0 s)"),
            "{s}"
        );
        search[4].sustained = false;
        let s = story(None, Some(false), &search).unwrap();
        assert!(
            s.starts_with("NO MAX RATE CONFIRMED: none of the 2 measured windows"),
            "{s}"
        );
        assert!(story(None, None, &[]).is_none());
    }

    #[test]
    fn one_point_has_nothing_to_compare() {
        let t = table(&[row(0, 10.0, 1.0, 0)], false);
        assert!(!t.contains(BEST_MARK), "{t}");
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for d in chars.by_ref() {
                    if d == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
