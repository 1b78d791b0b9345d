//! The HTML page of `compare`: the runs and their environments side by
//! side, a table of deltas against run A per point, and every point's
//! percentile curves of every run overlaid (colour per point, line style
//! per run: A solid, B dashed, C dotted, ...), read from the runs'
//! `.hgrm` files. One file, offline, interactive charts (`plot.rs`).

use super::charts::percentile_x;
use super::compare::{differing_settings, letter, stats, Delta, Matched, Run, METRICS};
use super::files::RunJson;
use super::hgrm::read_distribution;
use super::html::esc;
use super::plot::{self, Line, Plot, XAxis};
use std::fmt::Write;

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;font-size:13px;margin-bottom:1em}\
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}\
th{background:#eee}td.l,th.l{text-align:left}tr.diff td{background:#fff4d6}\
td.better{color:#1a7f37}td.worse{color:#c62828}small{color:#666}\
pre{font-size:12px;margin:0;text-align:left}";

/// The whole page.
pub fn render(runs: &[Run], matched: &[Matched]) -> String {
    let names: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} {}", letter(i), r.json().workload_name))
        .collect();
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sluice-bench compare: {}</title>\
<style>{STYLE}{}</style></head><body><h1>Comparison of {} runs</h1>",
        esc(&names.join(" · ")),
        plot::STYLE,
        runs.len()
    );
    runs_table(&mut h, runs);
    environment(&mut h, runs);
    h.push_str("<h2>Deltas</h2><p>Each run's mean over its repeats, the run-to-run spread (max − min) where a point was repeated, and the change against run A: <b>*</b> beyond the larger spread of the two, <b>?</b> neither run repeated the point so noise cannot be judged; green better, red worse.</p>");
    for m in matched {
        deltas(&mut h, runs.len(), m);
    }
    h.push_str("<h2>Latency by percentile</h2><p>Colour per point, line style per run. Hover for a curve's exact value; click a legend entry to hide or show its curve.</p>");
    let mut missing = Vec::new();
    for (id, title, kind) in [
        (
            "publish-by-percentile",
            "Publish latency by percentile",
            "publish",
        ),
        (
            "e2e-by-percentile",
            "End-to-end latency by percentile",
            "e2e",
        ),
    ] {
        let p = percentile_plot(matched, id, title, kind, &mut missing);
        h.push_str(&plot::render(&p));
    }
    if !missing.is_empty() {
        let _ = write!(
            h,
            "<p>Curves left out (file missing or unreadable): {}</p>",
            esc(&missing.join(", "))
        );
    }
    let _ = writeln!(h, "<script>{}</script></body></html>", plot::SCRIPT);
    h
}

/// Which run is which, and its line style in the charts.
fn runs_table(h: &mut String, runs: &[Run]) {
    h.push_str("<table><tr><th>run</th><th>line</th><th class=l>workload</th><th class=l>started (UTC)</th><th class=l>target</th><th class=l>folder</th></tr>");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><svg width=\"40\" height=\"10\"><line x1=\"0\" y1=\"5\" x2=\"40\" y2=\"5\" stroke=\"#333\" stroke-width=\"2\" stroke-dasharray=\"{}\"/></svg></td>\
<td class=l>{}</td><td class=l>{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
            letter(i),
            plot::dash(i),
            esc(&r.json().workload_name),
            esc(&started(r)),
            esc(&r.json().environment.target),
            esc(&r.dirs()),
        );
    }
    h.push_str("</table>");
}

fn started(r: &Run) -> String {
    r.parts
        .iter()
        .map(|p| p.json.started_utc.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What each run recorded of its environment, a column per run; rows
/// whose values differ are highlighted, then the workload settings that
/// differ and the workload files themselves.
fn environment(h: &mut String, runs: &[Run]) {
    type Field = (&'static str, fn(&RunJson) -> String);
    let fields: [Field; 13] = [
        ("workload", |r| r.workload_name.clone()),
        ("target", |r| r.environment.target.clone()),
        ("broker version", |r| {
            r.environment
                .broker_version
                .clone()
                .unwrap_or_else(|| "not recorded".into())
        }),
        ("broker settings", |r| {
            let c = &r.environment.broker_config;
            if c.is_empty() {
                "not recorded".into()
            } else {
                c.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }),
        ("harness version", |r| r.environment.harness_version.clone()),
        ("git commit", |r| {
            r.environment
                .git_commit
                .clone()
                .unwrap_or_else(|| "not recorded".into())
        }),
        ("CPU", |r| {
            r.environment
                .cpu_model
                .clone()
                .unwrap_or_else(|| "not recorded".into())
        }),
        ("cores", |r| r.environment.cores.to_string()),
        ("kernel", |r| {
            r.environment
                .kernel
                .clone()
                .unwrap_or_else(|| "not recorded".into())
        }),
        ("workload file", |r| r.workload_file.clone()),
        ("repeat", |r| r.repeat.to_string()),
        ("points", |r| r.points.len().to_string()),
        ("interrupted", |r| r.interrupted.to_string()),
    ];
    h.push_str("<h2>Environment</h2><table><tr><th class=l></th>");
    for i in 0..runs.len() {
        let _ = write!(h, "<th class=l>{}</th>", letter(i));
    }
    h.push_str("</tr>");
    for (name, get) in &fields {
        // A pooled side shows each distinct value of its folders.
        let vals: Vec<String> = runs
            .iter()
            .map(|r| {
                let mut seen = Vec::new();
                for part in &r.parts {
                    let v = get(&part.json);
                    if !seen.contains(&v) {
                        seen.push(v);
                    }
                }
                seen.join("\n")
            })
            .collect();
        row(h, name, &vals);
    }
    let jsons: Vec<_> = runs.iter().map(Run::json).collect();
    let differ = differing_settings(&jsons);
    if differ.is_empty() {
        let _ = write!(
            h,
            "<tr><th class=l>workload settings</th><td class=l colspan={}>the same in every run</td></tr>",
            runs.len()
        );
    }
    for (k, vals) in &differ {
        row(h, &format!("setting {k}"), vals);
    }
    h.push_str("<tr><th class=l>workload file as run</th>");
    for r in runs {
        let _ = write!(
            h,
            "<td class=l><details><summary>show</summary><pre>{}</pre></details></td>",
            esc(&r.json().workload_yaml)
        );
    }
    h.push_str("</tr></table>");
}

fn row(h: &mut String, name: &str, vals: &[String]) {
    let differ = vals.iter().any(|v| *v != vals[0]);
    let _ = write!(
        h,
        "<tr{}><th class=l>{}</th>",
        if differ { " class=diff" } else { "" },
        esc(name)
    );
    for v in vals {
        let _ = write!(h, "<td class=l><pre>{}</pre></td>", esc(v));
    }
    h.push_str("</tr>");
}

/// One point's table: a row per metric, per run its mean (and spread)
/// and, after A, its delta against A.
fn deltas(h: &mut String, n_runs: usize, m: &Matched) {
    let counts: Vec<String> = (0..n_runs)
        .map(|r| format!("{} {}", letter(r), m.runs[r].len()))
        .collect();
    let _ = write!(
        h,
        "<h3>{}</h3><p><small>runs per side: {}</small></p><table><tr><th class=l>metric</th><th>A</th>",
        esc(&m.label),
        esc(&counts.join(", "))
    );
    for r in 1..n_runs {
        let _ = write!(h, "<th>{0}</th><th>Δ{0}</th>", letter(r));
    }
    h.push_str("</tr>");
    for metric in METRICS {
        let cells: Vec<_> = m.runs.iter().map(|ps| stats(ps, metric.get)).collect();
        if cells.iter().flatten().all(|(mean, _)| mean.is_nan()) {
            continue;
        }
        let _ = write!(h, "<tr><td class=l>{}</td>", esc(metric.name));
        for (r, c) in cells.iter().enumerate() {
            let value = match c {
                None => "not run".to_string(),
                Some((mean, None)) => figure(*mean),
                Some((mean, Some(spread))) => format!(
                    "{}<br><small>spread {}</small>",
                    figure(*mean),
                    figure(*spread)
                ),
            };
            let _ = write!(h, "<td>{value}</td>");
            if r == 0 {
                continue;
            }
            match (cells[0], *c) {
                (Some(a), Some(b)) => {
                    let d = Delta::of(metric, a, b);
                    let class = match (d.significant, d.better) {
                        (Some(true), Some(true)) => " class=better",
                        (Some(true), Some(false)) => " class=worse",
                        _ => "",
                    };
                    let _ = write!(h, "<td{class}>{:+.1}% {}</td>", d.pct, esc(&d.marks()));
                }
                _ => h.push_str("<td>n/a</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
}

fn figure(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        plot::value_text(v, "")
    }
}

/// Curves of `kind` (`publish`, `e2e`) for every point, run and repeat:
/// colour from the point, line style from the run.
fn percentile_plot(
    matched: &[Matched],
    id: &str,
    title: &str,
    kind: &str,
    missing: &mut Vec<String>,
) -> Plot {
    let mut series = Vec::new();
    for (colour, m) in matched.iter().enumerate() {
        for (r, ps) in m.runs.iter().enumerate() {
            for (k, pt) in ps.iter().enumerate() {
                let file = pt
                    .dir
                    .join(format!("point-{}-r{}.{kind}.hgrm", pt.p.index, pt.p.repeat));
                match curve(&file) {
                    Some(points) => series.push(Line {
                        name: series_name(r, &m.label, k, ps.len()),
                        colour,
                        dash: r,
                        points,
                    }),
                    None => missing.push(file.display().to_string()),
                }
            }
        }
    }
    Plot {
        id: id.into(),
        title: title.into(),
        x_label: "percentile".into(),
        y_label: "latency (ms)".into(),
        x_axis: XAxis::Percentile,
        y_unit: "ms".into(),
        markers: false,
        series,
    }
}

/// `B · acks=all`, or `B · acks=all (run 2)` for the second of a point's
/// repeats on that side; the point's label is the one of the side that
/// has it first, so a point reads the same on every side.
fn series_name(run: usize, label: &str, k: usize, repeats: usize) -> String {
    if repeats > 1 {
        format!("{} · {label} (run {})", letter(run), k + 1)
    } else {
        format!("{} · {label}", letter(run))
    }
}

/// A `.hgrm` file as (x on the percentile axis, ms) points; None when it
/// is missing, unreadable or empty.
fn curve(path: &std::path::Path) -> Option<Vec<(f64, f64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    let rows = read_distribution(&text)?;
    if rows.is_empty() {
        return None;
    }
    Some(
        rows.into_iter()
            .map(|(q, ms)| (percentile_x(q), ms))
            .collect(),
    )
}
