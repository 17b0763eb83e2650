//! The lab under flood, end to end: the daemon protects the node's interface, the example
//! validator node bans peers through the daemon's API, and legitimate peers keep being answered.
//!
//! One scenario, run twice on fresh spoofed sources: with the daemon in monitor mode (the shield
//! off: bans are recorded, nothing is dropped), then enforcing. Per phase: 3 peers × 3 clients at
//! 50 requests/s for 10 s; from 1 s to 9 s a 40,000 pps flood of spoofed `GET` requests from 32
//! sources, a 2,000 SYN/s flood, a malformed trickle and an attacker sending invalid messages.
//!
//! What we measured on the 2-core development VM (debug build), which the thresholds below
//! leave room around:
//! - shield on: 100.00% answered, p99 6–8 ms; all 33 attackers the node can see banned
//!   0.26–0.34 s after the attack began (with 64 sources, as in the demo: 65 in 0.3–0.6 s);
//! - shield off: 99.6–99.8% answered (only thanks to retransmissions: UDP clients retry every
//!   100 ms, 5 times), p99 about 210 ms (100–420 ms with 64 sources): the node's socket
//!   overflows and requests are lost.
//!
//! So we assert: with the shield, ≥ 99.9% answered and every attacker banned within 5 s; without,
//! a real degradation: under 99% answered or a p99 of at least 50 ms (a lost request's first
//! retransmission is at 100 ms), and at least 5× the shielded p99 or half a point more lost.
//!
//! The lab's namespaces are removed when the test ends, passes or panics (`Lab` removes itself
//! on drop, stopping the processes inside).

mod common;

use std::{
    net::IpAddr,
    path::Path,
    process::Command,
    sync::{atomic::AtomicBool, Mutex},
    time::{Duration, Instant},
};

use common::daemon::TestDaemon;
use groundzero_lab::{
    self as lab,
    harness::{node, Launch, Supervised},
    topology::{LAB_PIN_DIR, NODE_IF, NODE_NS, STATE_FILE},
    watch::{BanClock, XdpTally},
    Lab, LabSpec, PhasePlan, PhaseReport,
};
use hyper::Method;
use nix::sys::signal::Signal;
use serde_json::json;

/// The lab has fixed names: one test at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lab_lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|p| p.into_inner())
}

const APP: &str = "app:validator-node";

/// The validator node in the lab's node namespace, up once it says so; stopped on drop.
fn start_node(socket: &Path, log: &Path) -> Supervised {
    let bin = common::validator_node_binary();
    node::start(&node::command(&bin, socket, "2m", NODE_NS, log), None)
        .unwrap_or_else(|e| panic!("the validator node did not start: {e}"))
}

struct Measured {
    report: PhaseReport,
    clock: BanClock,
    xdp: XdpTally,
}

fn phase(
    daemon: &TestDaemon,
    state: &lab::LabState,
    plan: &PhasePlan,
    rt: &tokio::runtime::Runtime,
) -> Measured {
    let client = daemon.client();
    let before = rt.block_on(XdpTally::read(&client)).unwrap();
    let mut expected = plan.flood_sources();
    expected.push(IpAddr::from(state.attackers[2].v4)); // the sender of invalid messages
    let mut clock = BanClock::new(expected, Instant::now() + plan.attack_delay);
    let stop = AtomicBool::new(false);
    let mut last = Instant::now();
    let report = lab::run_phase(state, plan, &stop, |_| {
        if last.elapsed() >= Duration::from_millis(100) {
            last = Instant::now();
            rt.block_on(clock.poll(&client, APP)).unwrap();
        }
    })
    .unwrap();
    rt.block_on(clock.poll(&client, APP)).unwrap();
    let xdp = rt.block_on(XdpTally::read(&client)).unwrap().since(&before);
    Measured { report, clock, xdp }
}

fn describe(name: &str, m: &Measured) -> String {
    let legit = m.report.legit_total();
    format!(
        "{name}: {:.2}% answered ({}/{}), p50 {:?}, p99 {:?}; {} attack packets; XDP dropped {}, would drop {}; {}/{} attackers banned, all after {:?}",
        100.0 * legit.success(),
        legit.answered,
        legit.requests,
        legit.latency(0.5),
        legit.latency(0.99),
        m.report.attack_packets(),
        m.xdp.dropped,
        m.xdp.would_drop,
        m.clock.banned(),
        m.clock.expected(),
        m.clock.all_banned_after()
    )
}

#[test]
fn legit_peers_are_served_under_flood_with_the_shield_and_degrade_without() {
    common::require_root();
    let _one_lab = lab_lock();
    let lab = Lab::up(LabSpec::default()).expect("building the lab");
    let state = lab.state().clone();
    let node_ns = lab.node().unwrap();
    let daemon = TestDaemon::start_in(
        &node_ns,
        &format!("interfaces = [\"{NODE_IF}\"]\nmonitor = true\n"),
    );
    let _node = start_node(&daemon.socket, &daemon.dir.join("node.log"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Half the demo's spoofed sources: the node bans a source once it *reads* over 200
    // requests/s from it, so with N sources it must read 200·N/s of the flood. 32 sources ask
    // 6,400/s of a debug build that shares 2 cores with the flood; 64 asked 12,800/s, which a
    // slow CI machine might not reach, and then nobody would be banned at all.
    let plan = |block| PhasePlan {
        duration: Duration::from_secs(10),
        source_block: block,
        flood_sources_v4: 24,
        flood_sources_v6: 8,
        ..PhasePlan::default()
    };
    let off = phase(&daemon, &state, &plan(1), &rt);
    println!("{}", describe("shield off (monitor)", &off));
    daemon.ok(Method::PUT, "/v1/monitor", Some(json!({"enabled": false})));
    std::thread::sleep(Duration::from_millis(500));
    let on = phase(&daemon, &state, &plan(2), &rt);
    println!("{}", describe("shield on", &on));

    // With the shield: served, and every attacker the node can see is banned quickly.
    let (on_legit, off_legit) = (on.report.legit_total(), off.report.legit_total());
    assert!(
        on_legit.success() >= 0.999,
        "with the shield, legitimate peers must be answered ≥ 99.9% of the time: {}",
        describe("on", &on)
    );
    let banned_after = on.clock.all_banned_after().unwrap_or_else(|| {
        panic!(
            "not every attacker was banned; missing {:?}",
            on.clock.missing()
        )
    });
    assert!(
        banned_after <= Duration::from_secs(5),
        "attackers must be banned within 5 s of the attack's start: {banned_after:?}"
    );
    assert!(
        on.xdp.dropped > on.report.attack_packets() / 2,
        "XDP should have dropped most of the attack: {}",
        describe("on", &on)
    );
    // The same bans were made without the shield, but nothing was dropped.
    assert_eq!(off.xdp.dropped, 0, "monitor mode drops nothing");
    assert!(off.xdp.would_drop > 0 && off.clock.banned() > 0);

    // Without the shield: a real degradation.
    let p99 = |r: &lab::traffic::LegitReport| r.latency(0.99).unwrap_or(Duration::MAX);
    let degraded = off_legit.success() < 0.99 || p99(&off_legit) >= Duration::from_millis(50);
    // Worse than with the shield, by far: a 5× p99, or (should the shielded p99 itself reach a
    // retransmission, the seconds before the bans land being slow) half a point more lost.
    let worse =
        p99(&off_legit) >= p99(&on_legit) * 5 || off_legit.success() + 0.005 <= on_legit.success();
    assert!(
        degraded && worse,
        "without the shield the flood must measurably hurt legitimate peers:\n{}\n{}",
        describe("off", &off),
        describe("on", &on)
    );
}

/// What a crash leaves, made with the real binaries: `groundzero lab up` (its process, the lab's
/// owner, is gone when it returns), the daemon attached in the node's namespace with pins under
/// the lab's pin dir and then SIGKILLed (no destructor runs), and a process left running inside.
#[test]
fn lab_down_cleans_up_after_a_crash() {
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
        .args(["lab", "up", "--peers", "1", "--attackers", "1"])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "lab up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let work = std::env::temp_dir().join(format!("gz-lab-crash-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let mut daemon = Launch::new("the daemon", gz)
        .args(["run", "--iface", NODE_IF, "--pin-dir", LAB_PIN_DIR])
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--socket")
        .arg(work.join("api.sock"))
        .in_netns(NODE_NS)
        .log_to(&work.join("daemon.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lab::status().is_ok_and(|s| s.pins > 0 && work.join("api.sock").exists()) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not attach in the lab"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut sleeper = Launch::new("a process in the lab", "sleep")
        .arg("120")
        .in_netns(NODE_NS)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let sleeper_pid = sleeper.pid();
    // SIGKILL: the crash under test.
    daemon
        .stop_with(Signal::SIGKILL, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    let left = lab::status().unwrap();
    assert_eq!(left.namespaces.len(), 4, "{left:?}"); // bridge, node, peer1, atk1
    assert!(left.pins > 0, "the crash should have left pins: {left:?}");
    // `lab up` from the CLI leaves the lab to outlive it: no owner process is recorded.
    assert_eq!(left.owner_alive, None, "{left:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .args(["lab", "down"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lab down failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");

    assert!(lab::topology::lab_namespaces().is_empty(), "{text}");
    assert!(
        !Path::new(LAB_PIN_DIR).exists(),
        "pins left under {LAB_PIN_DIR}"
    );
    assert!(!Path::new(STATE_FILE).exists(), "{STATE_FILE} left");
    // The process inside the lab was stopped (it may linger as a zombie of init for a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    // Our own child: reaped here once `lab down` has killed it.
    while sleeper.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "process {sleeper_pid} still runs in the lab"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(" gzl"),
        "lab links left in the root namespace"
    );
    let _ = std::fs::remove_dir_all(&work);
}
