//! The summaries in front of the LPM tries and the exact hashes (groundzero_common::summary):
//! the XDP program skips a trie walk or a hash lookup only where no entry can match. What must
//! never happen is a listed entry that the program skips; these tests add, overlap, remove and
//! re-adopt entries and check the kernel's verdict (BPF_PROG_TEST_RUN) and the counts after
//! every step.
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

/// The summaries' counts at `addr`'s keys, each checked against the bit the XDP program reads.
fn counts(shield: &Shield, list: ListKind, addr: &str) -> Vec<u8> {
    let counts = shield.summary_counts(list, addr.parse().unwrap());
    let bits = shield.summary_bits(list, addr.parse().unwrap());
    assert_eq!(
        bits,
        Some(counts.iter().map(|&c| c != 0).collect()),
        "{list:?} at {addr}: counts {counts:?}, the bits disagree"
    );
    counts
}

/// The exact summary's bit at `addr`'s key: what the XDP program reads.
fn bit(shield: &Shield, addr: &str) -> Option<bool> {
    shield
        .summary_bits(ListKind::BlockExact, addr.parse().unwrap())
        .map(|b| b[0])
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
        first.block(net("198.18.0.10")).unwrap();
        first.block(net("2001:2::10")).unwrap();
    }
    // What a version without summaries leaves: the lists pinned, no summary pins.
    for name in groundzero_common::maps::ALL_MAPS {
        if name.contains("_sum_") || name.contains("_bits_") {
            std::fs::remove_file(dir.join("maps").join(name)).unwrap();
        }
    }
    let second = Shield::load(options.clone()).unwrap();
    let result = std::panic::catch_unwind(|| {
        assert_eq!(counts(&second, ListKind::BlockCidr, "198.18.128.5"), [1]);
        assert_eq!(counts(&second, ListKind::Allow, "198.18.128.7"), [1]);
        assert_eq!(
            counts(&second, ListKind::BlockCidr, "2001:2:0:8000::5"),
            [1, 1]
        );
        assert_eq!(counts(&second, ListKind::BlockExact, "198.18.0.10"), [1]);
        assert_eq!(counts(&second, ListKind::BlockExact, "2001:2::10"), [1]);
        assert_eq!(bit(&second, "198.18.0.10"), Some(true));
        assert_eq!(bit(&second, "2001:2::10"), Some(true));
        assert_eq!(verdict(&second, "198.18.128.5"), Action::Drop);
        assert_eq!(verdict(&second, "198.18.128.7"), Action::Pass);
        assert_eq!(verdict(&second, "2001:2:0:8000::5"), Action::Drop);
        assert_eq!(verdict(&second, "198.18.0.10"), Action::Drop);
        assert_eq!(verdict(&second, "2001:2::10"), Action::Drop);
    });
    drop(second);
    // Pins with the prefix summaries but not the exact ones (a build between the two): the
    // exact ones are counted from the hashes; the prefix ones are counted again, which only
    // over-counts.
    let result = result.and_then(|()| {
        for name in [
            groundzero_common::summary::BLOCK_SUM_V4,
            groundzero_common::summary::BLOCK_SUM_V6,
            groundzero_common::summary::BLOCK_BITS_V4,
            groundzero_common::summary::BLOCK_BITS_V6,
        ] {
            std::fs::remove_file(dir.join("maps").join(name)).unwrap();
        }
        let third = Shield::load(options.clone()).unwrap();
        let marker = dir.join("maps").join("summaries-counted");
        let checked = std::panic::catch_unwind(|| {
            assert_eq!(counts(&third, ListKind::BlockExact, "198.18.0.10"), [1]);
            assert_eq!(counts(&third, ListKind::BlockExact, "2001:2::10"), [1]);
            assert_eq!(bit(&third, "198.18.0.10"), Some(true));
            assert_eq!(bit(&third, "2001:2::10"), Some(true));
            assert_eq!(verdict(&third, "198.18.0.10"), Action::Drop);
            assert_eq!(verdict(&third, "2001:2::10"), Action::Drop);
            assert_eq!(verdict(&third, "198.18.128.5"), Action::Drop);
            assert!(
                std::fs::symlink_metadata(&marker).is_ok(),
                "the summaries were not marked counted"
            );
        });
        drop(third);
        // Pins whose summaries were never marked counted (a crash between pinning new ones and
        // counting them): counted again, over-counting what was there, and marked.
        checked.and_then(|()| {
            std::fs::remove_file(&marker).unwrap();
            let fourth = Shield::load(options.clone()).unwrap();
            let checked = std::panic::catch_unwind(|| {
                assert_eq!(counts(&fourth, ListKind::BlockExact, "198.18.0.10"), [2]);
                assert_eq!(counts(&fourth, ListKind::BlockCidr, "198.18.128.5"), [3]);
                assert_eq!(verdict(&fourth, "198.18.0.10"), Action::Drop);
                assert!(std::fs::symlink_metadata(&marker).is_ok());
            });
            drop(fourth);
            // Pins with the exact counts but not their bitmaps (map layout 4's maps, marked
            // counted): the bits are set from a new count of the hashes, and the program,
            // which reads only the bits, still drops the listed addresses.
            checked.and_then(|()| {
                for name in [
                    groundzero_common::summary::BLOCK_BITS_V4,
                    groundzero_common::summary::BLOCK_BITS_V6,
                ] {
                    std::fs::remove_file(dir.join("maps").join(name)).unwrap();
                }
                let fifth = Shield::load(options).unwrap();
                std::panic::catch_unwind(|| {
                    assert_eq!(bit(&fifth, "198.18.0.10"), Some(true));
                    assert_eq!(bit(&fifth, "2001:2::10"), Some(true));
                    assert_eq!(verdict(&fifth, "198.18.0.10"), Action::Drop);
                    assert_eq!(verdict(&fifth, "2001:2::10"), Action::Drop);
                    assert_eq!(bit(&fifth, "198.18.0.11"), Some(false));
                })
            })
        })
    });
    pins::remove_all(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The exact summaries: a key per address, counted on every way an exact entry comes and goes
/// (one by one, in batches, a batch removal the kernel stops at an absent key), with the
/// verdict checked in the kernel each time.
#[test]
fn exact_entries_are_counted_one_by_one_and_in_batches() {
    let mut shield = common::shield();
    let exact = |shield: &Shield, a: &str| counts(shield, ListKind::BlockExact, a);
    assert_eq!(exact(&shield, "198.18.0.10"), [0]);
    assert_eq!(verdict(&shield, "198.18.0.10"), Action::Pass);

    shield.block(net("198.18.0.10")).unwrap();
    shield.block(net("2001:2::10")).unwrap();
    assert_eq!(exact(&shield, "198.18.0.10"), [1]);
    assert_eq!(exact(&shield, "2001:2::10"), [1]);
    assert_eq!(verdict(&shield, "198.18.0.10"), Action::Drop);
    assert_eq!(verdict(&shield, "2001:2::10"), Action::Drop);
    // A neighbour is elsewhere in the summary: skipped, passes.
    assert_eq!(exact(&shield, "198.18.0.11"), [0]);
    assert_eq!(verdict(&shield, "198.18.0.11"), Action::Pass);
    // Blocking it again changes no count.
    shield.block(net("198.18.0.10")).unwrap();
    assert_eq!(exact(&shield, "198.18.0.10"), [1]);

    // A batch (more than the one-by-one threshold), including one already there.
    let batch: Vec<IpNet> = (0..1000u32)
        .map(|i| IpNet::from(IpAddr::from((0xC613_0000u32 + i).to_be_bytes())))
        .chain(std::iter::once(net("198.18.0.10")))
        .collect();
    shield.block_all(&batch).unwrap();
    for n in &batch {
        let a = n.addr().to_string();
        assert!(exact(&shield, &a)[0] >= 1, "{a} uncounted after the batch");
        assert_eq!(verdict(&shield, &a), Action::Drop, "{a}");
    }
    assert_eq!(exact(&shield, "198.18.0.10"), [1], "counted twice");

    // Batch removal, with an absent address in the middle (the kernel's batch stops there).
    let mut gone = batch[..500].to_vec();
    gone.insert(250, net("198.19.255.254"));
    shield.unblock_all(&gone).unwrap();
    for n in &batch[..500] {
        let a = n.addr().to_string();
        assert_eq!(verdict(&shield, &a), Action::Pass, "{a} still dropped");
    }
    for n in &batch[500..] {
        let a = n.addr().to_string();
        assert_eq!(verdict(&shield, &a), Action::Drop, "{a} lost its count");
    }
    // Every count the batch added is gone once all are removed (one key may hold two of them,
    // so the summary is checked whole, not key by key).
    shield.unblock_all(&batch).unwrap();
    shield.unblock(net("2001:2::10")).unwrap();
    for n in batch.iter().chain([&net("2001:2::10")]) {
        let a = n.addr().to_string();
        assert_eq!(exact(&shield, &a), [0], "{a} still counted");
    }
}
