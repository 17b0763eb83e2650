//! The journey's A/B in the lab, end to end: a daemon protecting the lab's node interface, then
//! `groundzero journey --compare` (the real binary) runs both runs and prints them with their
//! labels; the page (real headless Chromium, `web_ui/ab.mjs`) shows the two measured runs,
//! "without XDP" drawn from run B, and runs the A/B again from its button. Afterwards the
//! program is attached again and the lab's interface settings are as they were.
//!
//! The lab's namespaces are removed when the test ends, passes or panics.
mod common;

use std::{path::PathBuf, process::Command};

/// The lab's first attacker, as the A/B uses it.
fn attacker_v4() -> String {
    groundzero_lab::LabState::load()
        .unwrap()
        .expect("the lab is up")
        .attackers[0]
        .v4
        .to_string()
}

use common::daemon::TestDaemon;
use groundzero_api::{journey_ab::AbReply, journey_claims::ClaimsReply};
use groundzero_lab::{
    topology::{NODE_IF, NODE_NS},
    Lab, LabSpec,
};
use hyper::Method;
use serde_json::json;

#[test]
fn compare_measures_both_runs_in_the_lab_and_the_page_shows_them() {
    common::require_root();
    let lab = Lab::up(LabSpec {
        peers: 1,
        attackers: 1,
        nodes: 1,
    })
    .expect("building the lab");
    let node_ns = lab.node().unwrap();
    let dir = std::env::temp_dir().join(format!("gz-ab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = "journey-ab-test-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    let daemon = TestDaemon::start_in(
        &node_ns,
        &format!(
            "interfaces = [\"{NODE_IF}\"]\n[journey]\nenabled = true\nsample_every = 8\n\
             [api]\ntcp_listen = \"127.0.0.1:9479\"\ntoken_file = {token_file:?}\n"
        ),
    );
    // Before any A/B: nothing to show, and the claims that need it are not measured.
    let reply: AbReply =
        serde_json::from_value(daemon.ok(Method::GET, "/v1/journey/ab", None)).unwrap();
    assert_eq!(reply.last, None);

    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["journey", "--compare", "--probes", "300"])
        .output()
        .expect("running groundzero journey --compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for label in [
        "run A: with XDP (attached, native; journey tracing 1 in 8",
        "run B: without XDP (detached; journey tracing 1 in 8",
        "wire → stack",
        "stack → application",
        "wire → application",
        "CPU per packet, receiving side",
        "XDP_DROP (the attacker blocklisted, XDP attached)",
        "nftables drop rule in the input hook (XDP detached)",
        "closed port",
        "order-statistic",
        "how each figure is measured",
    ] {
        assert!(stdout.contains(label), "`{label}` missing:\n{stdout}");
    }

    // The report behind it: both runs measured probes, every stage has samples, and each
    // drop cost is over packets the node received.
    let reply: AbReply =
        serde_json::from_value(daemon.ok(Method::GET, "/v1/journey/ab", None)).unwrap();
    let report = reply.last.expect("the A/B is kept");
    assert_eq!(report.interface, NODE_IF);
    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        assert_eq!(run.probes_sent, 300, "{}", run.label);
        // A probe or two may be lost on a loaded machine; most must be measured.
        assert!(
            run.probes_measured >= 270,
            "{}: {}",
            run.label,
            run.probes_measured
        );
        assert_eq!(run.stages.len(), 3);
        for s in &run.stages {
            assert_eq!(s.count, run.probes_measured);
            // Hundreds of probes: the median's interval is estimable on both sides.
            let (lo, hi) = (s.p50.lo_ns.unwrap(), s.p50.hi_ns.unwrap());
            assert!(lo <= s.p50.ns && s.p50.ns <= hi, "{s:?}");
            assert!(s.p50.ns <= s.p99.ns, "{s:?}");
            assert!(!s.how.is_empty() && !s.label.is_empty());
        }
        assert!(
            run.cpu_ns_per_packet.is_some(),
            "{}: no CPU figure",
            run.label
        );
    }
    assert!(report.run(true).is_some() && report.run(false).is_some());
    assert_eq!(report.blocked.len(), 3);
    for d in &report.blocked {
        assert!(d.packets > 0, "{}: no packets reached the node", d.label);
        assert!(d.cpu_ns_per_packet.is_some(), "{}: no CPU figure", d.label);
        // Attached, CPU per packet divides by the program's own count; detached, by the
        // interface's.
        let divisor = if d.name == groundzero_api::journey_ab::DropCost::XDP_DROP {
            "the packets the XDP program counted on the interface"
        } else {
            "XDP not attached"
        };
        assert!(d.how.contains(divisor), "{}: {}", d.label, d.how);
    }
    let claims: ClaimsReply =
        serde_json::from_value(daemon.ok(Method::GET, "/v1/journey/claims", None)).unwrap();
    let fiber = claims
        .claims
        .iter()
        .find(|c| c.name == "fiber_to_app")
        .unwrap();
    assert!(fiber.from.starts_with("A/B run A"), "{fiber:?}");
    assert!(fiber.measured_ns.is_some() && fiber.holds.is_some());

    // Attached again, blocklist as before (the attacker was blocked for the drop cost only),
    // and no nftables table left behind.
    let stats = daemon.ok(Method::GET, "/v1/stats", None);
    assert!(
        stats.to_string().contains(NODE_IF),
        "not attached again: {stats}"
    );
    let entries = daemon.ok(Method::GET, "/v1/entries?list=block", None);
    assert_eq!(entries["entries"], json!([]), "{entries}");
    let tables = Command::new("ip")
        .args(["netns", "exec", NODE_NS, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("gz_ab_"),
        "an nftables table is left"
    );

    // The page: two measured runs, "without XDP" from run B, and its button runs it again.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ui = here.join("tests/web_ui");
    assert!(
        ui.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run scripts/setup.sh (npm ci in {})",
        ui.display()
    );
    let shots = here.join("../../target/web-ui");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("journey-ab.png");
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{NODE_NS}"))
        .args(["node", "ab.mjs", "http://127.0.0.1:9479", token])
        .arg(&shot)
        .current_dir(&ui)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let again: AbReply =
        serde_json::from_value(daemon.ok(Method::GET, "/v1/journey/ab", None)).unwrap();
    assert!(
        again.last.unwrap().unix_ms > report.unix_ms,
        "the page's button did not run the A/B again"
    );
    eprintln!("{stdout}screenshot: {}", shot.display());

    // A block someone else holds on the attacker (the API here) outlives the A/B, which blocks
    // and unblocks the same address under its own holder only.
    daemon.ok(
        Method::POST,
        "/v1/block",
        Some(json!({"entries": [attacker_v4()], "reason": "held by the test"})),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["journey", "--compare", "--probes", "100"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // While it runs, its own block shows in the registry beside the API's: journaled, with a
    // holder of its own that expires (so a crash mid-A/B leaves nothing for good).
    let mut seen_ab_hold = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        let entries = daemon.ok(Method::GET, "/v1/entries?list=block", None);
        seen_ab_hold |= entries["entries"][0]["holders"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["source"] == "app:journey-ab" && h["expires"].is_u64());
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(status.success());
    assert!(seen_ab_hold, "the A/B's block never showed in the registry");
    let entries = daemon.ok(Method::GET, "/v1/entries?list=block", None);
    let listed = entries["entries"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{entries}");
    let holders: Vec<&str> = listed[0]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(holders, ["api"], "{entries}");
    drop(daemon);

    // With a rate limit on, the A/B's bursts would get the lab's peer banned: refused.
    let daemon = TestDaemon::start_in(
        &node_ns,
        &format!("interfaces = [\"{NODE_IF}\"]\n[ratelimit]\nrate = 1000\n"),
    );
    let refused = daemon
        .call(Method::POST, "/v1/journey/ab", Some(json!({"probes": 10})))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("HTTP 409") && refused.contains("rate limit"),
        "{refused}"
    );
    assert_eq!(
        daemon.ok(Method::GET, "/v1/entries?list=block", None)["entries"],
        json!([])
    );
    drop(daemon);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}
