//! The fleet in the lab (issue 15): two nodes, each with its own `groundzero run`, sharing bans
//! through one real CrowdSec LAPI (1.4.6, LAPI only, `groundzero_lab::fleet`).
//!
//! The attack hits node A; node A's validator bans the spoofed sources through node A's API
//! (source `app:validator-node`); node A's daemon pushes the bans to the LAPI (`[crowdsec.push]`);
//! node B's daemon pulls them (`[crowdsec]`). All along, the same sources send node B a stream of
//! requests, so node B's kernel map counts each source's first drop. We assert, within 15 s of
//! each ban on node A: node B's per-entry drop counter of that source moved (its kernel map), and
//! then, with a fresh burst, that none of those packets reach a receiver on node B while an
//! unbanned source's do. Then the fleet is dropped: no namespace, process, pin or directory is
//! left. A second test does the same cleanup check through `groundzero lab up --nodes 2
//! --crowdsec` and `groundzero lab down`, as an operator would.

mod common;

use std::{
    collections::HashMap,
    net::{IpAddr, UdpSocket},
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use groundzero_lab::{
    self as lab,
    fleet::{self, Fleet, FleetSpec, Spread, FLEET_DIR},
    harness::{entries::api_view, node, PinnedMaps},
    netns::Netns,
    peer_protocol::PORT,
    topology::{LabState, HOST_IF, LAB_PIN_DIR, NODE_B_NS, STATE_FILE},
    traffic::{spoofed_sources, Limits},
    PhasePlan,
};

/// The lab has fixed names: one test at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|p| p.into_inner())
}

const APP: &str = "app:validator-node";
/// The bound from a ban on node A to node B's drop.
const SPREAD_LIMIT: Duration = Duration::from_secs(15);

/// A UDP receiver on node B's peer port (both families), counting datagrams per source until
/// dropped.
struct Receiver {
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let ns = Netns::open(NODE_B_NS).unwrap();
        // Made inside node B's namespace; the socket keeps it. `[::]` takes IPv4 too (mapped).
        let socket = ns
            .run(|| UdpSocket::bind(("::", PORT)))
            .expect("binding the receiver on node B");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting the receiver's timeout");
        let counts = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::SeqCst) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    *c.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(from.ip().to_canonical())
                        .or_default() += 1;
                }
            }
        });
        Receiver {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    fn counts(&self) -> HashMap<IpAddr, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `count` requests from each of `sources` to node B, from the first attacker's namespace.
fn burst(fleet: &Fleet, sources: &[IpAddr], count: u64) {
    let atk = fleet.state().attackers[0].clone();
    let n = sources.len() as u64 * count;
    let limits = Limits {
        pps: 2_000,
        max_packets: n,
        max_duration: Duration::from_secs(10),
    };
    let report = fleet::flood_node(
        fleet.node_b(),
        &atk,
        sources,
        limits,
        &AtomicBool::new(false),
    )
    .expect("sending the burst to node B");
    assert_eq!(report.sent, n, "the burst was not sent whole: {report:?}");
}

/// Whether any process still runs with `needle` in its command line or environment-free argv.
fn process_with_arg(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (String::from_utf8_lossy(&cmdline).contains(needle) && lab::topology::process_alive(pid))
            .then_some(pid)
    })
}

#[test]
fn node_b_drops_in_xdp_what_node_a_banned_within_15_s() {
    common::require_root();
    let _one_lab = lab_lock();
    let gz = Path::new(env!("CARGO_BIN_EXE_groundzero"));
    let validator = common::validator_node_binary();
    let spec = FleetSpec {
        peers: 1,
        attackers: 1,
        ..FleetSpec::default()
    };
    let fleet = Fleet::up(&spec, gz, None).unwrap_or_else(|e| panic!("fleet up: {e:?}"));
    let record = fleet.state().fleet.clone().expect("the fleet is recorded");
    let daemon_pids = fleet.daemon_pids();
    let validator_log = Path::new(FLEET_DIR).join("validator.log");
    let _validator = node::start(
        &fleet::validator_on_a(&fleet, &validator, "2m", &validator_log).die_with_parent(),
        None,
    )
    .unwrap_or_else(|e| panic!("the validator node did not start: {e}"));
    let receiver = Receiver::start();

    // The flood only (one attacker): 24 + 8 spoofed sources, well over the validator's 200
    // requests/s per source each.
    let plan = PhasePlan {
        duration: Duration::from_secs(8),
        legit_pps: 10,
        flood_pps: 20_000,
        flood_sources_v4: 24,
        flood_sources_v6: 8,
        source_block: 5,
        syn_pps: 0,
        malformed_pps: 0,
        invalid_pps: 0,
        ..PhasePlan::default()
    };
    let sources = plan.flood_sources();

    // Before any ban, node B lets the sources through: the path to its receiver works.
    burst(&fleet, &sources, 2);
    assert!(
        common::wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            let c = receiver.counts();
            sources.iter().all(|s| c.get(s).copied().unwrap_or(0) >= 2)
        }),
        "before any ban, node B's receiver should get every source's requests: {:?}",
        receiver.counts()
    );

    // The attack on node A, with a stream from the same sources to node B all along.
    let maps = PinnedMaps::open(fleet.node_b().pin_dir()).expect("node B's pinned maps");
    let mut spread = Spread::new(sources.clone());
    let a_socket = fleet.node_a().socket().to_path_buf();
    let poll = |spread: &mut Spread| {
        let asked = Instant::now();
        let blocked = fleet::blocked_by(&a_socket, APP).expect("node A's bans");
        spread.observe_a(&blocked, asked);
        spread
            .observe_b(&maps, Instant::now())
            .expect("node B's maps");
    };
    let stream_stop = AtomicBool::new(false);
    let atk = fleet.state().attackers[0].clone();
    let stream = Limits::for_duration(640, plan.duration + SPREAD_LIMIT + Duration::from_secs(5));
    std::thread::scope(|scope| {
        let sender =
            scope.spawn(|| fleet::flood_node(fleet.node_b(), &atk, &sources, stream, &stream_stop));
        let mut last = Instant::now();
        let stop = AtomicBool::new(false);
        lab::run_phase(fleet.state(), &plan, &stop, |_| {
            if last.elapsed() >= Duration::from_millis(100) {
                last = Instant::now();
                poll(&mut spread);
            }
        })
        .expect("the attack on node A");
        let deadline = Instant::now() + SPREAD_LIMIT + Duration::from_secs(2);
        while !spread.waiting_on_b().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            poll(&mut spread);
        }
        poll(&mut spread);
        stream_stop.store(true, Ordering::SeqCst);
        let sent = sender.join().unwrap().expect("the stream to node B");
        println!("stream to node B: {sent:?}");
    });
    println!(
        "node A banned {}/{}; node B dropped {}; delays {:?}",
        spread.banned_a(),
        sources.len(),
        spread.dropped_b(),
        spread.delays()
    );
    let node_a_log = std::fs::read_to_string(&fleet.node_a().record.log).unwrap_or_default();
    let node_b_log = std::fs::read_to_string(&fleet.node_b().record.log).unwrap_or_default();
    assert_eq!(
        spread.banned_a(),
        sources.len(),
        "node A's validator should ban every flooding source; node A's log:\n{node_a_log}"
    );
    assert!(
        spread.waiting_on_b().is_empty(),
        "node B never dropped {:?}; node A's log:\n{node_a_log}\nnode B's log:\n{node_b_log}",
        spread.waiting_on_b()
    );
    for (addr, delay) in spread.delays() {
        assert!(
            delay <= SPREAD_LIMIT,
            "node B dropped {addr} {delay:?} after node A banned it (limit {SPREAD_LIMIT:?})"
        );
    }

    // Node A pushed them: the LAPI holds a ban of each, origin `groundzero`, scope `Ip`.
    let live = fleet
        .lapi()
        .expect("the LAPI")
        .live_decisions()
        .expect("cscli decisions list");
    for addr in &sources {
        assert!(
            live.iter().any(|d| d["origin"] == "groundzero"
                && d["scope"] == "Ip"
                && d["type"] == "ban"
                && d["value"].as_str().and_then(|v| v.parse::<IpAddr>().ok()) == Some(*addr)),
            "the LAPI holds no ban of {addr} pushed by groundzero: {live:?}"
        );
    }
    // Node B holds them because of CrowdSec, not by itself (it runs no validator).
    let view = api_view(fleet.node_b().socket()).expect("node B's entries");
    for addr in &sources {
        let holders: Vec<&String> = view
            .iter()
            .filter(|((list, net), _)| list == "block" && net.contains(addr))
            .flat_map(|(_, h)| h.keys())
            .collect();
        assert!(
            !holders.is_empty() && holders.iter().all(|s| *s == "crowdsec:groundzero"),
            "node B should hold {addr} from CrowdSec only (origin groundzero): {holders:?}"
        );
    }

    // A fresh burst: every banned source's packets are dropped by node B's XDP program (its
    // per-entry counters move by the burst, the receiver gets nothing), while an unbanned
    // source's reach the receiver.
    let unbanned = spoofed_sources(2, 2, 9);
    std::thread::sleep(Duration::from_millis(300)); // the stream's last packets have landed
    let before = receiver.counts();
    let mut hits_before = Spread::new(sources.clone());
    hits_before.observe_b(&maps, Instant::now()).unwrap();
    burst(&fleet, &sources, 5);
    burst(&fleet, &unbanned, 5);
    assert!(
        common::wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            let c = receiver.counts();
            unbanned.iter().all(|s| c.get(s).copied().unwrap_or(0) >= 5)
        }),
        "the unbanned sources' requests should reach node B: {:?}",
        receiver.counts()
    );
    std::thread::sleep(Duration::from_millis(300));
    let after = receiver.counts();
    let mut hits_after = Spread::new(sources.clone());
    hits_after.observe_b(&maps, Instant::now()).unwrap();
    for addr in &sources {
        assert_eq!(
            after.get(addr),
            before.get(addr),
            "requests from {addr}, banned on node A, reached node B"
        );
        let moved = hits_after.hits_b(addr) - hits_before.hits_b(addr);
        assert!(
            moved >= 5,
            "node B's kernel map should count the 5 drops of {addr}: it moved by {moved}"
        );
    }

    drop(maps);
    drop(receiver);
    drop(_validator);
    drop(fleet);
    assert!(
        lab::topology::lab_namespaces().is_empty(),
        "namespaces left: {:?}",
        lab::topology::lab_namespaces()
    );
    assert!(
        !Path::new(LAB_PIN_DIR).exists(),
        "pins left under {LAB_PIN_DIR}"
    );
    assert!(!Path::new(FLEET_DIR).exists(), "{FLEET_DIR} left");
    assert!(!record.lapi_dir.exists(), "the LAPI's directory left");
    assert!(!Path::new(STATE_FILE).exists(), "{STATE_FILE} left");
    for pid in daemon_pids {
        assert!(
            !lab::topology::process_alive(pid),
            "daemon {pid} still runs"
        );
    }
    assert_eq!(
        process_with_arg(&record.lapi_dir.display().to_string()),
        None,
        "crowdsec still runs"
    );
}

#[test]
fn lab_up_with_crowdsec_runs_until_lab_down_removes_everything() {
    common::require_root();
    let _one_lab = lab_lock();
    let gz = env!("CARGO_BIN_EXE_groundzero");
    /// Whatever happens below, the lab does not outlive the test.
    struct DownOnDrop(&'static str);
    impl Drop for DownOnDrop {
        fn drop(&mut self) {
            let _ = Command::new(self.0).args(["lab", "down"]).output();
        }
    }
    let _down = DownOnDrop(gz);
    let up = Command::new(gz)
        .args([
            "lab",
            "up",
            "--nodes",
            "2",
            "--crowdsec",
            "--peers",
            "1",
            "--attackers",
            "1",
        ])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "lab up failed: {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    // `lab up` has exited: what it started runs on.
    let state = LabState::load().unwrap().expect("the lab's state");
    let record = state.fleet.clone().expect("the fleet is recorded");
    let lapi_pid = record.lapi_pid.expect("the LAPI's pid is recorded");
    assert!(
        lab::topology::process_alive(lapi_pid),
        "the LAPI stopped with `lab up`"
    );
    assert_eq!(record.nodes.len(), 2);
    for n in &record.nodes {
        let health = lab::harness::http::request(&n.socket, "GET", "/v1/health", None);
        assert_eq!(
            health.map(|r| r.status),
            Some(200),
            "{}'s daemon should answer after `lab up` exited",
            n.name
        );
    }
    // Node B enforces what the LAPI holds: a decision made with cscli reaches its kernel map.
    let cscli = lab::crowdsec::Install::locate().unwrap().cscli;
    let out = Command::new(&cscli)
        .arg("-c")
        .arg(record.lapi_dir.join("config.yaml"))
        .args([
            "decisions",
            "add",
            "--ip",
            "198.19.77.7",
            "--duration",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let maps = PinnedMaps::open(&record.nodes[1].pin_dir).unwrap();
    let target: IpAddr = "198.19.77.7".parse().unwrap();
    assert!(
        common::wait_for(Duration::from_secs(15), Duration::from_millis(200), || {
            maps.shield()
                .blocked()
                .is_ok_and(|b| b.iter().any(|e| e.net.contains(&target)))
        }),
        "node B's kernel map never got the LAPI's decision"
    );
    drop(maps);

    let status = Command::new(gz).args(["lab", "status"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("node-a daemon") && text.contains("node-b daemon"),
        "{text}"
    );
    assert_eq!(text.matches(": healthy").count(), 2, "{text}");
    assert!(
        text.contains("CrowdSec LAPI http://198.18.0.254:"),
        "{text}"
    );

    let down = Command::new(gz).args(["lab", "down"]).output().unwrap();
    let text = String::from_utf8_lossy(&down.stdout);
    assert!(
        down.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&down.stderr)
    );
    println!("{text}");
    assert!(lab::topology::lab_namespaces().is_empty(), "{text}");
    assert!(!Path::new(LAB_PIN_DIR).exists(), "pins left: {text}");
    assert!(!Path::new(FLEET_DIR).exists(), "{FLEET_DIR} left: {text}");
    assert!(
        !record.lapi_dir.exists(),
        "the LAPI's directory left: {text}"
    );
    assert!(!Path::new(STATE_FILE).exists(), "{STATE_FILE} left");
    assert!(
        common::wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            !lab::topology::process_alive(lapi_pid)
        }),
        "the LAPI (pid {lapi_pid}) still runs after lab down"
    );
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(HOST_IF),
        "the host link is left"
    );
}
