//! The prefix summaries in front of the LPM tries (groundzero_common::summary): the XDP program
//! skips a trie walk only where no prefix can match. What must never happen is a listed prefix
//! that the program skips; these tests add, overlap, remove and re-adopt prefixes and check the
//! kernel's verdict (BPF_PROG_TEST_RUN) and the counts after every step.
mod common;

use std::{net::IpAddr, path::PathBuf};

use groundzero::{parse_entry, pins, Action, IpNet, ListKind, Shield, ShieldOptions};
use groundzero_lab::craft::{self, L4};

fn net(s: &str) -> IpNet {
    parse_entry(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn verdict(shield: &Shield, src: &str) -> Action {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = match src {
        IpAddr::V4(_) => "198.51.100.1".parse().unwrap(),
        IpAddr::V6(_) => "2001:db8:d::1".parse().unwrap(),
    };
    shield
        .test_run(&craft::ip_packet(src, dst, L4::UDP, b"summary"))
        .unwrap()
}

fn counts(shield: &Shield, list: ListKind, addr: &str) -> Vec<u8> {
    shield.summary_counts(list, addr.parse().unwrap())
}

#[test]
fn prefixes_are_counted_on_insert_and_uncounted_on_removal() {
    let mut shield = common::shield();
    // Nothing listed: every count is zero, everything passes.
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.128.5"), [0]);
    assert_eq!(
        counts(&shield, ListKind::BlockCidr, "2001:2:0:8000::5"),
        [0, 0]
    );

    shield.block(net("198.18.128.0/24")).unwrap();
    shield.block(net("2001:2:0:8000::/64")).unwrap();
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.128.5"), [1]);
    assert_eq!(verdict(&shield, "198.18.128.5"), Action::Drop);
    // Another /20: its key is zero, the walk is skipped, and it passes.
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.0.10"), [0]);
    assert_eq!(verdict(&shield, "198.18.0.10"), Action::Pass);
    // IPv6: same /40 (first key counted), another /64 (second key zero): skipped, passes.
    assert_eq!(
        counts(&shield, ListKind::BlockCidr, "2001:2:0:8000::5"),
        [1, 1]
    );
    assert_eq!(verdict(&shield, "2001:2:0:8000::5"), Action::Drop);
    assert_eq!(
        counts(&shield, ListKind::BlockCidr, "2001:2:0:1::1"),
        [1, 0]
    );
    assert_eq!(verdict(&shield, "2001:2:0:1::1"), Action::Pass);

    // Blocking the same prefix again changes nothing (the insert finds it there).
    shield.block(net("198.18.128.0/24")).unwrap();
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.128.5"), [1]);

    // Two prefixes on one key: removing one keeps the other enforced.
    shield.block(net("198.18.129.0/24")).unwrap();
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.128.5"), [2]);
    assert!(shield.unblock(net("198.18.128.0/24")).unwrap());
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.129.5"), [1]);
    assert_eq!(verdict(&shield, "198.18.129.5"), Action::Drop);
    assert_eq!(verdict(&shield, "198.18.128.5"), Action::Pass);
    // Removing what is not there does not uncount.
    assert!(!shield.unblock(net("198.18.128.0/24")).unwrap());
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.129.5"), [1]);
    assert!(shield.unblock(net("198.18.129.0/24")).unwrap());
    assert!(shield.unblock(net("2001:2:0:8000::/64")).unwrap());
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.129.5"), [0]);
    assert_eq!(
        counts(&shield, ListKind::BlockCidr, "2001:2:0:8000::5"),
        [0, 0]
    );

    // Exact entries live in the hash and are never summarised.
    shield.block(net("198.18.0.10")).unwrap();
    assert_eq!(counts(&shield, ListKind::BlockCidr, "198.18.0.10"), [0]);
    assert_eq!(verdict(&shield, "198.18.0.10"), Action::Drop);
}

#[test]
fn short_prefixes_cover_every_key_they_reach() {
    let mut shield = common::shield();
    // A /8 spans 4096 keys of /20; an IPv6 /32 spans 256 first keys and every second key.
    shield.block(net("10.0.0.0/8")).unwrap();
    shield.block(net("2001:db8::/32")).unwrap();
    for src in ["10.0.0.1", "10.128.7.9", "10.255.255.254"] {
        assert_eq!(counts(&shield, ListKind::BlockCidr, src), [1], "{src}");
        assert_eq!(verdict(&shield, src), Action::Drop, "{src}");
    }
    for src in [
        "2001:db8::1",
        "2001:db8:ffff:ffff::1",
        "2001:db8:1234:5678:9abc::1",
    ] {
        assert_eq!(counts(&shield, ListKind::BlockCidr, src), [1, 1], "{src}");
        assert_eq!(verdict(&shield, src), Action::Drop, "{src}");
    }
    assert_eq!(verdict(&shield, "11.0.0.1"), Action::Pass);
    assert_eq!(verdict(&shield, "2001:db9::1"), Action::Pass);

    // The allowlist has its own summaries: an allowed /0 reaches every key and wins.
    shield.allow(net("0.0.0.0/0")).unwrap();
    shield.allow(net("::/0")).unwrap();
    assert_eq!(counts(&shield, ListKind::Allow, "203.0.113.1"), [1]);
    assert_eq!(counts(&shield, ListKind::Allow, "2001:db8::1"), [1, 1]);
    assert_eq!(verdict(&shield, "10.0.0.1"), Action::Pass);
    assert_eq!(verdict(&shield, "2001:db8::1"), Action::Pass);
    assert!(shield.unallow(net("0.0.0.0/0")).unwrap());
    assert!(shield.unallow(net("::/0")).unwrap());
    assert_eq!(verdict(&shield, "10.0.0.1"), Action::Drop);
    assert_eq!(counts(&shield, ListKind::Allow, "203.0.113.1"), [0]);
}

#[test]
fn summaries_missing_from_older_pins_are_rebuilt_from_the_tries() {
    common::require_root();
    pins::ensure_bpffs().unwrap();
    let dir = PathBuf::from(format!("/sys/fs/bpf/gz-test-sum-{}", std::process::id()));
    let options = ShieldOptions {
        pin_dir: Some(dir.clone()),
        ..ShieldOptions::default()
    };
    {
        let mut first = Shield::load(options.clone()).unwrap();
        first.block(net("198.18.128.0/24")).unwrap();
        first.allow(net("198.18.128.7")).unwrap();
        first.block(net("2001:2:0:8000::/64")).unwrap();
    }
    // What a version without summaries leaves: the tries pinned, no summary pins.
    for name in groundzero_common::maps::ALL_MAPS {
        if name.contains("_sum_") {
            std::fs::remove_file(dir.join("maps").join(name)).unwrap();
        }
    }
    let second = Shield::load(options).unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(counts(&second, ListKind::BlockCidr, "198.18.128.5"), [1]);
        assert_eq!(counts(&second, ListKind::Allow, "198.18.128.7"), [1]);
        assert_eq!(
            counts(&second, ListKind::BlockCidr, "2001:2:0:8000::5"),
            [1, 1]
        );
        assert_eq!(verdict(&second, "198.18.128.5"), Action::Drop);
        assert_eq!(verdict(&second, "198.18.128.7"), Action::Pass);
        assert_eq!(verdict(&second, "2001:2:0:8000::5"), Action::Drop);
    });
    drop(second);
    pins::remove_all(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
