//! Per-interface counters: traffic on one attached veth is counted under its ifindex, and the
//! per-interface counters add up to the totals.
mod common;

use std::{net::UdpSocket, time::Duration};

use groundzero::{parse_entry, ActiveMode, AttachMode, Reason};
use groundzero_lab::netns::{veth, Netns};

#[test]
fn traffic_is_counted_under_the_ingress_interface() {
    let mut shield = common::shield();
    let peer = Netns::create("ifc-p").unwrap();
    let target = Netns::create("ifc-t").unwrap();
    veth(&peer, "gzifc-p", &target, "gzifc-t").unwrap();
    peer.ip(&["addr", "add", "198.18.1.2/24", "dev", "gzifc-p"])
        .unwrap();
    target
        .ip(&["addr", "add", "198.18.1.1/24", "dev", "gzifc-t"])
        .unwrap();
    // Static neighbours: no ARP, so the only packets the program sees are the ones sent here.
    peer.ip(&[
        "neigh",
        "add",
        "198.18.1.1",
        "lladdr",
        "02:00:00:00:01:01",
        "dev",
        "gzifc-p",
        "nud",
        "permanent",
    ])
    .unwrap();
    target
        .ip(&["link", "set", "gzifc-t", "address", "02:00:00:00:01:01"])
        .unwrap();

    shield.block(parse_entry("198.18.1.2").unwrap()).unwrap();
    let mode = target
        .run(|| shield.attach("gzifc-t", AttachMode::Auto))
        .unwrap();
    assert_eq!(mode, ActiveMode::Native);
    let ifindex = shield.attachments()[0].ifindex;
    assert!(ifindex > 0);

    let before_if = shield.interface_counters(ifindex).unwrap();
    let before_total = shield.counters().unwrap();
    const N: u64 = 25;
    peer.run(|| {
        let socket = UdpSocket::bind("198.18.1.2:0").unwrap();
        for _ in 0..N {
            socket.send_to(&[7u8; 32], "198.18.1.1:9").unwrap();
        }
    });
    // veth hands the frames to the target's NAPI, which may run later on a loaded machine:
    // wait until all are counted (then a moment more, so an over-count would show too).
    common::wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        let counted = shield.counters().unwrap().since(&before_total);
        counted.get(Reason::BlockedExact).packets >= N
    });
    std::thread::sleep(Duration::from_millis(50));
    let on_if = shield
        .interface_counters(ifindex)
        .unwrap()
        .since(&before_if);
    let frame = (14 + 20 + 8 + 32) as u64;
    assert_eq!(on_if.get(Reason::BlockedExact).packets, N);
    assert_eq!(on_if.get(Reason::BlockedExact).bytes, N * frame);
    // Whole counts, not differences: this shield is fresh and counts on this one interface
    // only. The two are read one after the other, and the kernel may pass a packet of its own
    // (IPv6 neighbour discovery) in between: they must agree once a pair of reads is not split
    // so.
    let pair = || {
        (
            shield.interface_counters(ifindex).unwrap(),
            shield.counters().unwrap(),
        )
    };
    let mut last = pair();
    let agreed = common::wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        last = pair();
        last.0 == last.1
    });
    assert!(
        agreed,
        "one attached interface: its counters are the totals, but they differ: {last:?}"
    );
}
