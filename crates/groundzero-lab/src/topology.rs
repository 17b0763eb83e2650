//! The lab's namespaces: one protected node, legitimate peers and attackers, joined by a bridge.
//!
//! ```text
//!   gz-lab-peer1 (198.18.0.11, 2001:2::11) ─┐
//!   gz-lab-peer2 ...                        ├─ gz-lab-br: bridge gzl-br ── gzl-node ─ gz-lab-node
//!   gz-lab-atk1  (198.18.0.61, 2001:2::61) ─┘        (XDP attaches here)  (198.18.0.1, 2001:2::1)
//! ```
//!
//! A two-node lab (`nodes: 2`, for the fleet: see [`crate::fleet`]) adds node B on the same
//! bridge (`gz-lab-nodeb`, 198.18.0.2 / 2001:2::2, XDP on `gzl-nodeb`), which every attacker and
//! peer reaches as it reaches node A, and a link from this host's namespace into the bridge
//! (`gzl-host`, 198.18.0.254/32, with routes to the two nodes only) where a service both nodes
//! use (the CrowdSec LAPI) listens.
//!
//! Every namespace is named `gz-lab-*` and every interface `gzl*`, so [`down`] finds what a
//! crashed process left even without the state file. Addresses come only from the benchmarking
//! ranges 198.18.0.0/15 and 2001:2::/48. Neighbours and bridge forwarding entries are static, so
//! no ARP/NDP or unknown-unicast flooding muddies the measurements. Spoofed flood sources
//! (198.19.0.0/16, 2001:2:66::/48) are one-way: the node has blackhole routes for them, so its
//! answers to a spoofed request go nowhere (and are not sent to an innocent party).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::netns::{self, Netns, NetnsError};

/// Every lab namespace starts with this.
pub const NS_PREFIX: &str = "gz-lab-";
/// Every lab interface starts with this.
pub const LINK_PREFIX: &str = "gzl";
pub const NODE_NS: &str = "gz-lab-node";
pub const BRIDGE_NS: &str = "gz-lab-br";
/// The node's veth end: the interface the shield protects.
pub const NODE_IF: &str = "gzl-node";
const BRIDGE_IF: &str = "gzl-br";
pub const NODE_MAC: &str = "02:67:7a:00:00:01";
pub const NODE_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const NODE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// Node B's namespace (two-node labs only).
pub const NODE_B_NS: &str = "gz-lab-nodeb";
/// Node B's veth end, where its shield attaches.
pub const NODE_B_IF: &str = "gzl-nodeb";
pub const NODE_B_MAC: &str = "02:67:7a:00:00:02";
pub const NODE_B_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const NODE_B_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
/// This host's end of its link into the bridge (two-node labs only).
pub const HOST_IF: &str = "gzl-host";
const HOST_PORT: &str = "gzlb-host";
pub const HOST_MAC: &str = "02:67:7a:00:00:fe";
/// This host's address on the lab's bridge: a /32 with routes to the nodes only, so nothing
/// else this host sends to 198.18.0.0/15 is taken into the lab.
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
/// Where spoofed flood sources come from (routed nowhere by the node).
pub const SPOOF_V4: &str = "198.19.0.0/16";
pub const SPOOF_V6: &str = "2001:2:66::/48";
/// Pins made by the lab's daemon live here, apart from a production daemon's.
pub const LAB_PIN_DIR: &str = "/sys/fs/bpf/groundzero-lab";
/// What `up` made, for `status` and `down`.
pub const STATE_FILE: &str = "/run/groundzero/lab.json";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(
        "a lab is already up ({detail}): run `groundzero lab down` first, or use the one that is up"
    )]
    AlreadyUp { detail: String },
    #[error("no lab is up (no {STATE_FILE}): run `groundzero lab up` first")]
    NotUp,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{STATE_FILE} is not a lab state file ({0}); `groundzero lab down` removes it")]
    BadState(String),
    #[error("{0}")]
    Spec(String),
    #[error("removing the lab's pins under {LAB_PIN_DIR}: {0}")]
    Pins(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// How big a lab to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabSpec {
    /// Legitimate peers, 1 to 9.
    pub peers: u8,
    /// Attackers, 1 to 9.
    pub attackers: u8,
    /// Protected nodes, 1 or 2 (node B and the host link come with 2).
    pub nodes: u8,
}

impl Default for LabSpec {
    fn default() -> Self {
        Self {
            peers: 3,
            attackers: 3,
            nodes: 1,
        }
    }
}

/// A peer or attacker: its namespace, its veth end and its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// `peer1`, `atk2`, ...
    pub name: String,
    pub netns: String,
    pub iface: String,
    pub mac: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    fn new(role: &str, mac_group: u8, octet_base: u8, index: u8) -> Self {
        let name = format!("{role}{index}");
        let last = octet_base + index;
        Host {
            netns: format!("{NS_PREFIX}{name}"),
            iface: format!("{LINK_PREFIX}-{name}"),
            mac: format!("02:67:7a:00:{mac_group:02x}:{index:02x}"),
            v4: Ipv4Addr::new(198, 18, 0, last),
            // 2001:2::11 reads like 198.18.0.11: the same digits, in hex.
            v6: Ipv6Addr::new(
                0x2001,
                2,
                0,
                0,
                0,
                0,
                0,
                u16::from_str_radix(&last.to_string(), 16).expect("two decimal digits"),
            ),
            name,
        }
    }

    /// The address of this host in the family of `family`.
    pub fn addr_like(&self, family: IpAddr) -> IpAddr {
        match family {
            IpAddr::V4(_) => self.v4.into(),
            IpAddr::V6(_) => self.v6.into(),
        }
    }
}

/// What `up` made; saved in [`STATE_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// The process that will remove the lab when it ends (the demo, a test); `None` when
    /// `groundzero lab up` made it to stay until `groundzero lab down`.
    pub owner_pid: Option<u32>,
    pub created_unix: u64,
    pub node_ns: String,
    pub node_if: String,
    pub node_mac: String,
    pub node_v4: Ipv4Addr,
    pub node_v6: Ipv6Addr,
    pub peers: Vec<Host>,
    pub attackers: Vec<Host>,
    pub pin_dir: PathBuf,
    /// Node B, in a two-node lab.
    #[serde(default)]
    pub node_b: Option<Host>,
    /// The fleet's processes and files, once [`crate::fleet`] has started them.
    #[serde(default)]
    pub fleet: Option<FleetRecord>,
}

/// What a fleet lab runs besides the namespaces, for `status` and `down`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetRecord {
    /// The fleet's directory (configs, keys, state, sockets, logs); `down` removes it.
    pub dir: PathBuf,
    /// The LAPI's URL as the nodes reach it.
    pub lapi_url: String,
    /// The LAPI process when it outlives its starter (`groundzero lab up --crowdsec`).
    pub lapi_pid: Option<u32>,
    /// The LAPI's own directory (config, sqlite database); `down` removes it.
    pub lapi_dir: PathBuf,
    /// Each node's daemon.
    pub nodes: Vec<FleetNodeRecord>,
}

/// One node's daemon in a fleet lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetNodeRecord {
    /// `node-a`, `node-b`: also its bouncer's and its machine's name in the LAPI.
    pub name: String,
    pub netns: String,
    pub iface: String,
    pub v4: Ipv4Addr,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl LabState {
    /// Every namespace of the lab.
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![BRIDGE_NS.to_string(), self.node_ns.clone()];
        names.extend(self.node_b.iter().map(|n| n.netns.clone()));
        names.extend(
            self.peers
                .iter()
                .chain(&self.attackers)
                .map(|h| h.netns.clone()),
        );
        names
    }

    /// The node's address in the family of `family`.
    pub fn node_addr_like(&self, family: IpAddr) -> IpAddr {
        match family {
            IpAddr::V4(_) => self.node_v4.into(),
            IpAddr::V6(_) => self.node_v6.into(),
        }
    }

    pub fn load() -> Result<Option<Self>, LabError> {
        match std::fs::read_to_string(STATE_FILE) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| LabError::BadState(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {STATE_FILE}"))(e)),
        }
    }

    fn save(&self) -> Result<(), LabError> {
        let path = Path::new(STATE_FILE);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        let text = serde_json::to_string_pretty(self).expect("the state serialises");
        std::fs::write(path, text).map_err(io(format!("writing {STATE_FILE}")))
    }
}

/// A lab that is up. Dropping it removes it (namespaces, links, pins, processes inside), unless
/// [`Lab::keep`] was called.
#[derive(Debug)]
pub struct Lab {
    state: LabState,
    remove_on_drop: bool,
}

impl Lab {
    /// Builds the topology. A leftover lab whose owner process is gone is removed first; a lab
    /// that is in use (or was made by `lab up`) is an error.
    pub fn up(spec: LabSpec) -> Result<Lab, LabError> {
        if !(1..=9).contains(&spec.peers) || !(1..=9).contains(&spec.attackers) {
            return Err(LabError::Spec(format!(
                "peers and attackers must be 1 to 9 each (asked for {} and {})",
                spec.peers, spec.attackers
            )));
        }
        if !(1..=2).contains(&spec.nodes) {
            return Err(LabError::Spec(format!(
                "a lab has 1 or 2 nodes (asked for {})",
                spec.nodes
            )));
        }
        refuse_if_up()?;
        let state = LabState {
            owner_pid: Some(std::process::id()),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            node_ns: NODE_NS.into(),
            node_if: NODE_IF.into(),
            node_mac: NODE_MAC.into(),
            node_v4: NODE_V4,
            node_v6: NODE_V6,
            peers: (1..=spec.peers)
                .map(|i| Host::new("peer", 1, 10, i))
                .collect(),
            attackers: (1..=spec.attackers)
                .map(|i| Host::new("atk", 6, 60, i))
                .collect(),
            pin_dir: LAB_PIN_DIR.into(),
            node_b: (spec.nodes == 2).then(|| Host {
                name: "nodeb".into(),
                netns: NODE_B_NS.into(),
                iface: NODE_B_IF.into(),
                mac: NODE_B_MAC.into(),
                v4: NODE_B_V4,
                v6: NODE_B_V6,
            }),
            fleet: None,
        };
        // Saved first, so a crash half-way is still cleaned up by `down`.
        state.save()?;
        let lab = Lab {
            state,
            remove_on_drop: true,
        };
        build(&lab.state)?; // on error, drop removes what was made
        Ok(lab)
    }

    /// The lab that is up (from [`STATE_FILE`]), not removed when dropped.
    pub fn existing() -> Result<Lab, LabError> {
        let state = LabState::load()?.ok_or(LabError::NotUp)?;
        Ok(Lab {
            state,
            remove_on_drop: false,
        })
    }

    pub fn state(&self) -> &LabState {
        &self.state
    }

    /// A handle on one of the lab's namespaces (deletes nothing when dropped).
    pub fn netns(&self, name: &str) -> Result<Netns, LabError> {
        Ok(Netns::open(name)?)
    }

    pub fn node(&self) -> Result<Netns, LabError> {
        self.netns(&self.state.node_ns)
    }

    /// Records what a fleet runs in the lab (saved at once, so `down` finds it after a crash).
    pub fn set_fleet(&mut self, record: FleetRecord) -> Result<(), LabError> {
        self.state.fleet = Some(record);
        self.state.save()
    }

    /// Leaves the lab up after this value is gone (until `groundzero lab down`).
    pub fn keep(mut self) -> Result<LabState, LabError> {
        self.remove_on_drop = false;
        self.state.owner_pid = None;
        self.state.save()?;
        Ok(self.state.clone())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.remove_on_drop {
            if let Err(e) = down() {
                eprintln!("warning: removing the lab: {e}");
            }
        }
    }
}

fn refuse_if_up() -> Result<(), LabError> {
    let found = lab_namespaces();
    let state = LabState::load().unwrap_or(None);
    if found.is_empty() && state.is_none() {
        return Ok(());
    }
    match state.as_ref().map(|s| s.owner_pid) {
        Some(Some(pid)) if !process_alive(pid) => {
            log::info!("removing a lab left by process {pid}, which is gone");
            down()?;
            Ok(())
        }
        Some(Some(pid)) => Err(LabError::AlreadyUp {
            detail: format!("in use by process {pid}"),
        }),
        Some(None) => Err(LabError::AlreadyUp {
            detail: "made by `groundzero lab up`".into(),
        }),
        None => Err(LabError::AlreadyUp {
            detail: format!("namespaces {} exist", found.join(", ")),
        }),
    }
}

/// Running, not a zombie waiting to be reaped (a killed owner is one for a moment).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

fn build(state: &LabState) -> Result<(), LabError> {
    let bridge = Netns::create_named(BRIDGE_NS)?.keep();
    let node = Netns::create_named(&state.node_ns)?.keep();
    let node_b = match &state.node_b {
        Some(b) => Some((Netns::create_named(&b.netns)?.keep(), b)),
        None => None,
    };
    let hosts: Vec<(Netns, &Host)> = state
        .peers
        .iter()
        .chain(&state.attackers)
        .map(|h| Ok((Netns::create_named(&h.netns)?.keep(), h)))
        .collect::<Result<_, LabError>>()?;
    for ns in std::iter::once(&bridge)
        .chain(std::iter::once(&node))
        .chain(node_b.iter().map(|(ns, _)| ns))
        .chain(hosts.iter().map(|(ns, _)| ns))
    {
        // Before any interface exists, so the `default` values apply to all of them: no router
        // advertisements, no DAD delay, no link-local addresses (nothing unasked on the wire),
        // no reverse-path filter (spoofed sources must reach the node, as on the Internet).
        for (key, value) in [
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.default.addr_gen_mode", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            ns.sysctl(key, value)?;
        }
    }
    bridge.ip(&["link", "add", BRIDGE_IF, "type", "bridge"])?;
    bridge.ip(&["link", "set", BRIDGE_IF, "up"])?;
    // With br_netfilter in the kernel, a bridge hands every frame to iptables and first drops
    // IP headers it finds invalid: the malformed trickle would never reach the node, and the
    // flood would cost the bridge more. The lab's bridge is a wire, nothing more. (Absent
    // without br_netfilter, hence no error.)
    for table in ["iptables", "ip6tables", "arptables"] {
        let _ = bridge.sysctl(&format!("net.bridge.bridge-nf-call-{table}"), "0");
    }

    let node_host = Host {
        name: "node".into(),
        netns: state.node_ns.clone(),
        iface: state.node_if.clone(),
        mac: state.node_mac.clone(),
        v4: state.node_v4,
        v6: state.node_v6,
    };
    for (ns, host) in std::iter::once((&node, &node_host))
        .chain(node_b.iter().map(|(n, h)| (n, *h)))
        .chain(hosts.iter().map(|(n, h)| (n, *h)))
    {
        let port = format!("{LINK_PREFIX}b-{}", host.name);
        netns::veth(ns, &host.iface, &bridge, &port)?;
        ns.ip(&["link", "set", "dev", &host.iface, "address", &host.mac])?;
        bridge.ip(&["link", "set", &port, "master", BRIDGE_IF])?;
        bridge_cmd(&[
            "-n", BRIDGE_NS, "fdb", "add", &host.mac, "dev", &port, "master", "static",
        ])?;
        let v4 = format!("{}/24", host.v4);
        let v6 = format!("{}/64", host.v6);
        ns.ip(&["addr", "add", &v4, "dev", &host.iface])?;
        ns.ip(&["addr", "add", &v6, "dev", &host.iface, "nodad"])?;
    }
    for (ns, host) in &hosts {
        for (theirs, ours) in [
            (IpAddr::from(host.v4), IpAddr::from(state.node_v4)),
            (host.v6.into(), state.node_v6.into()),
        ] {
            static_neighbour(&node, theirs, &host.mac, &state.node_if)?;
            static_neighbour(ns, ours, &state.node_mac, &host.iface)?;
        }
    }
    node.ip(&["route", "add", "blackhole", SPOOF_V4])?;
    node.ip(&["-6", "route", "add", "blackhole", SPOOF_V6])?;
    if let Some((b_ns, b)) = &node_b {
        for (ns, host) in &hosts {
            for (theirs, ours) in [
                (IpAddr::from(host.v4), IpAddr::from(b.v4)),
                (host.v6.into(), b.v6.into()),
            ] {
                static_neighbour(b_ns, theirs, &host.mac, &b.iface)?;
                static_neighbour(ns, ours, &b.mac, &host.iface)?;
            }
        }
        b_ns.ip(&["route", "add", "blackhole", SPOOF_V4])?;
        b_ns.ip(&["-6", "route", "add", "blackhole", SPOOF_V6])?;
        host_link(&bridge, &[(&node, &node_host), (b_ns, b)])?;
    }
    Ok(())
}

/// This host's link into the bridge: [`HOST_V4`]/32 on [`HOST_IF`] here, a route to each node
/// and static neighbours both ways (IPv4 only: it carries the nodes' calls to the LAPI).
fn host_link(bridge: &Netns, nodes: &[(&Netns, &Host)]) -> Result<(), LabError> {
    netns::ip(&[
        "link", "add", HOST_IF, "type", "veth", "peer", "name", HOST_PORT, "netns", BRIDGE_NS,
    ])?;
    netns::ip(&["link", "set", "dev", HOST_IF, "address", HOST_MAC])?;
    // This namespace's defaults are the host's: no IPv6 on the link (no link-local address,
    // router solicitations or DAD on the lab's wire; the LAPI is reached over IPv4).
    std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{HOST_IF}/disable_ipv6"),
        "1",
    )
    .map_err(io(format!("turning IPv6 off on {HOST_IF}")))?;
    bridge.ip(&["link", "set", HOST_PORT, "master", BRIDGE_IF])?;
    // `replace`: the bridge may have learned the address already from an early frame.
    bridge_cmd(&[
        "-n", BRIDGE_NS, "fdb", "replace", HOST_MAC, "dev", HOST_PORT, "master", "static",
    ])?;
    bridge.ip(&["link", "set", HOST_PORT, "up"])?;
    netns::ip(&["link", "set", HOST_IF, "up"])?;
    let host_addr = format!("{HOST_V4}/32");
    netns::ip(&["addr", "add", &host_addr, "dev", HOST_IF])?;
    for (ns, node) in nodes {
        let to_node = format!("{}/32", node.v4);
        netns::ip(&[
            "route",
            "add",
            &to_node,
            "dev",
            HOST_IF,
            "src",
            &HOST_V4.to_string(),
        ])?;
        netns::ip(&[
            "neigh",
            "add",
            &node.v4.to_string(),
            "lladdr",
            &node.mac,
            "dev",
            HOST_IF,
            "nud",
            "permanent",
        ])?;
        static_neighbour(ns, HOST_V4.into(), HOST_MAC, &node.iface)?;
    }
    Ok(())
}

fn static_neighbour(ns: &Netns, addr: IpAddr, mac: &str, dev: &str) -> Result<(), LabError> {
    Ok(ns.ip(&[
        "neigh",
        "add",
        &addr.to_string(),
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])?)
}

fn bridge_cmd(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("bridge")
        .args(args)
        .output()
        .map_err(io("running `bridge` (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            command: format!("bridge {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
        .into())
    }
}

/// Namespaces named `gz-lab-*` that exist now.
pub fn lab_namespaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(NS_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Interfaces named `gzl*` in this process's namespace (a lab never leaves one here, unless a
/// crash hit between creating a veth and moving it).
fn stray_links() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .filter(|name| name.starts_with(LINK_PREFIX))
        .collect()
}

/// Processes whose network namespace is one of the lab's (a daemon, the node, a generator).
fn processes_in(namespace: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != std::process::id() as i32)
        .collect()
}

/// What [`down`] removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DownReport {
    pub processes: Vec<i32>,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub pins: Vec<PathBuf>,
    /// A fleet's directories (its own and the LAPI's).
    pub dirs: Vec<PathBuf>,
    pub state_file: bool,
}

impl DownReport {
    pub fn is_empty(&self) -> bool {
        self == &DownReport::default()
    }
}

/// Removes every lab namespace, stray link and pin, and the state file; stops processes still
/// running inside the lab (SIGTERM, then SIGKILL after 3 s). Works from the names alone, so it
/// also cleans up after a crash or `kill -9` of whatever made the lab. Removing nothing is fine.
pub fn down() -> Result<DownReport, LabError> {
    let mut report = DownReport::default();
    let mut namespaces = lab_namespaces();
    let state = LabState::load().ok().flatten();
    if let Some(state) = &state {
        for ns in state.namespaces() {
            if !namespaces.contains(&ns) && Path::new(&format!("/run/netns/{ns}")).exists() {
                namespaces.push(ns);
            }
        }
    }
    for ns in &namespaces {
        report.processes.extend(processes_in(ns));
    }
    // The fleet's LAPI runs in this namespace, not the lab's: stopped by the pid recorded, if
    // that pid is still crowdsec (not a recycled one).
    let fleet = state.as_ref().and_then(|s| s.fleet.clone());
    if let Some(pid) = fleet.as_ref().and_then(|f| f.lapi_pid) {
        if is_crowdsec(pid) {
            report.processes.push(pid as i32);
        }
    }
    stop_processes(&report.processes);
    if let Some(fleet) = &fleet {
        for dir in [&fleet.dir, &fleet.lapi_dir] {
            if dir.exists() && std::fs::remove_dir_all(dir).is_ok() {
                report.dirs.push(dir.clone());
            }
        }
    }
    for ns in &namespaces {
        match netns::ip(&["netns", "del", ns]) {
            Ok(()) => report.namespaces.push(ns.clone()),
            Err(e) => log::warn!("deleting {ns}: {e}"),
        }
    }
    for link in stray_links() {
        if netns::ip(&["link", "del", &link]).is_ok() {
            report.links.push(link);
        }
    }
    if Path::new(LAB_PIN_DIR).exists() {
        // A fleet's nodes pin under a directory each (`a`, `b`) inside the lab's.
        let node_dirs: Vec<PathBuf> = std::fs::read_dir(LAB_PIN_DIR)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir() && !p.ends_with("links") && !p.ends_with("maps"))
                    .collect()
            })
            .unwrap_or_default();
        for dir in node_dirs {
            report.pins.extend(
                groundzero::pins::remove_all(&dir).map_err(|e| LabError::Pins(e.to_string()))?,
            );
        }
        report.pins.extend(
            groundzero::pins::remove_all(Path::new(LAB_PIN_DIR))
                .map_err(|e| LabError::Pins(e.to_string()))?,
        );
        let _ = std::fs::remove_dir_all(LAB_PIN_DIR);
    }
    match std::fs::remove_file(STATE_FILE) {
        Ok(()) => report.state_file = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {STATE_FILE}"))(e)),
    }
    Ok(report)
}

/// Whether `pid` runs the crowdsec binary.
fn is_crowdsec(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.file_name().is_some_and(|n| n == "crowdsec"))
        && process_alive(pid)
}

fn stop_processes(pids: &[i32]) {
    // SAFETY (both kills): kill(2) has no memory-safety preconditions; the pids were just read
    // from the lab's namespaces and exclude this process.
    for &pid in pids {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| process_alive(p as u32)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids {
        if process_alive(pid as u32) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// What is up right now, for `groundzero lab status`.
#[derive(Clone, Debug)]
pub struct Status {
    pub state: Option<LabState>,
    pub namespaces: Vec<String>,
    /// Pins under [`LAB_PIN_DIR`].
    pub pins: usize,
    /// Whether the lab's owner process (if any) still runs.
    pub owner_alive: Option<bool>,
}

pub fn status() -> Result<Status, LabError> {
    let state = LabState::load()?;
    let owner_alive = state.as_ref().and_then(|s| s.owner_pid).map(process_alive);
    Ok(Status {
        namespaces: lab_namespaces(),
        pins: count_files(Path::new(LAB_PIN_DIR)),
        state,
        owner_alive,
    })
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_and_addressed_from_the_benchmark_ranges() {
        let peer = Host::new("peer", 1, 10, 2);
        assert_eq!(peer.netns, "gz-lab-peer2");
        assert_eq!(peer.iface, "gzl-peer2");
        assert_eq!(peer.v4, Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(peer.v6, "2001:2::12".parse::<Ipv6Addr>().unwrap());
        let atk = Host::new("atk", 6, 60, 9);
        assert_eq!(atk.mac, "02:67:7a:00:06:09");
        assert_eq!(atk.v4, Ipv4Addr::new(198, 18, 0, 69));
        // Interface names fit the kernel's 15 characters, on both ends of the veth.
        assert!(format!("{LINK_PREFIX}b-{}", atk.name).len() <= 15);
    }
}
