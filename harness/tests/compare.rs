//! `sluice-bench compare` of three real runs against the embedded broker
//! (A once per point, B with two repeats, C sweeping the same setting by
//! its bare name): the text names every run, and the HTML page loads in a
//! headless Chromium without console errors or network requests, holds a
//! curve of every run for every point, shows a curve's exact value on
//! hover, and hides a curve when its legend entry is clicked
//! (`tests/python/report_browser.py`, Playwright driving Debian's
//! Chromium). The run report's charts are checked the same way. Runs with
//! no point in common are refused with the settings that differ.

use serde_json::Value;
use sluice_harness::report::files::{read_run_json, write_run_json};
use sluice_harness::run::sweep::{run_workload, RunOptions};
use sluice_harness::workload::parse;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BASE: &str = "partitionsPerTopic: 1\nmessageSize: 100\nproducerRate: 300\n\
testDurationSeconds: 1\nwarmupDurationSeconds: 0.2\nconsumerAssignment: manual\n";

fn run(out: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!("name: {name}\n{BASE}{extra}");
    let f = parse(Path::new("compare.yaml"), &text, None).unwrap();
    let opts = RunOptions::quiet(out.to_path_buf(), None);
    run_workload(&f, &opts).unwrap()
}

fn bench(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("compare")
        .args(args)
        .output()
        .expect("running sluice-bench")
}

/// Loads `page` in Chromium and checks its charts; returns what the
/// script saw (figure ids and their series names).
fn browse(page: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/report_browser.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(page)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{} failed on {}:\nstdout:\n{}\nstderr:\n{}",
        script.display(),
        page.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

fn series(seen: &Value, figure: &str) -> Vec<String> {
    let fig = seen["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == figure)
        .unwrap_or_else(|| panic!("no figure {figure} in {seen}"));
    fig["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn compare_of_three_runs_writes_a_page_chromium_reads_and_hovers() {
    sluice_harness::target::set_broker_program(Path::new(env!("CARGO_BIN_EXE_sluice-bench")));
    let tmp = tempfile::tempdir().unwrap();
    let a = run(
        &tmp.path().join("a"),
        "cmp",
        "sweep:\n  producer.acks: [1, all]\n",
    );
    let b = run(
        &tmp.path().join("b"),
        "cmp",
        "repeat: 2\nsweep:\n  producer.acks: [1, all]\n",
    );
    let c = run(&tmp.path().join("c"), "cmp", "sweep:\n  acks: [1, all]\n");
    let html = tmp.path().join("compare.html");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-bench"))
        .arg("compare")
        .args([&a, &b, &c])
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "[producer.acks=1]  (A 1 run(s), B 2 run(s), C 1 run(s))",
        "[producer.acks=all]",
        "ΔB",
        "ΔC",
        "repeat  (A: not set; B: 2; C: not set)",
    ] {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
    // Only matched points: C's `acks=1` is A's `producer.acks=1`.
    assert!(!text.contains("[acks=1]"), "{text}");
    assert!(
        text.contains(&format!("report: {}", html.display())),
        "{text}"
    );

    let seen = browse(&html);
    for fig in ["publish-by-percentile", "e2e-by-percentile"] {
        let names = series(&seen, fig);
        let mut want = Vec::new();
        for label in ["producer.acks=1", "producer.acks=all"] {
            want.push(format!("A · {label}"));
            want.push(format!("B · {label} (run 1)"));
            want.push(format!("B · {label} (run 2)"));
            want.push(format!("C · {label}"));
        }
        let mut got = names.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{fig}");
    }

    // The run report's charts: a series per point, hover and legend work.
    let seen = browse(&b.join("report.html"));
    let names = series(&seen, "latency-distribution");
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.contains(&"producer.acks=all (run 2)".to_string()));
    for fig in ["throughput-vs-p99", "rate-over-time", "p99-over-time"] {
        assert_eq!(series(&seen, fig).len(), 4, "{fig}");
    }
    // The chart files for documents are still written.
    for f in ["latency-distribution.svg", "latency-distribution.png"] {
        assert!(b.join(f).is_file(), "{f} missing");
    }

    // Folders of one configuration pool as one side: A and C sweep the
    // same setting, so each point has two runs on side A, and their spread.
    let pooled = format!("{},{}", a.display(), c.display());
    let out = bench(&[Path::new(&pooled), &b, Path::new("--html"), &html]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("[producer.acks=1]  (A 2 run(s), B 2 run(s))"),
        "{text}"
    );
    let seen = browse(&html);
    assert!(
        series(&seen, "publish-by-percentile")
            .contains(&"A · producer.acks=all (run 2)".to_string()),
        "{seen}"
    );
    // Folders of different configurations do not pool.
    let mixed = format!("{},{}", a.display(), b.display());
    let out = bench(&[Path::new(&mixed), &c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("are pooled as repeats but are not runs of one configuration: they differ in repeat (not set against 2)"),
        "{err}"
    );

    // A run sharing no point with A is refused, naming what differs.
    let mut other = read_run_json(&c).unwrap();
    other.workload_yaml = format!("name: cmp\n{BASE}sweep:\n  linger.ms: [7]\n");
    other.points.truncate(1);
    other.points[0].settings = vec![("linger.ms".into(), "7".into())];
    other.points[0].label = "linger.ms=7".into();
    let z = tmp.path().join("z");
    std::fs::create_dir(&z).unwrap();
    write_run_json(&z, &other).unwrap();
    let out = bench(&[&a, &z]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "no point in common between run A",
        "`producer.acks=1`, `producer.acks=all`",
        "`linger.ms=7`",
        "producer.acks (A: 1, all; B: not set)",
        "producer.linger.ms (A: not set; B: 7)",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
}
