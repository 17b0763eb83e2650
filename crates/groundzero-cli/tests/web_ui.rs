//! The journey page in real headless Chromium (Debian's, driven by playwright-core): the daemon
//! serves it on its TCP listener inside a namespace while UDP from an allowed and a blocked
//! source runs; `web_ui/ui.mjs` checks the flowchart, live counters, a journey's stages, the
//! entry behind a drop (its reason, holding markup, shown as text), that the page's numbers are
//! `/v1/journey`'s and none is shown without a measurement, the exports, and block/unblock
//! from the page, and saves a screenshot. The A/B refuses this daemon: its interface is not the
//! lab's.
mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{daemon::TestDaemon, topology::*};
use hyper::Method;
use serde_json::json;

/// A reason that would run script if the page put it into the DOM as markup.
const XSS_REASON: &str = "scanner <img src=x onerror=\"window.__xss=1\">";

#[test]
fn journey_page_in_headless_chromium() {
    let topo = Topology::new("w");
    let dir = std::env::temp_dir().join(format!("gz-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = "web-ui-test-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let config = format!(
        "interfaces = [\"{}\"]\n[journey]\nenabled = true\nsample_every = 3\n\
         [api]\ntcp_listen = \"127.0.0.1:9478\"\ntoken_file = {:?}\n",
        topo.node_if, token_file
    );
    let daemon = TestDaemon::start_in(&topo.node, &config);
    daemon.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [BAD[0]], "reason": XSS_REASON})),
    );
    // In monitor mode XDP drops nothing, so the A/B has no XDP drop to measure: refused.
    daemon.ok(Method::PUT, "/v1/monitor", Some(json!({"enabled": true})));
    let refused = daemon
        .call(Method::POST, "/v1/journey/ab", Some(json!({})))
        .expect_err("the A/B must refuse monitor mode")
        .to_string();
    assert!(refused.contains("monitor mode is on"), "{refused}");
    daemon.ok(Method::PUT, "/v1/monitor", Some(json!({"enabled": false})));
    // The A/B detaches XDP: never from an interface that is not the lab's node interface.
    let refused = daemon
        .call(Method::POST, "/v1/journey/ab", Some(json!({"probes": 10})))
        .expect_err("the A/B must refuse an interface outside the lab");
    let refused = refused.to_string();
    assert!(
        refused.contains(&topo.node_if) && refused.contains("refusing the A/B"),
        "{refused}"
    );

    // An application reading datagrams, and bounded traffic from a good and a bad source.
    let dst = SocketAddr::new(NODE[0].parse().unwrap(), 7000);
    let server = topo.node.run(|| UdpSocket::bind(dst)).unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let _ = server.recv_from(&mut buf);
            }
        })
    };
    // The page's script creates this file when it compares the page with the API: the traffic
    // stops so that both are still.
    let quiet = dir.join("quiet");
    let sender = {
        let stop = stop.clone();
        let quiet = quiet.clone();
        let peer_ns = format!("/run/netns/{}", topo.peer.name());
        std::thread::spawn(move || {
            let f = std::fs::File::open(peer_ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let good = UdpSocket::bind(SocketAddr::new(GOOD[0].parse().unwrap(), 0)).unwrap();
            let bad = UdpSocket::bind(SocketAddr::new(BAD[0].parse().unwrap(), 0)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && !quiet.exists() {
                for _ in 0..20 {
                    let _ = good.send_to(b"ping", dst);
                    let _ = bad.send_to(b"ping", dst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ui = here.join("tests/web_ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/setup.sh (npm ci in {})",
        ui.display()
    );
    let shots = here.join("../../target/web-ui");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("journey.png");
    // The browser runs in the node's namespace, where the daemon listens on loopback.
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", topo.node.name()))
        .args(["node", "ui.mjs", "http://127.0.0.1:9478", token])
        .arg(&shot)
        .arg(&quiet)
        .current_dir(&ui)
        .output()
        .expect("running node");
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    reader.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(shot.exists(), "screenshot saved");
    eprintln!("{stdout}screenshot: {}", shot.display());
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
