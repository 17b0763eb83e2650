//! Bad input gets a clear error and changes nothing: full maps, bad entries, bad list files,
//! missing interfaces, through the library and through the `groundzero` binary.
mod common;

use std::process::Command;

use groundzero::{parse_entry, AttachMode, Error, ListKind, Shield, ShieldOptions};

fn nets(list: &[&str]) -> Vec<groundzero::IpNet> {
    list.iter().map(|s| parse_entry(s).unwrap()).collect()
}

#[test]
fn a_full_map_is_a_clear_error_and_a_bulk_insert_is_rolled_back() {
    common::require_root();
    let options = ShieldOptions {
        exact_capacity: 4,
        cidr_capacity: 2,
        ..ShieldOptions::default()
    };
    let mut shield = Shield::load(options).unwrap();
    shield
        .block_all(&nets(&["198.18.0.1", "198.18.0.2"]))
        .unwrap();

    // Three more would need five slots: the call must fail and leave exactly the first two.
    let err = shield
        .block_all(&nets(&["198.18.0.3", "198.18.0.4", "198.18.0.5"]))
        .unwrap_err();
    match &err {
        Error::MapFull {
            list,
            capacity,
            entry,
        } => {
            assert_eq!(*list, ListKind::BlockExact);
            assert_eq!(*capacity, 4);
            assert_eq!(entry.to_string(), "198.18.0.5/32");
        }
        other => panic!("expected MapFull, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("full (4 entries)") && text.contains("198.18.0.5/32"),
        "{text}"
    );
    let left: Vec<String> = shield
        .blocked()
        .unwrap()
        .iter()
        .map(|e| e.net.to_string())
        .collect();
    assert_eq!(left, ["198.18.0.1/32", "198.18.0.2/32"]);

    // Re-adding existing entries within a bulk that then fails must not remove them.
    let err = shield.block_all(&nets(&[
        "198.18.0.1",
        "198.18.0.3",
        "198.18.0.4",
        "198.18.0.5",
    ]));
    assert!(matches!(err, Err(Error::MapFull { .. })));
    assert_eq!(shield.blocked().unwrap().len(), 2);

    // Prefix trie: same story, with ENOSPC instead of E2BIG underneath.
    shield
        .block_all(&nets(&["198.19.0.0/16", "2001:2::/32"]))
        .unwrap();
    shield.block_all(&nets(&["198.20.0.0/16"])).unwrap(); // per family: the v4 trie has room for 2
    let err = shield.block_all(&nets(&["198.21.0.0/16"])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MapFull {
                list: ListKind::BlockCidr,
                capacity: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn blocking_twice_is_idempotent_and_unblocking_the_absent_says_so() {
    let mut shield = common::shield();
    let net = parse_entry("2001:2::5").unwrap();
    shield.block(net).unwrap();
    shield.block(net).unwrap();
    assert_eq!(shield.blocked().unwrap().len(), 1);
    assert!(shield.unblock(net).unwrap());
    assert!(!shield.unblock(net).unwrap());
    assert!(!shield
        .unallow(parse_entry("198.18.0.0/24").unwrap())
        .unwrap());
}

#[test]
fn attaching_to_a_missing_interface_names_it() {
    let mut shield = common::shield();
    let err = shield
        .attach("gz-no-such-if", AttachMode::Auto)
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchInterface { .. }), "{err:?}");
    assert!(
        err.to_string().contains("`gz-no-such-if` does not exist"),
        "{err}"
    );
    assert!(shield.attachments().is_empty());
}

fn groundzero(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn check_list_reports_every_bad_line_with_file_and_line() {
    let dir = std::env::temp_dir().join(format!("gz-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.txt");
    let bad = dir.join("bad.txt");
    std::fs::write(&good, "# comment\n198.51.100.7\n2001:db8::/32 ; note\n").unwrap();
    std::fs::write(&bad, "198.51.100.7\n198.51.100.300\n\n10.0.0.1/8\n").unwrap();

    let (ok, text) = groundzero(&["check-list", good.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("2 entries (1 IPv4, 1 IPv6)"), "{text}");

    let (ok, text) = groundzero(&["check-list", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("bad.txt:2: `198.51.100.300` is not an IP address"),
        "{text}"
    );
    assert!(
        text.contains(
            "bad.txt:4: `10.0.0.1/8` has host bits set after /8; did you mean 10.0.0.0/8?"
        ),
        "{text}"
    );
    assert!(text.contains("1 of 2 file(s) have errors"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn attach_refuses_bad_lists_before_touching_the_kernel() {
    // No root needed: the error must come from parsing, before anything is loaded.
    let (ok, text) = groundzero(&[
        "attach",
        "--iface",
        "lo",
        "--block",
        "198.51.100.0/33",
        "--duration",
        "1",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("`198.51.100.0/33` is not an IP address"),
        "{text}"
    );
    assert!(!text.contains("attached"), "{text}");
}

#[test]
fn attach_to_a_missing_interface_fails_cleanly() {
    common::require_root();
    let (ok, text) = groundzero(&[
        "attach",
        "--iface",
        "gz-missing0",
        "--block",
        "198.51.100.7",
        "--duration",
        "1",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("interface `gz-missing0` does not exist"),
        "{text}"
    );
}

#[test]
fn batched_bulk_inserts_keep_existing_hits_and_refuse_what_does_not_fit() {
    common::require_root();
    let options = ShieldOptions {
        exact_capacity: 300,
        ..ShieldOptions::default()
    };
    let mut shield = Shield::load(options).unwrap();
    let host =
        |i: u32| parse_entry(&std::net::Ipv4Addr::from(0xC612_0000 + i).to_string()).unwrap();
    let first: Vec<_> = (0..200).map(host).collect();
    shield.block_all(&first).unwrap(); // > 64 entries: the batched path
    assert_eq!(shield.blocked().unwrap().len(), 200);

    // Give one entry some hits, then bulk-add a set that includes it again (and duplicates).
    let pkt = groundzero_lab::craft::udp4("198.18.0.7".parse().unwrap(), b"x");
    for _ in 0..3 {
        assert_eq!(shield.test_run(&pkt).unwrap(), groundzero::Action::Drop);
    }
    let mut again: Vec<_> = (0..250).map(host).collect();
    again.extend((240..250).map(host));
    shield.block_all(&again).unwrap();
    let entries = shield.blocked().unwrap();
    assert_eq!(entries.len(), 250);
    assert_eq!(
        entries.iter().find(|e| e.net == host(7)).unwrap().hits,
        3,
        "re-adding kept the hits"
    );

    // 50 new entries, each given twice, fill the map exactly: duplicates take no room.
    let twice: Vec<_> = (250..300).chain(250..300).map(host).collect();
    shield.block_all(&twice).unwrap();
    assert_eq!(shield.blocked().unwrap().len(), 300);
    shield
        .unblock_all(&(250..300).map(host).collect::<Vec<_>>())
        .unwrap();

    // 100 more would need 350 slots of 300: refused whole, nothing added.
    let too_many: Vec<_> = (250..350).map(host).collect();
    let err = shield.block_all(&too_many).unwrap_err();
    assert!(
        matches!(err, Error::MapFull { capacity: 300, .. }),
        "{err:?}"
    );
    assert_eq!(shield.blocked().unwrap().len(), 250);
    assert_eq!(shield.failed_inserts(), 1);

    // Batched removal, including entries that are not there.
    let gone: Vec<_> = (0..300).map(host).collect();
    shield.unblock_all(&gone).unwrap();
    assert!(shield.blocked().unwrap().is_empty());
}

#[test]
fn attach_refuses_blocks_the_lockout_guard_protects() {
    common::require_root();
    // A wide prefix and an allowlisted address: refused before anything is loaded, naming
    // both; nothing is attached.
    let (ok, text) = groundzero(&[
        "attach",
        "--iface",
        "lo",
        "--block",
        "0.0.0.0/0",
        "--block",
        "198.18.4.4",
        "--allow",
        "198.18.4.4",
        "--duration",
        "1",
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("the lockout guard refused 2 block(s), nothing applied"),
        "{text}"
    );
    assert!(text.contains("wider than /8"), "{text}");
    assert!(text.contains("on the allowlist"), "{text}");
    assert!(!text.contains("attached"), "{text}");
}
