//! What a run cost: user and system CPU seconds of the harness process
//! (split by thread: load generators, consumers, the rest) and of each
//! broker process on this host, read from `/proc` at the edges of every
//! phase of a load, and each process's peak resident memory.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A process to account for: a name for reports and its pid.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// A broker (its CPU is the broker's cost) or the harness itself.
    pub broker: bool,
}

/// CPU seconds used, user and system.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub user_s: f64,
    pub system_s: f64,
}

impl Cpu {
    pub fn total(&self) -> f64 {
        self.user_s + self.system_s
    }

    fn minus(&self, earlier: &Cpu) -> Cpu {
        Cpu {
            user_s: (self.user_s - earlier.user_s).max(0.0),
            system_s: (self.system_s - earlier.system_s).max(0.0),
        }
    }

    fn plus(&self, other: &Cpu) -> Cpu {
        Cpu {
            user_s: self.user_s + other.user_s,
            system_s: self.system_s + other.system_s,
        }
    }
}

/// The harness's threads, grouped by what they do.
pub const THREAD_GROUPS: [&str; 3] = ["load generators", "consumers", "other"];

fn thread_group(name: &str) -> &'static str {
    if name.starts_with("load-gen") {
        THREAD_GROUPS[0]
    } else if name.starts_with("consumer") {
        THREAD_GROUPS[1]
    } else {
        THREAD_GROUPS[2]
    }
}

/// Final CPU of harness threads that have ended: (thread id, group, CPU).
/// A generator ends as soon as its flush is done, often in the 50 ms
/// before the window's closing snapshot; without its final reading its
/// group's CPU fell between two snapshots and read as zero.
static ENDED: Mutex<Vec<(u32, &'static str, Cpu)>> = Mutex::new(Vec::new());

/// Called by a generator or consumer thread as its last act: its CPU so
/// far stays counted in its group after `/proc` forgets the thread.
pub fn thread_ending() {
    let Ok(s) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return;
    };
    let Some((name, cpu)) = parse_stat(&s, ticks_per_second()) else {
        return;
    };
    let Some(tid) = s.split_whitespace().next().and_then(|t| t.parse().ok()) else {
        return;
    };
    let mut ended = ENDED.lock().unwrap_or_else(|e| e.into_inner());
    ended.push((tid, thread_group(&name), cpu));
}

/// Every watched process's CPU so far, the harness's by thread group (a
/// thread that ended counts with its final reading, see [`thread_ending`];
/// other threads that ended count in their process only), and peak RSS.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub processes: Vec<(Cpu, Option<u64>)>,
    pub harness_threads: BTreeMap<&'static str, Cpu>,
}

/// Reads `/proc` for every watched process. A process that is gone reads
/// as zero.
pub fn snapshot(watched: &[Watched]) -> Snapshot {
    let tick = ticks_per_second();
    let processes = watched
        .iter()
        .map(|w| {
            let cpu = std::fs::read_to_string(format!("/proc/{}/stat", w.pid))
                .ok()
                .and_then(|s| parse_stat(&s, tick))
                .map_or_else(Cpu::default, |(_, cpu)| cpu);
            (cpu, peak_rss(w.pid))
        })
        .collect();
    let mut harness_threads = BTreeMap::new();
    for g in THREAD_GROUPS {
        harness_threads.insert(g, Cpu::default());
    }
    let mut alive = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let Ok(s) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            if let Some((name, cpu)) = parse_stat(&s, tick) {
                let slot = harness_threads.entry(thread_group(&name)).or_default();
                *slot = slot.plus(&cpu);
                alive.extend(t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
            }
        }
    }
    let ended = ENDED.lock().unwrap_or_else(|e| e.into_inner());
    // A thread still listed was counted above, with its latest reading.
    for (_, group, cpu) in ended.iter().filter(|(tid, ..)| !alive.contains(tid)) {
        let slot = harness_threads.entry(group).or_default();
        *slot = slot.plus(cpu);
    }
    Snapshot {
        processes,
        harness_threads,
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (comm, user + system) of a `/proc/.../stat` line. The name sits in
/// parentheses and may hold spaces; fields 14 and 15 follow it.
fn parse_stat(s: &str, tick: f64) -> Option<(String, Cpu)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let name = s[open + 1..close].to_string();
    let rest: Vec<&str> = s[close + 1..].split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime 15.
    let user: f64 = rest.get(11)?.parse().ok()?;
    let system: f64 = rest.get(12)?.parse().ok()?;
    Some((
        name,
        Cpu {
            user_s: user / tick,
            system_s: system / tick,
        },
    ))
}

/// Peak resident set (VmHWM) in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One process's CPU in each phase of a load, and its peak RSS by the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessCpu {
    pub name: String,
    pub broker: bool,
    pub warmup: Cpu,
    pub measure: Cpu,
    pub drain: Cpu,
    pub peak_rss_mib: Option<f64>,
}

/// What a point's load cost, per process and phase; the per-byte and
/// per-message figures are of the measured window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    pub processes: Vec<ProcessCpu>,
    /// The harness's threads in the measured window.
    pub harness_threads: BTreeMap<String, Cpu>,
    /// The load's client side: the harness process, or with the broker in
    /// the same process its generator and consumer threads.
    pub client_cpu_s: f64,
    /// Every broker process (absent when none is watched).
    pub broker_cpu_s: Option<f64>,
    pub client_cpu_s_per_gb: Option<f64>,
    pub client_cpu_s_per_million_msgs: Option<f64>,
    pub broker_cpu_s_per_gb: Option<f64>,
    pub broker_cpu_s_per_million_msgs: Option<f64>,
}

/// Snapshots at the load's start, the warm-up's end, the window's end and
/// after the drain, turned into per-phase figures. `bytes` and `msgs` are
/// what the window published; `in_process_broker` says the broker runs
/// inside the harness process.
pub fn account(
    watched: &[Watched],
    s: [&Snapshot; 4],
    bytes: u64,
    msgs: u64,
    in_process_broker: bool,
) -> CpuUse {
    let processes: Vec<ProcessCpu> = watched
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let at = |k: usize| s[k].processes.get(i).map(|p| p.0).unwrap_or_default();
            ProcessCpu {
                name: w.name.clone(),
                broker: w.broker,
                warmup: at(1).minus(&at(0)),
                measure: at(2).minus(&at(1)),
                drain: at(3).minus(&at(2)),
                peak_rss_mib: s[3]
                    .processes
                    .get(i)
                    .and_then(|p| p.1)
                    .map(|b| b as f64 / 1_048_576.0),
            }
        })
        .collect();
    let harness_threads: BTreeMap<String, Cpu> = THREAD_GROUPS
        .iter()
        .map(|g| {
            let get = |k: usize| s[k].harness_threads.get(g).copied().unwrap_or_default();
            (g.to_string(), get(2).minus(&get(1)))
        })
        .collect();
    let client_cpu_s = if in_process_broker {
        harness_threads[THREAD_GROUPS[0]].total() + harness_threads[THREAD_GROUPS[1]].total()
    } else {
        processes
            .iter()
            .filter(|p| !p.broker)
            .map(|p| p.measure.total())
            .sum()
    };
    let brokers: Vec<&ProcessCpu> = processes.iter().filter(|p| p.broker).collect();
    let broker_cpu_s = if in_process_broker {
        Some(harness_threads[THREAD_GROUPS[2]].total())
    } else {
        (!brokers.is_empty()).then(|| brokers.iter().map(|p| p.measure.total()).sum())
    };
    let per = |cpu: f64, amount: u64, unit: f64| (amount > 0).then(|| cpu / (amount as f64 / unit));
    CpuUse {
        client_cpu_s_per_gb: per(client_cpu_s, bytes, 1e9),
        client_cpu_s_per_million_msgs: per(client_cpu_s, msgs, 1e6),
        broker_cpu_s_per_gb: broker_cpu_s.and_then(|c| per(c, bytes, 1e9)),
        broker_cpu_s_per_million_msgs: broker_cpu_s.and_then(|c| per(c, msgs, 1e6)),
        processes,
        harness_threads,
        client_cpu_s,
        broker_cpu_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_spaces_in_the_name_parse() {
        let line = "1234 (load-gen 0) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        let (name, cpu) = parse_stat(line, 100.0).unwrap();
        assert_eq!(name, "load-gen 0");
        assert_eq!(
            cpu,
            Cpu {
                user_s: 2.5,
                system_s: 0.5
            }
        );
    }

    /// A generator that ends before the window's closing snapshot (as a
    /// paced one does right after its flush) read as 0 CPU: its thread was
    /// gone from `/proc` by then.
    #[test]
    fn an_ended_thread_keeps_counting_in_its_group() {
        let before = snapshot(&[]).harness_threads["load generators"];
        std::thread::Builder::new()
            .name("load-gen-ended".into())
            .spawn(|| {
                let t = std::time::Instant::now();
                let mut x = 0u64;
                let me = || {
                    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
                    parse_stat(&s, ticks_per_second()).unwrap().1.total()
                };
                // Work until the tick-granular counter moves; bounded.
                while me() == 0.0 && t.elapsed() < std::time::Duration::from_secs(30) {
                    for i in 0..1_000_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                }
                std::hint::black_box(x);
                thread_ending();
            })
            .unwrap()
            .join()
            .unwrap();
        let after = snapshot(&[]).harness_threads["load generators"];
        assert!(after.total() > before.total(), "{before:?} -> {after:?}");
    }

    #[test]
    fn this_process_burns_measurable_cpu() {
        let me = [Watched {
            name: "harness".into(),
            pid: std::process::id(),
            broker: false,
        }];
        let a = snapshot(&me);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        // Work until the kernel's tick-granular counter moves; bounded.
        while snapshot(&me).processes[0].0.total() <= a.processes[0].0.total()
            && t.elapsed() < std::time::Duration::from_secs(30)
        {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let b = snapshot(&me);
        assert!(b.processes[0].0.total() > a.processes[0].0.total());
        assert!(b.processes[0].1.unwrap() > 0);
        let use_ = account(&me, [&a, &a, &b, &b], 1_000_000_000, 1_000_000, false);
        assert!(use_.client_cpu_s > 0.0);
        assert_eq!(use_.client_cpu_s_per_gb, Some(use_.client_cpu_s));
        assert_eq!(use_.broker_cpu_s, None);
    }
}
