//! Pinned maps and links: filtering and lists outlive the Shield that set them up, the next
//! Shield adopts them (swapping its program in atomically), and `pins::remove_all` undoes it all.
mod common;

use std::{net::UdpSocket, path::PathBuf};

use groundzero::{parse_entry, pins, ActiveMode, AttachMode, Reason, Shield, ShieldOptions};
use groundzero_lab::netns::{veth, Netns};

fn options(dir: &std::path::Path) -> ShieldOptions {
    ShieldOptions {
        pin_dir: Some(dir.to_path_buf()),
        ..ShieldOptions::default()
    }
}

/// Sends `n` datagrams from 198.18.2.2 to 198.18.2.1 and returns how many arrived, waiting
/// for up to `expect` of them.
fn udp_through(peer: &Netns, target: &Netns, n: usize, expect: usize) -> usize {
    let receiver = target.run(|| UdpSocket::bind("198.18.2.1:9000").unwrap());
    peer.run(|| {
        let s = UdpSocket::bind("198.18.2.2:0").unwrap();
        for _ in 0..n {
            s.send_to(b"ping-ping-ping", "198.18.2.1:9000").unwrap();
        }
    });
    common::recv_expected(&receiver, expect)
}

/// Whether `ip link` shows an XDP program on `iface` in `ns`.
fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-n", ns.name(), "link", "show", "dev", iface])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn pins_outlive_the_shield_and_are_adopted() {
    common::require_root();
    pins::ensure_bpffs().unwrap();
    let dir = PathBuf::from(format!("/sys/fs/bpf/gz-test-pin-{}", std::process::id()));
    let peer = Netns::create("pin-p").unwrap();
    let target = Netns::create("pin-t").unwrap();
    veth(&peer, "gzpin-p", &target, "gzpin-t").unwrap();
    peer.ip(&["addr", "add", "198.18.2.2/24", "dev", "gzpin-p"])
        .unwrap();
    target
        .ip(&["addr", "add", "198.18.2.1/24", "dev", "gzpin-t"])
        .unwrap();
    assert_eq!(
        udp_through(&peer, &target, 5, 5),
        5,
        "no shield yet: traffic flows"
    );

    let blocked = parse_entry("198.18.2.2").unwrap();
    {
        let mut first = Shield::load(options(&dir)).unwrap();
        first.block(blocked).unwrap();
        let mode = target
            .run(|| first.attach("gzpin-t", AttachMode::Auto))
            .unwrap();
        assert_eq!(mode, ActiveMode::Native);
        assert!(!first.attachments()[0].adopted);
        assert_eq!(udp_through(&peer, &target, 5, 0), 0);
    } // dropped: the process that set things up is gone

    assert_eq!(
        udp_through(&peer, &target, 5, 0),
        0,
        "still filtering with no Shield alive"
    );

    let mut second = Shield::load(options(&dir)).unwrap();
    assert_eq!(
        second
            .blocked()
            .unwrap()
            .iter()
            .map(|e| e.net)
            .collect::<Vec<_>>(),
        [blocked]
    );
    assert!(
        second.blocked().unwrap()[0].hits >= 10,
        "hits survived in the pinned map"
    );
    assert!(
        second.counters().unwrap().get(Reason::BlockedExact).packets >= 10,
        "counters too"
    );
    let mode = target
        .run(|| second.attach("gzpin-t", AttachMode::Auto))
        .unwrap();
    assert_eq!(mode, ActiveMode::Native);
    assert!(second.attachments()[0].adopted);
    assert_eq!(
        pins::pinned_interfaces(&dir),
        [("gzpin-t".to_string(), ActiveMode::Native)]
    );
    second.unblock(blocked).unwrap();
    assert_eq!(
        udp_through(&peer, &target, 5, 5),
        5,
        "the adopted program reads the same maps"
    );
    second.block(blocked).unwrap();
    assert_eq!(udp_through(&peer, &target, 5, 0), 0);
    drop(second);

    assert!(xdp_attached(&target, "gzpin-t"));
    let removed = pins::remove_all(&dir).unwrap();
    // Checked at once: unpinning alone would leave the program running for a while (the
    // kernel frees the link after an RCU grace period), and CI once saw traffic dropped then.
    assert!(
        !xdp_attached(&target, "gzpin-t"),
        "XDP is off the interface when remove_all returns"
    );
    assert!(removed.len() >= 10, "{removed:?}");
    assert!(!dir.exists());
    assert_eq!(
        udp_through(&peer, &target, 5, 5),
        5,
        "unpinned: XDP is gone from the interface"
    );
}

/// A pin directory another process holds (a daemon's flock) is never changed by a second
/// loader: an interrupted migration there is left for the holder, and current pins are still
/// adopted. Once nobody holds it, the next load finishes the job.
#[test]
fn a_second_loader_leaves_pins_another_process_holds_alone() {
    common::require_root();
    pins::ensure_bpffs().unwrap();
    let dir = PathBuf::from(format!("/sys/fs/bpf/gz-test-held-{}", std::process::id()));
    drop(Shield::load(options(&dir)).unwrap());
    assert_eq!(
        groundzero::bpf::layout::read(&dir).unwrap(),
        Some(groundzero::bpf::layout::LAYOUT)
    );

    // The holder: a child process with an exclusive flock on the directory, as a daemon has
    // (`-o`: flock(1) itself keeps the lock, not its `sleep`, so killing it releases the lock).
    let mut holder = std::process::Command::new("flock")
        .args(["-n", "-x", "-o"])
        .arg(&dir)
        .args(["sleep", "30"])
        .spawn()
        .expect("running flock(1)");
    let held = std::time::Instant::now();
    while pins::flock_holder(&dir).is_none() {
        assert!(
            held.elapsed() < std::time::Duration::from_secs(5),
            "flock(1) took no lock on {}",
            dir.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(pins::other_holder(&dir), Some(holder.id()));

    // Current pins: adopted as they are.
    drop(Shield::load(options(&dir)).expect("current pins are adopted under a holder"));

    // A migration in progress (its staging directory exists): refused, and left in place.
    let next = dir.join("next");
    std::fs::create_dir(&next).unwrap();
    let Err(err) = Shield::load(options(&dir)) else {
        panic!("a second loader finished a migration under a holder");
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!("process {}", holder.id())) && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(next.exists(), "a second loader removed the holder's next/");

    // Nobody holds it: the next load discards the unfinished (unstamped) migration.
    holder.kill().unwrap();
    holder.wait().unwrap();
    drop(Shield::load(options(&dir)).expect("a load without a holder recovers"));
    assert!(!next.exists(), "next/ was not discarded");
    pins::remove_all(&dir).unwrap();
    let _ = std::fs::remove_dir(&dir);
}
