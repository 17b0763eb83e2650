//! `ListReader`: the lists read through file descriptors of their own, the same entries and hits
//! as the shield reports, and still readable when the shield is busy or gone (which is what lets
//! the daemon read a million entries for a scrape without holding its lock).
mod common;

use std::net::IpAddr;

use groundzero::{parse_entry, Action, IpNet, ListKind};
use groundzero_lab::craft::{self, L4};

fn net(s: &str) -> IpNet {
    parse_entry(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn the_reader_sees_what_the_shield_sees_without_the_shield() {
    let mut shield = common::shield();
    let blocked: Vec<IpNet> = (0..300u32)
        .map(|i| IpNet::from(IpAddr::from([198, 18, (i / 250) as u8, (i % 250) as u8])))
        .chain(["2001:2::7", "198.19.0.0/16", "2001:2:0:8000::/64"].map(net))
        .collect();
    shield.block_all(&blocked).unwrap();
    shield.allow(net("198.18.0.7")).unwrap();
    // Two hits on one exact entry, through the kernel program.
    let packet = craft::ip_packet(
        "198.18.0.9".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
        L4::UDP,
        b"x",
    );
    for _ in 0..2 {
        assert_eq!(shield.test_run(&packet).unwrap(), Action::Drop);
    }

    let reader = shield.list_reader().unwrap();
    let sorted = |mut v: Vec<groundzero::ListEntry>| {
        v.sort_by_key(|e| e.net);
        v
    };
    let (from_reader, from_shield) = (
        sorted(reader.blocked().unwrap()),
        sorted(shield.blocked().unwrap()),
    );
    assert_eq!(from_reader.len(), blocked.len());
    assert!(
        from_reader == from_shield,
        "the reader and the shield disagree"
    );
    assert_eq!(sorted(reader.allowed().unwrap()), shield.allowed().unwrap());
    assert_eq!(reader.list(ListKind::BlockCidr).unwrap().len(), 2);

    // The maps live as long as any fd does: the reader outlives the shield.
    drop(shield);
    let after = reader.blocked().unwrap();
    assert_eq!(after.len(), blocked.len());
    let hit = after
        .iter()
        .find(|e| e.net == net("198.18.0.9"))
        .expect("the entry is there");
    assert_eq!(hit.hits, 2);
    assert!(hit.last_hit_ns > 0);
}
