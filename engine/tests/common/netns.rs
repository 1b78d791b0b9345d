//! A network of namespaces for cluster tests, and faults made with
//! nftables inside it.
//!
//! ```text
//!   root namespace (the test's clients)          snp<pid>h (hub)
//!   snp<pid>r 10.213.S.1 ──veth──────────────────┐
//!                                                 bridge br0
//!   snp<pid>b1 10.213.S.11 ──veth (snp<pid>n1)───┤
//!   snp<pid>b2 10.213.S.12 ──veth (snp<pid>n2)───┤
//!   snp<pid>b3 10.213.S.13 ──veth (snp<pid>n3)───┘
//! ```
//!
//! The bridge sits in a namespace of its own so that no rule of the
//! machine's (the root namespace's nftables, a bridge netfilter hook)
//! touches the brokers' traffic: only the rules the test puts in. Each
//! broker namespace holds one table, `inet fault`, with an input and an
//! output chain; a fault is a set of rules there and a heal flushes them.
//! This kernel has no `netem`, so loss is `numgen random` and a cut is a
//! drop.
//!
//! Every name carries the test process's pid, and `S` is picked so that
//! no address of the root namespace is in `10.213.S.0/24`: runs side by
//! side do not collide, and [`Net::remove_leftovers`] deletes what a
//! crashed run of a dead pid left behind. Everything is deleted on drop.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Every namespace and link of these networks starts with this.
pub const PREFIX: &str = "snp";

/// Runs `program args`, with `stdin` written to it; its stdout, or why
/// it failed.
pub fn run(program: &str, args: &[&str], stdin: &str) -> Result<String, String> {
    let what = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", what()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .map_err(|e| format!("{}: {e}", what()))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", what()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}\n{stdin}",
            what(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args, "")
}

/// A rule of a fault, put in one broker's namespace.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// Drop every packet in both directions but loopback's.
    Isolate,
    /// Drop packets coming from these addresses.
    DropFrom(Vec<Ipv4Addr>),
    /// Drop packets going to these addresses.
    DropTo(Vec<Ipv4Addr>),
    /// Drop this percentage of packets, both ways, at random.
    Loss(u32),
}

impl Rule {
    /// The `nft` commands that add this rule to table `inet fault`.
    fn nft(&self) -> String {
        let set = |a: &[Ipv4Addr]| {
            let list: Vec<String> = a.iter().map(Ipv4Addr::to_string).collect();
            format!("{{ {} }}", list.join(", "))
        };
        match self {
            Rule::Isolate => "add rule inet fault in iifname != \"lo\" drop\n\
                 add rule inet fault out oifname != \"lo\" drop\n"
                .to_string(),
            Rule::DropFrom(a) => format!("add rule inet fault in ip saddr {} drop\n", set(a)),
            Rule::DropTo(a) => format!("add rule inet fault out ip daddr {} drop\n", set(a)),
            Rule::Loss(n) => {
                assert!(*n <= 100, "a loss of {n}%");
                format!(
                    "add rule inet fault in iifname != \"lo\" numgen random mod 100 < {n} drop\n\
                     add rule inet fault out oifname != \"lo\" numgen random mod 100 < {n} drop\n"
                )
            }
        }
    }
}

/// The namespaces, bridge and links of one test's network.
pub struct Net {
    prefix: String,
    /// The third octet of this network's `10.213.S.0/24`.
    pub subnet: u8,
    /// Namespaces made so far, the hub first; deleted on drop.
    made: Vec<String>,
    root_link: Option<String>,
    brokers: usize,
}

/// The first octets of every network's addresses.
const NET: [u8; 2] = [10, 213];

impl Net {
    /// Whether this machine lets the test build networks: `ip` and `nft`
    /// present and namespaces allowed (root).
    pub fn check_tools() -> Result<(), String> {
        ip(&["-V"])?;
        run("nft", &["--version"], "")?;
        ip(&["netns", "list"])?;
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        Ok(())
    }

    /// Deletes the namespaces and root links of earlier runs whose
    /// process is gone.
    pub fn remove_leftovers() {
        let dead = |name: &str| -> bool {
            let digits: String = name[PREFIX.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            !digits.is_empty() && !std::path::Path::new(&format!("/proc/{digits}")).exists()
        };
        for line in ip(&["netns", "list"]).unwrap_or_default().lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(PREFIX) && dead(name) {
                let _ = ip(&["netns", "del", name]);
            }
        }
        for line in ip(&["-o", "link", "show"]).unwrap_or_default().lines() {
            // "7: snp123r@if6: <...>"
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(PREFIX) && dead(name) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }

    /// A network of `brokers` broker namespaces on one bridge, reachable
    /// from the root namespace.
    pub fn create(brokers: usize) -> Result<Net, String> {
        assert!((1..=9).contains(&brokers), "{brokers} brokers");
        let pid = std::process::id();
        let mut net = Net {
            prefix: format!("{PREFIX}{pid}"),
            subnet: free_subnet(pid)?,
            made: Vec::new(),
            root_link: None,
            brokers,
        };
        let hub = net.hub();
        ip(&["netns", "add", &hub])?;
        net.made.push(hub.clone());
        net.inside(&hub, &["link", "set", "lo", "up"])?;
        net.inside(&hub, &["link", "add", "br0", "type", "bridge"])?;
        net.inside(&hub, &["link", "set", "br0", "up"])?;
        // The clients' way in.
        let (root, root_peer) = (format!("{}r", net.prefix), format!("{}c", net.prefix));
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", &root_peer,
        ])?;
        net.root_link = Some(root.clone());
        net.plug(&root_peer)?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.client_ip()),
            "dev",
            &root,
        ])?;
        ip(&["link", "set", &root, "up"])?;
        for node in 1..=brokers {
            net.add_broker(node)?;
        }
        Ok(net)
    }

    /// Moves link `name` into the hub and onto its bridge.
    fn plug(&self, name: &str) -> Result<(), String> {
        let hub = self.hub();
        ip(&["link", "set", name, "netns", &hub])?;
        self.inside(&hub, &["link", "set", name, "master", "br0"])?;
        self.inside(&hub, &["link", "set", name, "up"])?;
        Ok(())
    }

    fn add_broker(&mut self, node: usize) -> Result<(), String> {
        let ns = self.namespace(node).to_string();
        ip(&["netns", "add", &ns])?;
        self.made.push(ns.clone());
        let (hub_end, eth) = (
            format!("{}h{node}", self.prefix),
            format!("{}n{node}", self.prefix),
        );
        ip(&[
            "link", "add", &hub_end, "type", "veth", "peer", "name", &eth,
        ])?;
        ip(&["link", "set", &eth, "netns", &ns])?;
        self.plug(&hub_end)?;
        let addr = format!("{}/24", self.broker_ip(node));
        self.inside(&ns, &["addr", "add", &addr, "dev", &eth])?;
        self.inside(&ns, &["link", "set", &eth, "up"])?;
        // A broker reaches its own address over loopback.
        self.inside(&ns, &["link", "set", "lo", "up"])?;
        self.nft(
            node,
            "add table inet fault\n\
             add chain inet fault in { type filter hook input priority 0; policy accept; }\n\
             add chain inet fault out { type filter hook output priority 0; policy accept; }\n",
        )
    }

    fn hub(&self) -> String {
        format!("{}h", self.prefix)
    }

    /// The namespace of broker `node` (1-based).
    pub fn namespace(&self, node: usize) -> String {
        assert!((1..=self.brokers).contains(&node), "broker {node}");
        format!("{}b{node}", self.prefix)
    }

    fn inside(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", ns, "ip"];
        a.extend_from_slice(args);
        ip(&a)
    }

    fn nft(&self, node: usize, script: &str) -> Result<(), String> {
        let ns = self.namespace(node);
        run("ip", &["netns", "exec", &ns, "nft", "-f", "-"], script).map(drop)
    }

    /// The root namespace's address, where the clients' connections come
    /// from.
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(NET[0], NET[1], self.subnet, 1)
    }

    /// Broker `node`'s address.
    pub fn broker_ip(&self, node: usize) -> Ipv4Addr {
        assert!((1..=self.brokers).contains(&node), "broker {node}");
        Ipv4Addr::new(NET[0], NET[1], self.subnet, 10 + node as u8)
    }

    /// Replaces broker `node`'s fault rules with `rules` (none: healed).
    pub fn set_rules(&self, node: usize, rules: &[Rule]) -> Result<(), String> {
        let mut script = String::from("flush chain inet fault in\nflush chain inet fault out\n");
        for r in rules {
            script.push_str(&r.nft());
        }
        self.nft(node, &script)
    }

    /// Removes every fault.
    pub fn heal(&self) -> Result<(), String> {
        (1..=self.brokers).try_for_each(|node| self.set_rules(node, &[]))
    }
}

/// A `10.213.S.0/24` no address of the root namespace is in, starting
/// from one the pid picks.
fn free_subnet(pid: u32) -> Result<u8, String> {
    let taken = ip(&["-4", "-o", "addr", "show"])?;
    let start = pid % 250;
    (0..250)
        .map(|i| ((start + i) % 250 + 3) as u8)
        .find(|s| !taken.contains(&format!(" {}.{}.{s}.", NET[0], NET[1])))
        .ok_or_else(|| "every 10.213.S.0/24 is in use".to_string())
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(l) = &self.root_link {
            let _ = ip(&["link", "del", l]);
        }
        // Deleting a namespace deletes the links in it, and so their
        // peers; the brokers in it must have exited first, or the
        // namespace outlives its name.
        for ns in self.made.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
