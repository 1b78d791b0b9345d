//! Load from many machines, on one: `sluice-bench run --worker I/N` processes,
//! each in a network namespace of its own (a veth pair to the root
//! namespace, where one Sluice broker listens), and `sluice-bench merge`.
//!
//! N workers at R/N msg/s each must merge to what one process at R msg/s
//! measures: the same message counts (deterministic for a fixed rate and
//! duration, up to one message per generator at each edge of the window)
//! and the same total rate; and a worker that is killed must be reported
//! by the merged run, not silently left out. Without the rights to make
//! network namespaces (not root, no `ip`), the workers run as plain
//! processes on loopback and the test says so.

use sluice_harness::report::files::{read_run_json, RunJson};
use sluice_harness::run::worker::{format_utc, now_unix_us};
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-bench");
const WORKERS: usize = 2;
const RATE: u32 = 400;
/// How far ahead the workers' agreed start is: time to start, connect,
/// create topics and start consumers on a busy machine. Only readiness
/// depends on it; nothing measured does.
const START_AHEAD: Duration = Duration::from_secs(45);
/// Generous bound on any process of the test.
const DEADLINE: Duration = Duration::from_secs(300);

const WORKLOAD: &str = "name: split\ntopics: 1\npartitionsPerTopic: 4\nproducersPerTopic: 2\n\
subscriptionsPerTopic: 1\nconsumerPerSubscription: 2\nconsumerAssignment: manual\n\
messageSize: 100\nproducerRate: 400\ntestDurationSeconds: 4\nwarmupDurationSeconds: 1\n\
producer:\n  acks: all\n  linger.ms: 1\n";

/// Network namespaces `<prefix>-<i>`, each with a veth pair whose root end
/// is 10.<net>.<i>.1 and namespace end 10.<net>.<i>.2. Deleted on drop,
/// also when the test fails.
struct Namespaces {
    names: Vec<String>,
    links: Vec<String>,
    net: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespaces {
    fn create(n: usize) -> Result<Namespaces, String> {
        let pid = std::process::id();
        // Names and a subnet of this test process's own.
        let prefix = format!("sbw{}", pid % 100_000);
        let mut ns = Namespaces {
            names: Vec::new(),
            links: Vec::new(),
            net: (pid % 200 + 20) as u8,
        };
        for i in 1..=n {
            let name = format!("{prefix}-{i}");
            let (root, peer) = (format!("{prefix}r{i}"), format!("{prefix}n{i}"));
            ip(&["netns", "add", &name])?;
            ns.names.push(name.clone());
            ip(&["link", "add", &root, "type", "veth", "peer", "name", &peer])?;
            ns.links.push(root.clone());
            ip(&["link", "set", &peer, "netns", &name])?;
            let (here, there) = (ns.addr(i, 1), ns.addr(i, 2));
            ip(&["addr", "add", &format!("{here}/24"), "dev", &root])?;
            ip(&["link", "set", &root, "up"])?;
            let inside = |args: &[&str]| {
                let mut a = vec!["netns", "exec", &name, "ip"];
                a.extend_from_slice(args);
                ip(&a)
            };
            inside(&["addr", "add", &format!("{there}/24"), "dev", &peer])?;
            inside(&["link", "set", &peer, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
            inside(&["route", "add", "default", "via", &here.to_string()])?;
        }
        Ok(ns)
    }

    fn addr(&self, i: usize, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, i as u8, host)
    }

    /// `program` run inside namespace `i` (1-based).
    fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.names[i - 1], program]);
        c
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for l in &self.links {
            let _ = ip(&["link", "del", l]);
        }
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Where the workers run: namespaces, or plain processes when the machine
/// does not allow them.
enum Net {
    Namespaces(Namespaces),
    Loopback,
}

impl Net {
    fn command(&self, worker: usize) -> Command {
        match self {
            Net::Namespaces(ns) => ns.command(worker, BIN),
            Net::Loopback => Command::new(BIN),
        }
    }

    /// The broker's listening address: the root end of the first veth,
    /// which every namespace reaches through its own.
    fn broker_ip(&self) -> Ipv4Addr {
        match self {
            Net::Namespaces(ns) => ns.addr(1, 1),
            Net::Loopback => Ipv4Addr::LOCALHOST,
        }
    }
}

/// Children killed when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child with a deadline; its output either way.
fn finish(mut c: Child, what: &str) -> Output {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > DEADLINE {
            let _ = c.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn start_broker(ip: Ipv4Addr, data: &Path) -> (Child, SocketAddr) {
    let port = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((ip, port));
    let child = Command::new(BIN)
        .args(["broker", "--listen", &addr.to_string(), "--cores", "1"])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        assert!(
            t0.elapsed() < DEADLINE,
            "the broker never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

fn worker(
    net: &Net,
    i: usize,
    n: usize,
    at: &str,
    w: &Path,
    addr: SocketAddr,
    out: &Path,
) -> Child {
    let mut c = net.command(i);
    c.arg("run")
        .arg(w)
        .args([
            "--bootstrap",
            &addr.to_string(),
            "--threads",
            "1",
            "--no-pin",
        ])
        .args(["--worker", &format!("{i}/{n}"), "--start-at", at])
        .arg("--out")
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn worker_dir(out: &Path, i: usize, n: usize) -> PathBuf {
    let suffix = format!("-worker-{i}-of-{n}");
    std::fs::read_dir(out.join("split"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&suffix))
        .unwrap_or_else(|| panic!("no folder of worker {i} under {}", out.display()))
}

fn merge(dirs: &[PathBuf], out: &Path) -> Output {
    Command::new(BIN)
        .arg("merge")
        .args(dirs)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn merged(dirs: &[PathBuf], out: &Path) -> RunJson {
    let o = merge(dirs, out);
    assert!(
        o.status.success(),
        "merge failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    read_run_json(out).unwrap()
}

fn refused(dirs: &[PathBuf], out: &Path, why: &str) {
    let o = merge(dirs, out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "merge accepted {dirs:?}");
    assert!(err.contains(why), "expected `{why}` in: {err}");
}

fn near(a: u64, b: u64, slack: u64, what: &str) {
    assert!(a.abs_diff(b) <= slack, "{what}: {a} against {b}");
}

#[test]
fn workers_in_namespaces_add_up_to_one_process_and_a_killed_worker_is_reported() {
    let net = match Namespaces::create(WORKERS) {
        Ok(ns) => {
            eprintln!("workers in network namespaces {:?}", ns.names);
            Net::Namespaces(ns)
        }
        Err(e) => {
            eprintln!(
                "network namespaces unavailable ({e}); the workers run as plain processes on loopback"
            );
            Net::Loopback
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("split.yaml");
    std::fs::write(&w, WORKLOAD).unwrap();
    let data = tmp.path().join("broker");
    std::fs::create_dir_all(&data).unwrap();
    let (broker, addr) = start_broker(net.broker_ip(), &data);
    let _procs = Procs(vec![broker]);

    // One process at the whole rate.
    let single_out = tmp.path().join("single");
    let mut c = net.command(1);
    c.arg("run")
        .arg(&w)
        .args([
            "--bootstrap",
            &addr.to_string(),
            "--threads",
            "1",
            "--no-pin",
        ])
        .arg("--out")
        .arg(&single_out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(c.spawn().unwrap(), "the single process");
    let single_dir = std::fs::read_dir(single_out.join("split"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let single = read_run_json(&single_dir).unwrap();

    // Two workers at half the rate each, and beside them a second run of
    // two whose worker 2 is killed once it has said who it is.
    let at = format_utc(now_unix_us() + START_AHEAD.as_micros() as i64);
    let at_killed = format_utc(now_unix_us() + (START_AHEAD.as_micros() + 1_000_000) as i64);
    let (out, out_killed) = (tmp.path().join("workers"), tmp.path().join("killed"));
    let workers: Vec<Child> = (1..=WORKERS)
        .map(|i| worker(&net, i, WORKERS, &at, &w, addr, &out))
        .collect();
    let survivor = worker(&net, 1, 2, &at_killed, &w, addr, &out_killed);
    let mut victim = worker(&net, 2, 2, &at_killed, &w, addr, &out_killed);
    let t0 = Instant::now();
    while !worker_dir_opt(&out_killed, 2).is_some_and(|d| d.join("worker.json").is_file()) {
        assert!(t0.elapsed() < DEADLINE, "worker 2 never wrote worker.json");
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    for (i, c) in workers.into_iter().enumerate() {
        finish(c, &format!("worker {}", i + 1));
    }
    finish(survivor, "the killed run's worker 1");

    let dirs: Vec<PathBuf> = (1..=WORKERS)
        .map(|i| worker_dir(&out, i, WORKERS))
        .collect();
    let each: Vec<RunJson> = dirs.iter().map(|d| read_run_json(d).unwrap()).collect();
    for (i, r) in each.iter().enumerate() {
        let info = r.worker.as_ref().expect("a worker's run.json says so");
        assert_eq!((info.index, info.count), (i as u32 + 1, WORKERS as u32));
        assert_eq!(r.points[0].target_rate, f64::from(RATE) / WORKERS as f64);
    }
    let all = merged(&dirs, &tmp.path().join("merged"));
    let m = all
        .merged_from
        .as_ref()
        .expect("a merged run says what it adds");
    assert!(m.complete, "{m:?}");
    assert!(m.workers.iter().all(|w| w.status == "merged"), "{m:?}");
    let (a, s) = (&all.points[0], &single.points[0]);
    eprintln!(
        "one process: sent {}, window {}, received {}, {:.1} msg/s; merged: sent {}, window {}, received {}, {:.1} msg/s",
        s.sent,
        s.publish_latency.count,
        s.end_to_end.count,
        s.publish_rate_msgs,
        a.sent,
        a.publish_latency.count,
        a.end_to_end.count,
        a.publish_rate_msgs
    );
    assert_eq!(a.target_rate, f64::from(RATE));
    // One message per generator at each edge of the window.
    let slack = 2 * WORKERS as u64 + 2;
    near(a.sent, s.sent, slack, "messages sent");
    near(
        a.publish_latency.count,
        s.publish_latency.count,
        slack,
        "window's messages",
    );
    near(
        a.end_to_end.count,
        s.end_to_end.count,
        slack,
        "messages received",
    );
    // The histograms add exactly: the merged counts are the workers' sums.
    let sum = |f: fn(&RunJson) -> u64| each.iter().map(f).sum::<u64>();
    assert_eq!(
        a.publish_latency.count,
        sum(|r| r.points[0].publish_latency.count)
    );
    assert_eq!(
        a.end_to_end.count,
        sum(|r| r.points[0].end_to_end.count) + a.unconsumed
    );
    assert_eq!(a.errors, 0, "{:?}", a.error_samples);
    assert_eq!((a.unsent, a.unconsumed), (0, 0), "{a:?}");
    // Rates add up to the one process's (within the run's spread).
    assert!(
        (a.publish_rate_msgs - s.publish_rate_msgs).abs() <= 0.25 * s.publish_rate_msgs,
        "{} msg/s merged against {} msg/s",
        a.publish_rate_msgs,
        s.publish_rate_msgs
    );
    let consumed: f64 = each.iter().map(|r| r.points[0].consume_rate_msgs).sum();
    assert_eq!(a.consume_rate_msgs, consumed);
    let per_second: u64 = a.intervals.iter().map(|r| r.publish_msgs).sum();
    assert_eq!(
        per_second,
        sum(|r| r.points[0].intervals.iter().map(|i| i.publish_msgs).sum())
    );
    let report = std::fs::read_to_string(tmp.path().join("merged/report.html")).unwrap();
    assert!(report.contains("all 2 workers' results added"), "{report}");
    assert!(tmp.path().join("merged/point-0-r0.hlog").is_file());

    // The killed worker is reported, in run.json and the report.
    let k1 = worker_dir(&out_killed, 1, 2);
    let k2 = worker_dir(&out_killed, 2, 2);
    let part = merged(&[k1.clone(), k2.clone()], &tmp.path().join("merged-killed"));
    let m = part.merged_from.as_ref().unwrap();
    assert!(!m.complete);
    assert_eq!(m.workers[1].status, "unfinished", "{m:?}");
    assert_eq!(part.points[0].target_rate, f64::from(RATE) / 2.0);
    let report = std::fs::read_to_string(tmp.path().join("merged-killed/report.html")).unwrap();
    assert!(
        report.contains("INCOMPLETE: worker 2 unfinished"),
        "{report}"
    );
    // A worker whose folder is not given is missing.
    let alone = merged(std::slice::from_ref(&k1), &tmp.path().join("merged-alone"));
    assert_eq!(alone.merged_from.unwrap().workers[1].status, "missing");

    // A worker whose run ended in an error is reported with the error.
    let failed = tmp.path().join("failed-worker");
    copy_dir(&dirs[1], &failed);
    let info = std::fs::read_to_string(failed.join("worker.json")).unwrap();
    let info = info.replace("\"error\": null", "\"error\": \"point `base`: broken\"");
    std::fs::write(failed.join("worker.json"), info).unwrap();
    let part = merged(
        &[dirs[0].clone(), failed],
        &tmp.path().join("merged-failed"),
    );
    let m = part.merged_from.unwrap();
    assert_eq!(m.workers[1].status, "failed", "{m:?}");
    assert_eq!(m.workers[1].detail.as_deref(), Some("point `base`: broken"));

    // Folders of different runs, or one worker twice, are refused.
    let bad = tmp.path().join("bad");
    refused(&[dirs[0].clone(), k2.clone()], &bad, "share --start-at");
    refused(
        &[dirs[0].clone(), dirs[0].clone()],
        &bad,
        "are both worker 1 of 2",
    );
    let other = tmp.path().join("other-workload");
    copy_dir(&dirs[1], &other);
    let info = std::fs::read_to_string(other.join("worker.json")).unwrap();
    let sha = &each[1].worker.as_ref().unwrap().workload_sha256;
    std::fs::write(
        other.join("worker.json"),
        info.replace(sha.as_str(), &"0".repeat(64)),
    )
    .unwrap();
    refused(&[dirs[0].clone(), other], &bad, "ran different workloads");
}

fn worker_dir_opt(out: &Path, i: usize) -> Option<PathBuf> {
    let suffix = format!("-worker-{i}-of-2");
    std::fs::read_dir(out.join("split"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&suffix))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `--worker` and `--start-at` that cannot be right are refused before
/// anything runs.
#[test]
fn impossible_workers_and_past_starts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path().join("split.yaml");
    std::fs::write(&w, WORKLOAD).unwrap();
    let soon = format_utc(now_unix_us() + 3_600_000_000);
    let run = |worker: &str, at: &str, extra: &[&str]| {
        let o = Command::new(BIN)
            .arg("run")
            .arg(&w)
            .args(["--worker", worker, "--start-at", at])
            .args(extra)
            .arg("--out")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!o.status.success(), "--worker {worker} --start-at {at} ran");
        let mut err = String::new();
        (&o.stderr[..]).read_to_string(&mut err).unwrap();
        err
    };
    let b = ["--bootstrap", "127.0.0.1:9"];
    assert!(run("3/2", &soon, &b).contains("no worker 3 of 2"));
    assert!(run("0/2", &soon, &b).contains("count from 1"));
    assert!(run("1/2", "2020-01-01T00:00:00Z", &b).contains("in the past"));
    assert!(run("1/2", "tomorrow", &b).contains("expected a UTC time"));
    assert!(run("1/2", &soon, &[]).contains("--bootstrap"));
    let max = tmp.path().join("max.yaml");
    std::fs::write(
        &max,
        WORKLOAD.replace("producerRate: 400", "producerRate: 0"),
    )
    .unwrap();
    let o = Command::new(BIN)
        .arg("run")
        .arg(&max)
        .args(["--worker", "1/2", "--start-at", &soon])
        .args(b)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("max-rate search"));
}
