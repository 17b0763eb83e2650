//! Host tests of the shared parser and the pure verdict model (no kernel, no root).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use groundzero::{model::ModelLists, parse_entry, Action, Reason};
use groundzero_common::parse::{parse, MalformedAt, Parsed};
use groundzero_lab::craft::{self, L4, TPID_8021AD, TPID_8021Q};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn parses_ipv4_and_ipv6_sources_and_transport_offsets() {
    let p = craft::udp4(v4("198.18.0.7"), b"hi");
    assert_eq!(
        parse(&p[..]),
        Parsed::V4 {
            src: [198, 18, 0, 7],
            protocol: 17,
            l3_offset: 14,
            l4_offset: 34
        }
    );
    let p = craft::udp6(v6("2001:2::7"), b"hi");
    assert_eq!(
        parse(&p[..]),
        Parsed::V6 {
            src: v6("2001:2::7").octets(),
            next_header: 17,
            l3_offset: 14,
            l4_offset: 54
        }
    );
}

#[test]
fn looks_through_one_and_two_vlan_tags_but_not_three() {
    let base = craft::udp4(v4("198.18.0.7"), b"hi");
    let one = craft::with_vlans(&base, &[(TPID_8021Q, 10)]);
    assert!(matches!(
        parse(&one[..]),
        Parsed::V4 {
            l3_offset: 18,
            l4_offset: 38,
            ..
        }
    ));
    let two = craft::with_vlans(&base, &[(TPID_8021AD, 10), (TPID_8021Q, 20)]);
    assert!(matches!(
        parse(&two[..]),
        Parsed::V4 {
            l3_offset: 22,
            l4_offset: 42,
            ..
        }
    ));
    let three = craft::with_vlans(&base, &[(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)]);
    assert_eq!(
        parse(&three[..]),
        Parsed::NonIp {
            ethertype: TPID_8021Q
        }
    );
}

#[test]
fn ipv4_options_move_the_transport_header_not_the_source() {
    let p = craft::udp4_with_options(v4("198.18.0.9"), &[1, 1, 1, 1, 1, 1, 1, 0], b"x");
    assert_eq!(
        parse(&p[..]),
        Parsed::V4 {
            src: [198, 18, 0, 9],
            protocol: 17,
            l3_offset: 14,
            l4_offset: 42
        }
    );
}

#[test]
fn every_truncation_is_malformed_at_the_header_it_cuts() {
    let v4p = craft::udp4(v4("198.18.0.9"), b"");
    for len in 0..v4p.len() {
        let expected = match len {
            0..=13 => Some(MalformedAt::Ethernet),
            14..=33 => Some(MalformedAt::Ipv4),
            _ => None, // the UDP header is not parsed: source filtering does not need it
        };
        let got = parse(&v4p[..len]);
        match expected {
            Some(at) => assert_eq!(got, Parsed::Malformed { at }, "IPv4 cut at {len}"),
            None => assert!(
                matches!(got, Parsed::V4 { .. }),
                "IPv4 cut at {len}: {got:?}"
            ),
        }
    }
    let v6p = craft::with_vlans(&craft::udp6(v6("2001:2::9"), b""), &[(TPID_8021Q, 5)]);
    for len in 14..58 {
        let expected = if len < 18 {
            MalformedAt::Vlan
        } else {
            MalformedAt::Ipv6
        };
        assert_eq!(
            parse(&v6p[..len]),
            Parsed::Malformed { at: expected },
            "IPv6+VLAN cut at {len}"
        );
    }
    let opts = craft::udp4_with_options(v4("198.18.0.9"), &[1; 40], b"");
    for len in 34..(14 + 60) {
        assert_eq!(
            parse(&opts[..len]),
            Parsed::Malformed {
                at: MalformedAt::Ipv4
            },
            "options cut at {len}"
        );
    }
}

#[test]
fn inconsistent_ipv4_headers_are_malformed() {
    let good = craft::udp4(v4("198.18.0.9"), b"payload");
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut short_ihl = good.clone();
    short_ihl[14] = 0x44;
    let mut short_total = good.clone();
    short_total[16..18].copy_from_slice(&19u16.to_be_bytes());
    let mut v6_version = craft::udp6(v6("2001:2::9"), b"");
    v6_version[14] = 0x45;
    for (name, p) in [
        ("version", bad_version),
        ("ihl", short_ihl),
        ("total length", short_total),
    ] {
        assert_eq!(
            parse(&p[..]),
            Parsed::Malformed {
                at: MalformedAt::Ipv4
            },
            "{name}"
        );
    }
    assert_eq!(
        parse(&v6_version[..]),
        Parsed::Malformed {
            at: MalformedAt::Ipv6
        }
    );
}

#[test]
fn non_ip_is_non_ip() {
    let arp = craft::arp_request(v4("198.18.0.2"), v4("198.18.0.1"));
    assert_eq!(parse(&arp[..]), Parsed::NonIp { ethertype: 0x0806 });
}

/// Our parser against etherparse, an independent, maintained one, on well-formed packets.
#[test]
fn agrees_with_etherparse_on_well_formed_packets() {
    let sources: [IpAddr; 4] = [
        v4("198.18.0.1").into(),
        v4("203.0.113.200").into(),
        v6("2001:2::1").into(),
        v6("fe80::1").into(),
    ];
    for src in sources {
        let dst: IpAddr = if src.is_ipv4() {
            v4("198.18.0.1").into()
        } else {
            v6("2001:2::1").into()
        };
        for l4 in [
            L4::UDP,
            L4::TcpSyn {
                src_port: 1,
                dst_port: 2,
            },
            L4::IcmpEcho { id: 1, seq: 2 },
        ] {
            for tags in [
                &[][..],
                &[(TPID_8021Q, 7)][..],
                &[(TPID_8021AD, 7), (TPID_8021Q, 8)][..],
            ] {
                let p = craft::with_vlans(&craft::ip_packet(src, dst, l4, b"data"), tags);
                let sliced =
                    etherparse::SlicedPacket::from_ethernet(&p).expect("etherparse parses it");
                let theirs = match sliced.net.expect("has an IP layer") {
                    etherparse::NetSlice::Ipv4(h) => IpAddr::V4(h.header().source_addr()),
                    etherparse::NetSlice::Ipv6(h) => IpAddr::V6(h.header().source_addr()),
                };
                let ours = match parse(&p[..]) {
                    Parsed::V4 { src, .. } => IpAddr::from(src),
                    Parsed::V6 { src, .. } => IpAddr::from(src),
                    other => panic!("{src} {l4:?} {tags:?}: {other:?}"),
                };
                assert_eq!(ours, theirs);
            }
        }
    }
}

fn lists(allow: &[&str], block: &[&str]) -> ModelLists {
    let mut m = ModelLists::new();
    for a in allow {
        m.allow(parse_entry(a).unwrap());
    }
    for b in block {
        m.block(parse_entry(b).unwrap());
    }
    m
}

#[test]
fn decision_order_allow_then_exact_then_prefix() {
    let m = lists(
        &["198.18.7.0/24", "2001:2:7::/48"],
        &["198.18.0.2", "198.18.0.0/16", "2001:2::2", "2001:2::/32"],
    );
    let verdict = |src: &str| {
        let ip: IpAddr = src.parse().unwrap();
        let dst: IpAddr = if ip.is_ipv4() {
            v4("198.18.0.1").into()
        } else {
            v6("2001:2::1").into()
        };
        m.verdict(&craft::ip_packet(ip, dst, L4::UDP, b""), false)
    };
    assert_eq!(verdict("198.18.0.2"), Reason::BlockedExact);
    assert_eq!(verdict("198.18.9.9"), Reason::BlockedCidr);
    assert_eq!(verdict("198.18.7.2"), Reason::Allowlisted); // allow /24 inside block /16
    assert_eq!(verdict("198.20.0.1"), Reason::NoMatch);
    assert_eq!(verdict("2001:2::2"), Reason::BlockedExact);
    assert_eq!(verdict("2001:2:9::1"), Reason::BlockedCidr);
    assert_eq!(verdict("2001:2:7::2"), Reason::Allowlisted);
    assert_eq!(verdict("2001:3::1"), Reason::NoMatch);
}

#[test]
fn monitor_mode_passes_what_it_would_drop() {
    let m = lists(&[], &["198.18.0.2", "198.19.0.0/16"]);
    let exact = craft::udp4(v4("198.18.0.2"), b"");
    let prefix = craft::udp4(v4("198.19.1.1"), b"");
    assert_eq!(m.verdict(&exact, true), Reason::MonitorExact);
    assert_eq!(m.verdict(&prefix, true), Reason::MonitorCidr);
    assert_eq!(Reason::MonitorExact.action(), Action::Pass);
    assert_eq!(m.verdict(&exact, false).action(), Action::Drop);
}

#[test]
fn malformed_and_non_ip_pass_even_if_everything_is_blocked() {
    let m = lists(&[], &["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]);
    let truncated = &craft::udp4(v4("198.18.0.2"), b"")[..20];
    assert_eq!(m.verdict(truncated, false), Reason::Malformed);
    let arp = craft::arp_request(v4("198.18.0.2"), v4("198.18.0.1"));
    assert_eq!(m.verdict(&arp, false), Reason::NonIp);
}
