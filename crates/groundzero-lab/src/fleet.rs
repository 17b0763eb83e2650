//! Two nodes sharing bans through one CrowdSec LAPI (issue 15's "across a fleet", in the lab).
//!
//! [`Fleet::up`] builds a two-node lab ([`crate::topology`], node A in `gz-lab-node`, node B in
//! `gz-lab-nodeb`, the attackers and peers reaching both), starts a real LAPI
//! ([`crate::crowdsec::Lapi`]) on this host's link into the lab's bridge (198.18.0.254, so both
//! nodes' daemons reach it and `cscli` runs here), registers a bouncer key (`cscli bouncers
//! add`) and a machine (`cscli machines add`) per node, and starts one `groundzero run` per node
//! with its own pin dir, state dir, socket and config: `[crowdsec]` (pull) and
//! `[crowdsec.push]` (push of its own `auto-ban` and `app` bans).
//!
//! So a ban node A's validator makes through node A's API is pushed to the LAPI as an alert,
//! node B's bouncer pulls it, and node B's XDP program drops the attacker. [`Spread`] measures
//! that: when node A banned each source, and when node B's kernel map first counted a drop of
//! it.
//!
//! Everything a fleet runs is recorded in the lab's state file ([`FleetRecord`]), so `groundzero
//! lab down` stops and removes it, also after a crash; dropping a [`Fleet`] stops its daemons,
//! the LAPI, and removes the lab.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use ipnet::IpNet;

use crate::{
    crowdsec::{CrowdsecError, Install, Lapi},
    harness::{self, ChildDaemon, DaemonConfig, HarnessError, Launch, PinnedMaps},
    netns::Netns,
    raw::parse_mac,
    topology::{
        FleetNodeRecord, FleetRecord, Host, Lab, LabError, LabSpec, LabState, HOST_V4, LAB_PIN_DIR,
    },
    traffic::{self, GenReport, Limits, RawTarget},
};

/// Where a fleet keeps its configs, keys, state, sockets and logs (one lab at a time).
pub const FLEET_DIR: &str = "/run/groundzero/lab-fleet";
/// The names of the two nodes: their daemons' directories, bouncers and machines.
pub const NODE_NAMES: [&str; 2] = ["node-a", "node-b"];

/// What went wrong bringing a fleet up.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("the fleet's CrowdSec LAPI")]
    Crowdsec(#[from] CrowdsecError),
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FleetError {
    let what = what.into();
    move |source| FleetError::Io { what, source }
}

/// How to build a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    /// Legitimate peers and attackers (1 to 9 each), shared by both nodes.
    pub peers: u8,
    pub attackers: u8,
    /// `[crowdsec] pull_interval` of both daemons (Go-ish duration, `"2s"`).
    pub pull_interval: String,
    /// `[crowdsec.push] interval` of both daemons.
    pub push_interval: String,
    /// Whether the daemons push their bans (`[crowdsec.push]`, sources `auto-ban` and `app`).
    pub push: bool,
    /// The LAPI and the daemons outlive the process that made them (`groundzero lab up`):
    /// no PR_SET_PDEATHSIG, and [`Fleet::keep`] gives them up to `groundzero lab down`.
    pub outlive: bool,
    /// More settings for node A's daemon, as TOML merged into its config (the demo's monitor
    /// mode, TCP listener, journey tracing).
    pub node_a_toml: String,
}

impl Default for FleetSpec {
    fn default() -> Self {
        Self {
            peers: 3,
            attackers: 3,
            pull_interval: "2s".into(),
            push_interval: "1s".into(),
            push: true,
            outlive: false,
            node_a_toml: String::new(),
        }
    }
}

/// One node of the fleet: where it is and where its daemon keeps things.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetNode {
    /// Its namespace, interface, MAC and addresses.
    pub host: Host,
    /// Its daemon's paths.
    pub record: FleetNodeRecord,
}

impl FleetNode {
    /// The API socket of its daemon.
    pub fn socket(&self) -> &Path {
        &self.record.socket
    }

    /// Where its daemon pins its maps.
    pub fn pin_dir(&self) -> &Path {
        &self.record.pin_dir
    }

    /// Raw frames from attacker `atk` to this node.
    pub fn raw_target(&self, atk: &Host) -> std::io::Result<RawTarget> {
        let mac = |s: &str| {
            parse_mac(s).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad MAC {s}"))
            })
        };
        Ok(RawTarget {
            iface: atk.iface.clone(),
            src_mac: mac(&atk.mac)?,
            node_mac: mac(&self.host.mac)?,
            node_v4: self.host.v4,
            node_v6: self.host.v6,
        })
    }
}

/// A fleet that is up: dropping it stops the daemons, then the LAPI, then removes the lab.
#[derive(Debug)]
pub struct Fleet {
    // Dropped in this order.
    daemons: Vec<ChildDaemon>,
    lapi: Option<Lapi>,
    lab: Lab,
    nodes: [FleetNode; 2],
    lapi_url: String,
}

impl Fleet {
    /// Builds the two-node lab, starts the LAPI and registers each node with it, writes the
    /// daemons' configs and starts them (`groundzero_bin run --config ...` in each node's
    /// namespace), and waits until both answer. Fails first, before building anything, when the
    /// crowdsec binaries are missing (the error says how to get them).
    pub fn up(
        spec: &FleetSpec,
        groundzero_bin: &Path,
        abort: Option<&AtomicBool>,
    ) -> Result<Fleet, FleetError> {
        Install::locate()?;
        let mut lab = Lab::up(LabSpec {
            peers: spec.peers,
            attackers: spec.attackers,
            nodes: 2,
        })?;
        let state = lab.state().clone();
        let dir = PathBuf::from(FLEET_DIR);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {FLEET_DIR}")))?;
        let lapi = Lapi::start_on(HOST_V4.into(), !spec.outlive)?;
        let lapi_url = format!("{}/", lapi.url());
        let nodes = fleet_nodes(&state, &dir)?;
        let mut record = FleetRecord {
            dir: dir.clone(),
            lapi_url: lapi_url.clone(),
            lapi_pid: None,
            lapi_dir: lapi.dir().to_path_buf(),
            nodes: nodes.iter().map(|n| n.record.clone()).collect(),
        };
        lab.set_fleet(record.clone())?;
        let mut fleet = Fleet {
            daemons: Vec::new(),
            lapi: Some(lapi),
            lab,
            nodes,
            lapi_url,
        };
        for node in &fleet.nodes {
            let config = fleet.register(node, spec)?;
            config
                .write(&node.record.config)
                .map_err(HarnessError::from)?;
            let mut launch =
                ChildDaemon::command(groundzero_bin, &node.record.config, &node.record.log)
                    .in_netns(&node.host.netns)
                    .own_process_group();
            if !spec.outlive {
                launch = launch.die_with_parent();
            }
            fleet
                .daemons
                .push(ChildDaemon::spawn(&launch, &node.record.socket)?);
        }
        for d in &mut fleet.daemons {
            d.wait_healthy(harness::daemon::START_LIMIT, abort)?;
        }
        record.nodes = fleet.nodes.iter().map(|n| n.record.clone()).collect();
        fleet.lab.set_fleet(record)?;
        Ok(fleet)
    }

    /// Registers `node`'s bouncer key and machine with the LAPI (key and password in files of
    /// its own, mode 0600) and returns its daemon's config.
    fn register(&self, node: &FleetNode, spec: &FleetSpec) -> Result<DaemonConfig, FleetError> {
        let lapi = self.lapi.as_ref().ok_or_else(|| FleetError::Io {
            what: "the LAPI is gone".into(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let name = &node.record.name;
        let node_dir = node.record.config.parent().unwrap_or(Path::new(FLEET_DIR));
        let key = random_hex()?;
        // One key per host: two hosts sharing a key steal each other's deltas.
        lapi.add_bouncer(&format!("groundzero-{name}"), &key)?;
        let key_file = node_dir.join("bouncer.key");
        write_secret(&key_file, &key)?;
        let mut config = DaemonConfig::with_paths(
            &node.record.pin_dir,
            &node_dir.join("state"),
            &node.record.socket,
        )
        .header(&format!(
            "Written by groundzero's fleet lab for {name} (LAPI {}).",
            self.lapi_url
        ))
        .interfaces(&[&node.host.iface])
        .set("crowdsec.lapi_url", self.lapi_url.as_str())
        .set_path("crowdsec.api_key_file", &key_file)
        .set("crowdsec.pull_interval", spec.pull_interval.as_str())
        // A 1.4.6 LAPI can leave a decision created during a pull out of every later delta
        // (crowdsec.rs; seen here: 1 of 32 pushed bans never reached node B by delta). The
        // daemon's cure is its periodic whole pull, every 10 min by default: the lab's bans
        // come in bursts and must spread within seconds, so it pulls the whole set often...
        .set("crowdsec.resync_interval", "5s")
        // ...and a whole pull that adds a burst to a few held decisions is no sign of a wrong
        // LAPI here (the lab's LAPI is its own), so the share it may change is not limited.
        .set("crowdsec.max_change", 1000.0);
        if spec.push {
            let password = random_hex()?;
            lapi.add_machine(name, &password)?;
            let password_file = node_dir.join("machine.password");
            write_secret(&password_file, &password)?;
            config = config
                .set("crowdsec.push.machine_id", name.as_str())
                .set_path("crowdsec.push.password_file", &password_file)
                .set(
                    "crowdsec.push.sources",
                    vec![toml::Value::from("auto-ban"), toml::Value::from("app")],
                )
                .set("crowdsec.push.interval", spec.push_interval.as_str());
        }
        if node.record.name == NODE_NAMES[0] && !spec.node_a_toml.is_empty() {
            config = config.merge_toml(&spec.node_a_toml);
        }
        Ok(config)
    }

    /// Node A (attacked; its validator bans) and node B.
    pub fn nodes(&self) -> &[FleetNode; 2] {
        &self.nodes
    }

    /// Node A.
    pub fn node_a(&self) -> &FleetNode {
        &self.nodes[0]
    }

    /// Node B.
    pub fn node_b(&self) -> &FleetNode {
        &self.nodes[1]
    }

    /// The lab's state (peers, attackers, node A as the single-node lab's node).
    pub fn state(&self) -> &LabState {
        self.lab.state()
    }

    /// The LAPI (for `cscli`), while this value owns it.
    pub fn lapi(&self) -> Option<&Lapi> {
        self.lapi.as_ref()
    }

    /// The LAPI's URL as the nodes reach it.
    pub fn lapi_url(&self) -> &str {
        &self.lapi_url
    }

    /// The daemons' pids, node A's first.
    pub fn daemon_pids(&self) -> Vec<u32> {
        self.daemons.iter().map(ChildDaemon::pid).collect()
    }

    /// Leaves everything running for `groundzero lab down` (which finds the LAPI by the pid
    /// recorded here, the daemons by their namespaces). Only for a fleet made with
    /// [`FleetSpec::outlive`]: otherwise the LAPI and the daemons die with this thread.
    pub fn keep(mut self) -> Result<LabState, FleetError> {
        for d in std::mem::take(&mut self.daemons) {
            d.detach();
        }
        let mut record = self.lab.state().fleet.clone().ok_or(LabError::NotUp)?;
        if let Some(lapi) = self.lapi.take() {
            let detached = lapi.detach();
            record.lapi_pid = Some(detached.pid);
            record.lapi_dir = detached.dir;
        }
        self.lab.set_fleet(record)?;
        // `Fleet` has a destructor-free shape only through its fields: move the lab out.
        let Fleet { lab, .. } = self;
        Ok(lab.keep()?)
    }
}

/// Node A and node B of a two-node lab, with their daemons' paths under `dir`.
fn fleet_nodes(state: &LabState, dir: &Path) -> Result<[FleetNode; 2], FleetError> {
    let node_a = Host {
        name: "node".into(),
        netns: state.node_ns.clone(),
        iface: state.node_if.clone(),
        mac: state.node_mac.clone(),
        v4: state.node_v4,
        v6: state.node_v6,
    };
    let node_b = state.node_b.clone().ok_or_else(|| FleetError::Io {
        what: "the lab has no node B".into(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    let make = |name: &str, pin: &str, host: Host| -> Result<FleetNode, FleetError> {
        let node_dir = dir.join(name);
        std::fs::create_dir_all(&node_dir)
            .map_err(io(format!("creating {}", node_dir.display())))?;
        Ok(FleetNode {
            record: FleetNodeRecord {
                name: name.into(),
                netns: host.netns.clone(),
                iface: host.iface.clone(),
                v4: host.v4,
                socket: node_dir.join("api.sock"),
                pin_dir: Path::new(LAB_PIN_DIR).join(pin),
                config: node_dir.join("groundzero.toml"),
                log: node_dir.join("daemon.log"),
            },
            host,
        })
    };
    Ok([
        make(NODE_NAMES[0], "a", node_a)?,
        make(NODE_NAMES[1], "b", node_b)?,
    ])
}

/// Created 0600 (never readable by others, not even between a write and a chmod); an existing
/// file is restricted before it is rewritten.
fn write_secret(path: &Path, text: &str) -> Result<(), FleetError> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io(format!("restricting {}", path.display())))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io(format!("writing {}", path.display())))
}

fn random_hex() -> Result<String, FleetError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Blocklist entries held by `source` on the daemon behind `socket` (blocking: the raw API
/// exchange of [`harness::http`]).
pub fn blocked_by(socket: &Path, source: &str) -> Result<Vec<IpNet>, String> {
    let path = format!("/v1/entries?list=block&source={source}&limit=100000");
    let r = harness::http::request(socket, "GET", &path, None)
        .ok_or_else(|| format!("GET {path}: no answer"))?;
    if r.status != 200 {
        return Err(format!("GET {path}: {} {}", r.status, r.text()));
    }
    let v = r.json().ok_or_else(|| format!("GET {path}: not JSON"))?;
    Ok(v["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["entry"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default())
}

/// How a ban spread from node A to node B: per source, when node A banned it and when node B's
/// XDP program first dropped it (its entry in node B's kernel map counted a hit).
#[derive(Debug)]
pub struct Spread {
    sources: Vec<IpAddr>,
    banned_a: HashMap<IpAddr, Instant>,
    dropped_b: HashMap<IpAddr, Instant>,
    hits_b: HashMap<IpAddr, u64>,
}

impl Spread {
    /// Watches `sources` (the attackers node A is expected to ban).
    pub fn new(sources: Vec<IpAddr>) -> Self {
        Self {
            sources,
            banned_a: HashMap::new(),
            dropped_b: HashMap::new(),
            hits_b: HashMap::new(),
        }
    }

    /// Notes the sources node A's blocklist covers; `asked` is when the read began (the ban
    /// was made before the answer, and possibly after the question: the delay measured to node
    /// B's drop is at most one poll of node A too long, never too short).
    pub fn observe_a(&mut self, blocked: &[IpNet], asked: Instant) {
        for addr in &self.sources {
            if !self.banned_a.contains_key(addr) && blocked.iter().any(|n| n.contains(addr)) {
                self.banned_a.insert(*addr, asked);
            }
        }
    }

    /// Reads node B's blocklist entries with their hit counters from its pinned maps, and
    /// notes each source whose entry has counted a drop.
    pub fn observe_b(&mut self, maps: &PinnedMaps, now: Instant) -> Result<(), HarnessError> {
        let entries = maps
            .shield()
            .blocked()
            .map_err(|e| HarnessError::ReadMaps(Box::new(e)))?;
        for addr in &self.sources {
            let hits: u64 = entries
                .iter()
                .filter(|e| e.net.contains(addr))
                .map(|e| e.hits)
                .sum();
            self.hits_b.insert(*addr, hits);
            if hits > 0 {
                self.dropped_b.entry(*addr).or_insert(now);
            }
        }
        Ok(())
    }

    /// The sources watched.
    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// How many node A has banned.
    pub fn banned_a(&self) -> usize {
        self.banned_a.len()
    }

    /// How many node B has dropped.
    pub fn dropped_b(&self) -> usize {
        self.dropped_b.len()
    }

    /// Node B's drop counter of each source at the last [`Spread::observe_b`].
    pub fn hits_b(&self, addr: &IpAddr) -> u64 {
        self.hits_b.get(addr).copied().unwrap_or(0)
    }

    /// Per source node A banned and node B dropped: node B's first drop minus node A's ban
    /// (zero if node B's drop was seen first, which polling alone can cause).
    pub fn delays(&self) -> Vec<(IpAddr, Duration)> {
        let mut out: Vec<_> = self
            .sources
            .iter()
            .filter_map(|a| {
                let (ban, drop) = (self.banned_a.get(a)?, self.dropped_b.get(a)?);
                Some((*a, drop.saturating_duration_since(*ban)))
            })
            .collect();
        out.sort();
        out
    }

    /// Sources node A banned that node B has not dropped (yet).
    pub fn waiting_on_b(&self) -> Vec<IpAddr> {
        let mut m: Vec<IpAddr> = self
            .banned_a
            .keys()
            .filter(|a| !self.dropped_b.contains_key(a))
            .copied()
            .collect();
        m.sort();
        m
    }

    /// Whether every source node A banned waited longer than `limit` for node B (at `now`).
    pub fn overdue(&self, limit: Duration, now: Instant) -> Vec<IpAddr> {
        self.waiting_on_b()
            .into_iter()
            .filter(|a| {
                self.banned_a
                    .get(a)
                    .is_some_and(|t| now.saturating_duration_since(*t) > limit)
            })
            .collect()
    }

    /// `(median, max)` of [`Spread::delays`].
    pub fn delay_summary(&self) -> Option<(Duration, Duration)> {
        let mut d: Vec<Duration> = self.delays().into_iter().map(|(_, d)| d).collect();
        d.sort_unstable();
        Some((*d.get(d.len() / 2)?, *d.last()?))
    }
}

/// The demo's UDP request flood from attacker `atk`'s namespace to `node`, from spoofed
/// `sources` in turn, bounded by `limits` (and `stop`).
pub fn flood_node(
    node: &FleetNode,
    atk: &Host,
    sources: &[IpAddr],
    limits: Limits,
    stop: &AtomicBool,
) -> std::io::Result<GenReport> {
    let target = node.raw_target(atk)?;
    let ns = Netns::open(&atk.netns).map_err(std::io::Error::other)?;
    ns.try_run(|| traffic::udp_flood(&target, sources, limits, stop))
        .map_err(std::io::Error::other)?
}

/// The launch of `validator-node` on node A (banning through node A's API), as the demo and
/// the flood test run it.
pub fn validator_on_a(fleet: &Fleet, binary: &Path, ban_ttl: &str, log: &Path) -> Launch {
    let a = fleet.node_a();
    harness::node::command(binary, a.socket(), ban_ttl, &a.host.netns, log)
}

/// The address the LAPI listens on, from its URL (for display).
pub fn lapi_addr(url: &str) -> Option<SocketAddr> {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_measures_from_the_ban_on_a_to_the_first_drop_on_b() {
        let t0 = Instant::now();
        let a: IpAddr = "198.19.3.1".parse().unwrap();
        let b: IpAddr = "198.19.3.2".parse().unwrap();
        let mut s = Spread::new(vec![a, b]);
        s.observe_a(&["198.19.3.1/32".parse().unwrap()], t0);
        assert_eq!(s.banned_a(), 1);
        assert_eq!(s.waiting_on_b(), vec![a]);
        assert!(s.overdue(Duration::from_secs(1), t0).is_empty());
        assert_eq!(
            s.overdue(Duration::from_secs(1), t0 + Duration::from_secs(2)),
            vec![a]
        );
        s.dropped_b.insert(a, t0 + Duration::from_millis(2500));
        assert_eq!(s.delays(), vec![(a, Duration::from_millis(2500))]);
        assert_eq!(
            s.delay_summary(),
            Some((Duration::from_millis(2500), Duration::from_millis(2500)))
        );
        assert!(s.waiting_on_b().is_empty());
        assert_eq!(
            lapi_addr("http://198.18.0.254:8080/"),
            Some("198.18.0.254:8080".parse().unwrap())
        );
    }
}
