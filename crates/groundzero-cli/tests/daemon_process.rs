//! The real `groundzero run` process: one daemon per pin directory and per state directory (a
//! second one refuses and touches nothing), SIGHUP reloads applied without a gap, and the
//! administrator's own address never rate-limited or banned.
//!
//! Every daemon runs in the node namespace of a veth pair of its test and filters that
//! namespace's end; all traffic is between the test's namespaces (198.18.0.0/15), bounded.
mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use common::{
    child::{self, ChildDaemon, UdpTally, Workdir},
    topology::{Topology, BAD, FLOOD, GOOD, NODE},
    wait_for,
};
use groundzero::{IpNet, Shield, ShieldOptions};
use nix::sys::signal::Signal;
use serde_json::json;

/// The pinned maps of a running daemon, opened the way an operator's tool would.
fn pinned(pin_dir: &Path) -> Shield {
    Shield::load(ShieldOptions {
        pin_dir: Some(pin_dir.to_path_buf()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("opening the pinned maps in {}: {e:?}", pin_dir.display()))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Every blocked entry in the kernel maps.
fn kernel_blocked(shield: &Shield) -> Vec<IpNet> {
    shield
        .blocked()
        .unwrap()
        .into_iter()
        .map(|e| e.net)
        .collect()
}

fn node_addr(port: u16) -> SocketAddr {
    SocketAddr::new(NODE[0].parse().unwrap(), port)
}

/// A second daemon refused for `what`: it exits non-zero within 10 s and its stderr says why,
/// naming `pid` when `pid` is given.
fn assert_refused(second: &mut ChildDaemon, what: &str, expect: &str, pid: Option<u32>) {
    let status = second
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "{what}: the second daemon still runs after 10 s; log:\n{}",
                second.log_text()
            )
        });
    let log = second.log_text();
    assert!(
        !status.success(),
        "{what}: exited with {status}; log:\n{log}"
    );
    assert!(
        log.contains(expect),
        "{what}: stderr lacks `{expect}`:\n{log}"
    );
    if let Some(pid) = pid {
        assert!(
            log.contains(&format!("(pid {pid})")),
            "{what}: stderr does not name the first daemon's pid {pid}:\n{log}"
        );
    }
}

#[test]
fn a_second_daemon_on_the_same_pins_refuses_and_touches_nothing() {
    common::require_root();
    let topo = Topology::new("pa");
    let mut work = Workdir::new("one");
    let dev = topo.node_if.clone();
    let pin_a = work.pin_dir("a");
    let (state_a, socket_a) = (work.path("state-a"), work.path("a.sock"));
    let config_a = work.path("a.toml");
    std::fs::write(
        &config_a,
        child::config_text(&[&dev], &pin_a, &state_a, &socket_a, ""),
    )
    .unwrap();
    let mut a = ChildDaemon::start(&config_a, &socket_a, &work.path("a.log"), Some(&topo.node));
    let r = a.request("POST", "/v1/block", Some(&json!({"entries": [BAD[0]]})));
    assert_eq!(r.status, 200, "{}", r.text());
    let prog = child::xdp_prog_id(&topo.node, &dev).expect("A's XDP program on its interface");

    // Same pin dir and interface, other state dir and socket: were the lock missing, B would
    // swap its own program into A's link.
    let (state_b, socket_b) = (work.path("state-b"), work.path("b.sock"));
    let config_b = work.path("b.toml");
    std::fs::write(
        &config_b,
        child::config_text(&[&dev], &pin_a, &state_b, &socket_b, ""),
    )
    .unwrap();
    let mut b = ChildDaemon::spawn(&config_b, &socket_b, &work.path("b.log"), Some(&topo.node));
    assert_refused(
        &mut b,
        "same pin dir",
        "is in use by another groundzero daemon",
        Some(a.pid()),
    );
    assert!(
        b.log_text().contains(&pin_a.display().to_string()),
        "the refusal names the pin dir"
    );
    assert!(!socket_b.exists(), "the refused daemon left a socket");

    // Same state dir, other pin dir: refused before it creates any pin.
    let pin_c = work.pin_dir("c");
    let socket_c = work.path("c.sock");
    let config_c = work.path("c.toml");
    std::fs::write(
        &config_c,
        child::config_text(&[&dev], &pin_c, &state_a, &socket_c, ""),
    )
    .unwrap();
    let mut c = ChildDaemon::spawn(&config_c, &socket_c, &work.path("c.log"), Some(&topo.node));
    assert_refused(
        &mut c,
        "same state dir",
        "is in use by another groundzero daemon",
        Some(a.pid()),
    );
    assert!(
        !pin_c.exists(),
        "the daemon refused on the state dir still created its pin dir"
    );
    assert!(!socket_c.exists(), "the refused daemon left a socket");

    // Other pin and state dirs (no interface), but A's socket: A's socket answers, so it is
    // neither removed nor taken over.
    let pin_d = work.pin_dir("d");
    let config_d = work.path("d.toml");
    std::fs::write(
        &config_d,
        child::config_text(&[], &pin_d, &work.path("state-d"), &socket_a, ""),
    )
    .unwrap();
    let mut d = ChildDaemon::spawn(&config_d, &socket_a, &work.path("d.log"), Some(&topo.node));
    assert_refused(
        &mut d,
        "same socket",
        "another daemon answers on this socket",
        None,
    );

    // A is untouched: running, answering, same program on its interface, its lock file still
    // names it, its journal and socket still there, and its block still drops.
    assert!(a.exited().is_none(), "A is gone; log:\n{}", a.log_text());
    assert!(a.healthy(), "A no longer answers on its socket");
    assert_eq!(
        child::xdp_prog_id(&topo.node, &dev),
        Some(prog),
        "A's XDP program was replaced or detached"
    );
    assert_eq!(
        std::fs::read_to_string(state_a.join("lock"))
            .unwrap()
            .trim(),
        a.pid().to_string(),
        "A's lock file was rewritten"
    );
    assert!(socket_a.exists(), "A's socket was removed");
    assert!(
        state_a.join(groundzero_daemon::journal::FILE_NAME).exists(),
        "A's journal is gone"
    );
    let entries = a
        .request("GET", "/v1/entries?list=block", None)
        .json()
        .unwrap();
    assert!(
        entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"] == format!("{}/32", BAD[0])),
        "A's block is gone: {entries}"
    );

    let rx = UdpTally::bind(&topo.node, node_addr(9100));
    let dropped_before = a.interface_counter(&dev, "blocked_exact");
    topo.send(BAD[0], rx.addr, 20);
    topo.send(GOOD[0], rx.addr, 5);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || rx
            .from(GOOD[0])
            == 5),
        "the good source's packets did not all arrive: {}",
        rx.from(GOOD[0])
    );
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(50), || a
            .interface_counter(&dev, "blocked_exact")
            - dropped_before
            == 20),
        "XDP dropped {} of the 20 blocked packets",
        a.interface_counter(&dev, "blocked_exact") - dropped_before
    );
    assert_eq!(rx.from(BAD[0]), 0, "a blocked source's packet got through");
}

/// Sets the flag on drop, so a failing assertion inside a scope stops the flood threads at
/// once instead of letting them run out their time.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Sends SIGHUP and waits (up to 10 s) until the log has one more line containing `marker`.
fn hup_and_wait(d: &ChildDaemon, marker: &str) {
    let before = d.log_text().matches(marker).count();
    d.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), Duration::from_millis(50), || d
            .log_text()
            .matches(marker)
            .count()
            > before),
        "no `{marker}` in the log within 10 s of SIGHUP:\n{}",
        d.log_text()
    );
}

#[test]
fn sighup_reloads_guard_feeds_and_ratelimit_without_a_gap() {
    common::require_root();
    let topo = Topology::new("pb");
    let mut work = Workdir::new("hup");
    let dev = topo.node_if.clone();
    let pin = work.pin_dir("a");
    let (state, socket, config) = (
        work.path("state"),
        work.path("api.sock"),
        work.path("gz.toml"),
    );
    let text = |extra: &str| child::config_text(&[&dev], &pin, &state, &socket, extra);
    std::fs::write(&config, text("")).unwrap();
    let mut d = ChildDaemon::start(&config, &socket, &work.path("gz.log"), Some(&topo.node));
    let pid = d.pid();

    let x = BAD[0];
    let r = d.request("POST", "/v1/block", Some(&json!({"entries": [x]})));
    assert_eq!(r.status, 200, "blocking {x}: {}", r.text());
    let prog = child::xdp_prog_id(&topo.node, &dev).expect("the XDP program on the interface");
    let kernel = pinned(&pin);
    let x_net = net(&format!("{x}/32"));
    assert!(kernel_blocked(&kernel).contains(&x_net));
    assert_eq!(kernel.config().unwrap().rate_pps, 0, "no rate limit yet");

    let (y, protected) = ("198.18.9.9", "198.18.9.0/24");
    let feed_entries = [net("198.18.10.0/24"), net("198.18.11.11/32")];
    let feed_file = work.path("feed.txt");
    std::fs::write(&feed_file, "198.18.10.0/24\n198.18.11.11\n").unwrap();
    let reloaded = text(&format!(
        "[guard]\nprotected = [\"{protected}\"]\n\
         [ratelimit]\nrate = 5000\nburst = 10000\n\
         [[feed]]\nname = \"local\"\nurl = {feed_file:?}\nrefresh = \"1h\"\n"
    ));
    let block_y = |d: &ChildDaemon| {
        d.request("POST", "/v1/block", Some(&json!({"entries": [y]})))
            .status
    };

    let rx = UdpTally::bind(&topo.node, node_addr(9200));
    let dropped_before = d.interface_counter(&dev, "blocked_exact");
    let flood_socket = child::sender(&topo.peer, x);
    let (stop, progress) = (AtomicBool::new(false), child::Sent::new(0));
    // Waits until the flood has sent `n` more packets than `from` (up to 5 s).
    let flooded = |from: u64, n: u64| {
        assert!(
            wait_for(Duration::from_secs(5), Duration::from_millis(10), || {
                progress.load(Ordering::SeqCst) >= from + n
            }),
            "the flood stalled"
        );
    };
    let sent = std::thread::scope(|s| {
        // The blocked source floods (500 pps, bounded to 40 s) from before the first reload
        // to after the last.
        let flood = s.spawn(|| {
            child::paced_flood(
                &flood_socket,
                rx.addr,
                10,
                Duration::from_millis(20),
                Duration::from_secs(40),
                &stop,
                &progress,
            )
        });
        let _stop = StopOnDrop(&stop);
        flooded(0, 50);

        // 1. Protection, a feed and a rate limit added.
        std::fs::write(&config, &reloaded).unwrap();
        hup_and_wait(&d, "reload: configuration applied");
        assert!(
            wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
                let blocked = kernel_blocked(&kernel);
                feed_entries.iter().all(|e| blocked.contains(e))
            }),
            "the feed's entries are not in the kernel map: {:?}; log:\n{}",
            kernel_blocked(&kernel),
            d.log_text()
        );
        assert_eq!(
            block_y(&d),
            409,
            "blocking {y} inside the newly protected {protected} was not refused"
        );
        let c = kernel.config().unwrap();
        assert_eq!((c.rate_pps, c.rate_burst), (5000, 10000), "rate limit");
        assert_eq!(child::xdp_prog_id(&topo.node, &dev), Some(prog));
        assert!(d.exited().is_none(), "the daemon exited on SIGHUP");
        assert_eq!(d.pid(), pid);
        assert!(kernel_blocked(&kernel).contains(&x_net));

        // 2. A bad file: logged, and everything that ran stays.
        std::fs::write(&config, "interfaces = [\"unterminated\"\n[guard\n").unwrap();
        hup_and_wait(&d, "not reloaded, the running config stays");
        assert!(
            d.exited().is_none(),
            "a bad config on SIGHUP ended the daemon"
        );
        assert!(d.healthy());
        assert_eq!(block_y(&d), 409, "the protection went with the bad reload");
        let blocked = kernel_blocked(&kernel);
        assert!(
            feed_entries.iter().all(|e| blocked.contains(e)) && blocked.contains(&x_net),
            "entries went with the bad reload: {blocked:?}"
        );
        assert_eq!(kernel.config().unwrap().rate_pps, 5000);
        assert_eq!(child::xdp_prog_id(&topo.node, &dev), Some(prog));

        // 3. Back to the first file: the feed's entries go, the protection and limit too.
        std::fs::write(&config, text("")).unwrap();
        hup_and_wait(&d, "reload: configuration applied");
        assert!(
            wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
                let blocked = kernel_blocked(&kernel);
                !feed_entries.iter().any(|e| blocked.contains(e))
            }),
            "the removed feed's entries stay in the kernel map: {:?}",
            kernel_blocked(&kernel)
        );
        assert_eq!(kernel.config().unwrap().rate_pps, 0);
        assert_eq!(block_y(&d), 200, "{y} is no longer protected");
        assert!(kernel_blocked(&kernel).contains(&x_net));
        assert_eq!(child::xdp_prog_id(&topo.node, &dev), Some(prog));
        assert_eq!(
            std::fs::read_to_string(state.join("lock")).unwrap().trim(),
            pid.to_string()
        );

        flooded(progress.load(Ordering::SeqCst), 50);
        stop.store(true, Ordering::SeqCst);
        flood.join().unwrap()
    });

    println!("the blocked source sent {sent} packets through three reloads");
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(50), || d
            .interface_counter(&dev, "blocked_exact")
            - dropped_before
            == sent),
        "XDP dropped {} of the {sent} packets of the blocked source",
        d.interface_counter(&dev, "blocked_exact") - dropped_before
    );
    topo.send(GOOD[0], rx.addr, 5);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || rx
            .from(GOOD[0])
            == 5),
        "the receiver missed the good source's packets"
    );
    assert_eq!(
        rx.from(x),
        0,
        "the blocked source's flood leaked during the reloads"
    );
}

#[test]
fn the_admins_address_is_never_rate_limited_or_banned() {
    common::require_root();
    const SSH_PORT: u16 = 2222;
    let topo = Topology::new("pc");
    let mut work = Workdir::new("admin");
    let dev = topo.node_if.clone();
    let pin = work.pin_dir("a");
    let (socket, config) = (work.path("api.sock"), work.path("gz.toml"));
    std::fs::write(
        &config,
        child::config_text(
            &[&dev],
            &pin,
            &work.path("state"),
            &socket,
            &format!("[ratelimit]\nrate = 20\nburst = 20\n[guard]\nssh_port = {SSH_PORT}\n"),
        ),
    )
    .unwrap();

    // The "SSH server" in the node namespace; accepted connections are kept open.
    let listener = topo
        .node
        .run(|| TcpListener::bind(node_addr(SSH_PORT)))
        .expect("listening on the SSH port");
    let accepted = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let d = ChildDaemon::start(&config, &socket, &work.path("gz.log"), Some(&topo.node));

    // The admin logs in from GOOD (the peer's first address, so the kernel's source choice).
    let admin = GOOD[0];
    let session = topo
        .peer
        .run(|| TcpStream::connect_timeout(&node_addr(SSH_PORT), Duration::from_secs(5)))
        .expect("the admin's TCP session");
    assert_eq!(
        session.local_addr().unwrap().ip(),
        admin.parse::<IpAddr>().unwrap()
    );
    let mut server_side = accepted.join().unwrap().expect("accepting the session");

    // The exempt maps are not pinned (only the lists, counters and config are): they are read
    // through the running program's own map ids.
    let prog = child::xdp_prog_id(&topo.node, &dev).expect("the XDP program on the interface");
    let admin_net = net(&format!("{admin}/32"));
    assert!(
        wait_for(Duration::from_secs(8), Duration::from_millis(100), || {
            child::rate_exempt_v4_of(prog).contains(&admin_net)
        }),
        "the admin's address is not rate-exempt after the guard's refresh: {:?}",
        child::rate_exempt_v4_of(prog)
    );
    let kernel = pinned(&pin);
    assert_eq!(
        kernel.config().unwrap().rate_pps,
        20,
        "the rate limit is on"
    );

    // Both flood 1000 pps for 2 s (50× the limit): the admin from the session's address, an
    // attacker from FLOOD.
    let rx = UdpTally::bind(&topo.node, node_addr(9300));
    let (admin_tx, attacker_tx) = (
        child::sender(&topo.peer, admin),
        child::sender(&topo.peer, FLOOD[0]),
    );
    let (stop, progress) = (AtomicBool::new(false), child::Sent::new(0));
    let flood = |socket: &std::net::UdpSocket| {
        child::paced_flood(
            socket,
            rx.addr,
            20,
            Duration::from_millis(20),
            Duration::from_secs(2),
            &stop,
            &progress,
        )
    };
    let (admin_sent, attacker_sent) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let a = s.spawn(|| flood(&admin_tx));
        let b = s.spawn(|| flood(&attacker_tx));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(admin_sent >= 1000 && attacker_sent >= 1000);

    let attacker_net = net(&format!("{}/32", FLOOD[0]));
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
            kernel_blocked(&kernel).contains(&attacker_net)
        }),
        "the attacker was not auto-banned: {:?}; log:\n{}",
        kernel_blocked(&kernel),
        d.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || rx
            .from(admin)
            >= admin_sent * 98 / 100),
        "the node received only {} of the admin's {admin_sent} packets",
        rx.from(admin)
    );
    assert!(
        rx.from(FLOOD[0]) < attacker_sent / 2,
        "the rate limit did not hold the attacker ({} of {attacker_sent} came through), \
         so the admin's numbers prove nothing",
        rx.from(FLOOD[0])
    );
    println!(
        "admin: {} of {admin_sent} received; attacker: {} of {attacker_sent}",
        rx.from(admin),
        rx.from(FLOOD[0])
    );
    let blocked = kernel_blocked(&kernel);
    assert!(
        !blocked
            .iter()
            .any(|n| n.contains(&admin.parse::<IpAddr>().unwrap())),
        "the admin's address is blocked: {blocked:?}"
    );
    assert!(
        child::rate_exempt_v4_of(prog).contains(&admin_net),
        "the admin's exemption went away"
    );
    assert!(
        !child::rate_exempt_v4_of(prog).contains(&attacker_net),
        "the attacker is exempt too"
    );
    // And the session itself still carries data.
    let mut session = session;
    session.write_all(b"still here").unwrap();
    server_side
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 10];
    server_side
        .read_exact(&mut buf)
        .expect("the admin's session after the flood");
    assert_eq!(&buf, b"still here");
    assert!(d.healthy());
}
