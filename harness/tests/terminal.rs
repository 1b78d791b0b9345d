//! What `sluice-bench run` prints, checked against the `run.json` it
//! wrote: the table of points (every figure, and the best of each column
//! marked), the report's path, and the `--json` summary. Both runs are
//! short two-point sweeps against the embedded broker, through the
//! binary as a person or a script runs it. Nothing here depends on the
//! machine's speed: whatever was measured, the terminal must say the same
//! as the file.

use sluice_harness::report::files::{read_run_json, RunJson};
use sluice_harness::report::terminal::{Row, Summary, BEST_MARK};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const WORKLOAD: &str = "name: terminal\npartitionsPerTopic: 2\nmessageSize: 100\n\
subscriptionsPerTopic: 1\nconsumerAssignment: manual\ntestDurationSeconds: 1.5\n\
warmupDurationSeconds: 0.5\nproducer:\n  acks: 1\n  linger.ms: 1\nsweep:\n  producerRate: [200, 400]\n";

fn run(dir: &Path, extra: &[&str]) -> Output {
    let workload = dir.join("terminal.yaml");
    std::fs::write(&workload, WORKLOAD).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(dir.join("results"))
        .arg("--no-pin")
        .args(extra)
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sluice-bench run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The one run folder under `results/<workload>/`.
fn run_dir(dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("results").join("terminal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

fn f2(v: f64) -> String {
    format!("{v:.2}")
}

#[test]
fn the_table_says_what_run_json_says() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &[]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Not a terminal: no colour.
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    let dir = run_dir(tmp.path());
    let run = read_run_json(&dir).unwrap();
    assert_eq!(run.points.len(), 2);
    // The report's path comes last.
    let last = stdout.lines().last().unwrap();
    assert_eq!(
        last,
        format!("report:  {}", dir.join("report.html").display()),
        "{stdout}"
    );
    // A line per point as it finished, then the table.
    for p in &run.points {
        assert!(
            stdout.contains(&format!("point {} `{}`: target", p.index, p.label)),
            "{stdout}"
        );
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("settings") && l.contains("p99.9 ms"))
        .unwrap_or_else(|| panic!("no table header: {stdout}"));
    let rows: Vec<Vec<&str>> = lines[header + 1..header + 3]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    check_rows(&run, &rows, &stdout);
}

/// Cells: #, run, settings, target, msg/s, MB/s, p50, p99, p99.9, max,
/// e2e p99, errors, broker cores, client cores, sustained.
fn check_rows(run: &RunJson, rows: &[Vec<&str>], stdout: &str) {
    let expected: Vec<Row> = run.points.iter().map(Row::of).collect();
    for (cells, r) in rows.iter().zip(&expected) {
        assert_eq!(cells.len(), 15, "{cells:?}\n{stdout}");
        let bare: Vec<&str> = cells
            .iter()
            .map(|c| c.trim_end_matches(BEST_MARK))
            .collect();
        assert_eq!(bare[0], r.point.to_string(), "{stdout}");
        assert_eq!(bare[1], "1", "{stdout}");
        let bare = &bare[1..];
        assert_eq!(bare[1], r.label, "{stdout}");
        assert_eq!(bare[2], format!("{:.0}", r.target_msgs), "{stdout}");
        assert_eq!(bare[3], format!("{:.0}", r.publish_msgs), "{stdout}");
        assert_eq!(bare[4], f2(r.publish_mb), "{stdout}");
        assert_eq!(bare[5], f2(r.publish_p50_ms), "{stdout}");
        assert_eq!(bare[6], f2(r.publish_p99_ms), "{stdout}");
        assert_eq!(bare[7], f2(r.publish_p99_9_ms), "{stdout}");
        assert_eq!(bare[8], f2(r.publish_max_ms), "{stdout}");
        assert_eq!(
            bare[9],
            f2(r.e2e_p99_ms.expect("consumers ran")),
            "{stdout}"
        );
        assert_eq!(bare[10], r.errors.to_string(), "{stdout}");
        assert_eq!(
            bare[11],
            f2(r.broker_cores.expect("the embedded broker is watched"))
        );
        assert_eq!(
            bare[12],
            f2(r.client_cores.expect("the harness is watched"))
        );
        let sustained = match r.sustained {
            Some(true) => "yes",
            Some(false) => "UNSUSTAINED",
            None => "n/a",
        };
        assert_eq!(bare[13], sustained, "{stdout}");
    }
    // The best of each ranked column is marked, and only it.
    let marked = |row: usize, col: usize| rows[row][col].ends_with(BEST_MARK);
    let best = |values: Vec<f64>, high: bool| {
        let b = if high {
            values.iter().copied().fold(f64::MIN, f64::max)
        } else {
            values.iter().copied().fold(f64::MAX, f64::min)
        };
        values.iter().map(|v| *v == b).collect::<Vec<bool>>()
    };
    let column = |f: fn(&Row) -> f64| expected.iter().map(f).collect::<Vec<f64>>();
    for (col, high, values) in [
        (4, true, column(|r| r.publish_msgs)),
        (7, false, column(|r| r.publish_p99_ms)),
        (9, false, column(|r| r.publish_max_ms)),
        (11, false, column(|r| r.errors as f64)),
    ] {
        for (row, is_best) in best(values, high).into_iter().enumerate() {
            assert_eq!(marked(row, col), is_best, "row {row} col {col}\n{stdout}");
        }
    }
    // Unranked columns are never marked.
    assert!(
        (0..2).all(|row| (0..4).all(|col| !marked(row, col))),
        "{stdout}"
    );
}

#[test]
fn json_is_the_only_thing_on_stdout_and_matches_run_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["--json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: Summary = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not the JSON summary ({e}): {stdout}"));
    let dir = run_dir(tmp.path());
    let run = read_run_json(&dir).unwrap();
    assert_eq!(summary.results, dir.display().to_string());
    assert_eq!(
        summary.report,
        dir.join("report.html").display().to_string()
    );
    assert!(Path::new(&summary.report).is_file());
    assert_eq!(summary.workload, run.workload_name);
    assert_eq!(summary.started_utc, run.started_utc);
    let rows: Vec<Row> = run.points.iter().map(Row::of).collect();
    assert_eq!(summary.points, rows);
    // The embedded broker names itself.
    assert_eq!(
        summary.broker_version.as_deref(),
        Some(concat!("sluice ", env!("CARGO_PKG_VERSION")))
    );
    assert!(run.environment.broker_protocol.is_some());
    assert_eq!(
        run.environment.security,
        ["producer PLAINTEXT", "consumer PLAINTEXT"]
    );
    // The point lines went to stderr.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("point 1 `producerRate=400`"), "{stderr}");
}
