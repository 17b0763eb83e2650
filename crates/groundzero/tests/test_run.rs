//! The loaded XDP program on crafted frames, through BPF_PROG_TEST_RUN: for every path through the
//! parser and the lists, the action it returns AND the one counter that explains it.
//!
//! Every expectation is also checked against the host model (same lists), so a wrong expectation
//! written here fails on the model instead of passing on the kernel by accident.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use groundzero::{
    model::ModelLists, parse_entry, ratelimit::OverLimit, Error, IpNet, Reason, Shield,
};
use groundzero_common::{
    maps::Counter,
    parse::{parse, MalformedAt, Parsed},
};
use groundzero_lab::craft::{self, RawIpv4, RawIpv6, L4, TPID_8021AD, TPID_8021Q};

// Documentation and benchmarking ranges only: nothing here can be a real host.
const EXACT4: &str = "203.0.113.7";
const CIDR4: &str = "198.18.0.0/16";
const IN_CIDR4: &str = "198.18.77.1";
const ALLOW4: &str = "192.0.2.0/24";
const IN_ALLOW4: &str = "192.0.2.10";
/// Blocked exactly, and inside an allowed /29.
const EXACT_BUT_ALLOWED4: &str = "203.0.113.9";
const ALLOW_OVER_EXACT4: &str = "203.0.113.8/29";
/// Inside the blocked /16, and inside an allowed /24.
const ALLOW_OVER_CIDR4: &str = "198.18.5.0/24";
const CIDR_BUT_ALLOWED4: &str = "198.18.5.5";
const UNLISTED4: &str = "100.64.0.1";

const EXACT6: &str = "2001:db8::7";
const CIDR6: &str = "2001:db8:1::/48";
const IN_CIDR6: &str = "2001:db8:1:ff::1";
const ALLOW6: &str = "2001:db8:a::/48";
const IN_ALLOW6: &str = "2001:db8:a::10";
/// Blocked exactly and allowed exactly: the allow must win even at the same length.
const EXACT_BUT_ALLOWED6: &str = "2001:db8::9";
const ALLOW_OVER_CIDR6: &str = "2001:db8:1:5::/64";
const CIDR_BUT_ALLOWED6: &str = "2001:db8:1:5::5";
const UNLISTED6: &str = "2001:db8:ffff::1";

fn net(s: &str) -> IpNet {
    parse_entry(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A destination of the same family as `src`.
fn dst_for(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => ip("198.51.100.1"),
        IpAddr::V6(_) => ip("2001:db8:d::1"),
    }
}

/// A UDP frame from `src` (either family).
fn udp(src: &str) -> Vec<u8> {
    let src = ip(src);
    craft::ip_packet(src, dst_for(src), L4::UDP, b"groundzero")
}

fn tcp_syn(src: &str) -> Vec<u8> {
    let src = ip(src);
    let l4 = L4::TcpSyn {
        src_port: 40001,
        dst_port: 443,
    };
    craft::ip_packet(src, dst_for(src), l4, &[])
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum List {
    Allow,
    Block,
}
use List::{Allow, Block};

/// The shield and the model with the same lists. The model has no removal, so it is rebuilt
/// from these vectors whenever it is consulted.
struct Bench {
    shield: Shield,
    allow: Vec<IpNet>,
    block: Vec<IpNet>,
    monitor: bool,
}

impl Bench {
    fn new() -> Self {
        Self {
            shield: common::shield(),
            allow: Vec::new(),
            block: Vec::new(),
            monitor: false,
        }
    }

    /// The lists every verdict test starts from: each rule once per family, and each way the
    /// allowlist can override a block.
    fn standard() -> Self {
        let mut b = Self::new();
        for s in [
            EXACT4,
            EXACT_BUT_ALLOWED4,
            CIDR4,
            EXACT6,
            EXACT_BUT_ALLOWED6,
            CIDR6,
        ] {
            b.block(s);
        }
        for s in [
            ALLOW4,
            ALLOW_OVER_EXACT4,
            ALLOW_OVER_CIDR4,
            ALLOW6,
            EXACT_BUT_ALLOWED6,
            ALLOW_OVER_CIDR6,
        ] {
            b.allow(s);
        }
        b
    }

    fn block(&mut self, s: &str) {
        self.shield.block(net(s)).unwrap();
        self.block.push(net(s));
    }

    fn allow(&mut self, s: &str) {
        self.shield.allow(net(s)).unwrap();
        self.allow.push(net(s));
    }

    fn unblock(&mut self, s: &str) -> bool {
        self.block.retain(|n| *n != net(s));
        self.shield.unblock(net(s)).unwrap()
    }

    fn unallow(&mut self, s: &str) -> bool {
        self.allow.retain(|n| *n != net(s));
        self.shield.unallow(net(s)).unwrap()
    }

    fn set_monitor(&mut self, on: bool) {
        self.shield.set_monitor(on).unwrap();
        assert_eq!(self.shield.monitor().unwrap(), on);
        self.monitor = on;
    }

    fn model(&self) -> ModelLists {
        let mut m = ModelLists::new();
        self.allow.iter().for_each(|n| m.allow(*n));
        self.block.iter().for_each(|n| m.block(*n));
        m
    }

    /// Runs `pkt` through the kernel; asserts the action and that exactly one packet of exactly
    /// this many bytes was counted, under `reason` and under no other. The model must agree.
    #[track_caller]
    fn expect(&self, pkt: &[u8], reason: Reason) {
        let model = self.model().verdict(pkt, self.monitor);
        assert_eq!(
            model,
            reason,
            "the model disagrees with this test's expectation for {}",
            hex(pkt)
        );
        let got = self.run(pkt);
        assert_eq!(got, reason, "kernel reason for {}", hex(pkt));
    }

    /// The kernel's reason for `pkt`, read from the counters; asserts that the action matches it
    /// and that nothing else was counted.
    #[track_caller]
    fn run(&self, pkt: &[u8]) -> Reason {
        let before = self.shield.counters().unwrap();
        let action = self
            .shield
            .test_run(pkt)
            .unwrap_or_else(|e| panic!("test_run on {}: {e:?}", hex(pkt)));
        let delta = self.shield.counters().unwrap().since(&before);
        let counted: Vec<(Reason, Counter)> = delta.iter().filter(|(_, c)| c.packets > 0).collect();
        let [(reason, counter)] = counted[..] else {
            panic!(
                "expected exactly one reason counted for {}, got {counted:?}",
                hex(pkt)
            );
        };
        assert_eq!(
            counter,
            Counter {
                packets: 1,
                bytes: pkt.len() as u64
            },
            "{reason:?} for {}",
            hex(pkt)
        );
        assert_eq!(
            delta.total(),
            counter,
            "bytes counted without packets for {}",
            hex(pkt)
        );
        assert_eq!(
            action,
            reason.action(),
            "action vs counted reason {reason:?} for {}",
            hex(pkt)
        );
        reason
    }

    /// Like [`Bench::expect`] with `Reason::Malformed`, and the parser must name the header.
    #[track_caller]
    fn expect_malformed(&self, pkt: &[u8], at: MalformedAt) {
        assert_eq!(
            parse(pkt),
            Parsed::Malformed { at },
            "parse of {}",
            hex(pkt)
        );
        self.expect(pkt, Reason::Malformed);
    }

    /// Every entry's hits, keyed by list as well: one prefix can be in both lists, each copy with
    /// its own hits.
    fn hits(&self) -> BTreeMap<(List, IpNet), u64> {
        let blocked = self.shield.blocked().unwrap().into_iter();
        let allowed = self.shield.allowed().unwrap().into_iter();
        blocked
            .map(|e| ((Block, e.net), e.hits))
            .chain(allowed.map(|e| ((Allow, e.net), e.hits)))
            .collect()
    }
}

/// Every source of the standard lists with the reason it must get.
fn standard_cases() -> Vec<(&'static str, Reason)> {
    vec![
        (UNLISTED4, Reason::NoMatch),
        (IN_ALLOW4, Reason::Allowlisted),
        (EXACT4, Reason::BlockedExact),
        (IN_CIDR4, Reason::BlockedCidr),
        (EXACT_BUT_ALLOWED4, Reason::Allowlisted),
        (CIDR_BUT_ALLOWED4, Reason::Allowlisted),
        (UNLISTED6, Reason::NoMatch),
        (IN_ALLOW6, Reason::Allowlisted),
        (EXACT6, Reason::BlockedExact),
        (IN_CIDR6, Reason::BlockedCidr),
        (EXACT_BUT_ALLOWED6, Reason::Allowlisted),
        (CIDR_BUT_ALLOWED6, Reason::Allowlisted),
    ]
}

#[test]
fn udp_tcp_and_icmp_get_the_verdict_of_their_source() {
    let b = Bench::standard();
    let l4s = [
        L4::UDP,
        L4::TcpSyn {
            src_port: 40001,
            dst_port: 443,
        },
        L4::IcmpEcho { id: 7, seq: 1 },
    ];
    for (src, reason) in standard_cases() {
        for l4 in l4s {
            let src = ip(src);
            b.expect(&craft::ip_packet(src, dst_for(src), l4, b"abc"), reason);
        }
    }
}

#[test]
fn full_size_frames_are_judged_and_counted_in_full() {
    let b = Bench::standard();
    // 1514 bytes: a 1500-byte MTU packet and its Ethernet header, the largest untagged frame.
    for (src, reason) in [
        (EXACT4, Reason::BlockedExact),
        (IN_CIDR6, Reason::BlockedCidr),
        (UNLISTED4, Reason::NoMatch),
    ] {
        let src = ip(src);
        let header = if src.is_ipv4() {
            14 + 20 + 8
        } else {
            14 + 40 + 8
        };
        let payload = vec![0x77; 1514 - header];
        let pkt = craft::ip_packet(src, dst_for(src), L4::UDP, &payload);
        assert_eq!(pkt.len(), 1514);
        b.expect(&pkt, reason);
        b.expect(
            &craft::with_vlans(&pkt, &[(TPID_8021AD, 1), (TPID_8021Q, 2)]),
            reason,
        );
    }
}

#[test]
fn one_and_two_vlan_tags_are_looked_through_and_a_third_is_not() {
    let b = Bench::standard();
    let stacks: [&[(u16, u16)]; 5] = [
        &[(TPID_8021Q, 10)],
        &[(TPID_8021AD, 10)],
        &[(TPID_8021AD, 100), (TPID_8021Q, 200)],
        // Old-style QinQ with 802.1Q twice, and a reversed stack: the parser accepts either TPID
        // at either depth.
        &[(TPID_8021Q, 100), (TPID_8021Q, 200)],
        &[(TPID_8021Q, 100), (TPID_8021AD, 200)],
    ];
    for (src, reason) in [
        (EXACT4, Reason::BlockedExact),
        (IN_CIDR4, Reason::BlockedCidr),
        (UNLISTED4, Reason::NoMatch),
        (CIDR_BUT_ALLOWED4, Reason::Allowlisted),
        (EXACT6, Reason::BlockedExact),
        (IN_CIDR6, Reason::BlockedCidr),
        (UNLISTED6, Reason::NoMatch),
        (EXACT_BUT_ALLOWED6, Reason::Allowlisted),
    ] {
        for base in [udp(src), tcp_syn(src)] {
            for tags in stacks {
                b.expect(&craft::with_vlans(&base, tags), reason);
            }
            // Priority and drop-eligible bits are not part of the ethertype chain.
            let tcis = [(TPID_8021AD, 0xffff), (TPID_8021Q, 0xe001)];
            b.expect(&craft::with_vlan_tcis(&base, &tcis), reason);

            let three = [(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
            b.expect(&craft::with_vlans(&base, &three), Reason::NonIp);
        }
    }
}

#[test]
fn non_ip_frames_pass_as_non_ip() {
    let b = Bench::standard();
    // ARP carrying a blocked address must not be mistaken for an IPv4 source.
    let arp = craft::arp_request(v4(EXACT4), v4(UNLISTED4));
    b.expect(&arp, Reason::NonIp);
    b.expect(&craft::with_vlans(&arp, &[(TPID_8021Q, 5)]), Reason::NonIp);
    b.expect(
        &craft::with_vlans(&arp, &[(TPID_8021AD, 5), (TPID_8021Q, 6)]),
        Reason::NonIp,
    );
    // 802.3 length frame (LLC, spanning tree): the "ethertype" is a length, 0x0026 = 38.
    let mut llc = vec![0x42, 0x42, 0x03, 0, 0, 0];
    llc.resize(38, 0);
    b.expect(&craft::raw_frame(0x0026, &llc), Reason::NonIp);
    // LLDP and a made-up ethertype, both followed by a blocked IPv4 header's bytes.
    let ip_bytes = RawIpv4::new(v4(EXACT4)).bytes();
    b.expect(&craft::raw_frame(0x88cc, &ip_bytes), Reason::NonIp);
    b.expect(&craft::raw_frame(0x0801, &ip_bytes), Reason::NonIp);
    // Nothing after a non-IP ethertype is needed.
    b.expect(&craft::raw_frame(0x0806, &[]), Reason::NonIp);
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel_and_malformed_in_the_model() {
    let b = Bench::standard();
    let full = udp(EXACT4);
    for len in 0..14 {
        let pkt = &full[..len];
        assert_eq!(
            parse(pkt),
            Parsed::Malformed {
                at: MalformedAt::Ethernet
            },
            "{len} bytes"
        );
        let before = b.shield.counters().unwrap();
        match b.shield.test_run(pkt) {
            Err(Error::TestRun(aya::programs::ProgramError::SyscallError(e))) => assert_eq!(
                e.io_error.raw_os_error(),
                Some(libc::EINVAL),
                "{len} bytes: {e:?}"
            ),
            other => panic!("{len} bytes: expected EINVAL from BPF_PROG_TEST_RUN, got {other:?}"),
        }
        assert_eq!(
            b.shield.counters().unwrap().since(&before).total().packets,
            0,
            "a refused run must not count"
        );
    }
}

#[test]
fn truncation_at_and_just_after_every_header_boundary_is_malformed() {
    let b = Bench::standard();
    // Per family: its header's length, where a cut marks it, and the VLAN stacks to wrap it in.
    let families = [
        (
            [
                (EXACT4, Reason::BlockedExact),
                (IN_CIDR4, Reason::BlockedCidr),
            ],
            20,
            MalformedAt::Ipv4,
            TPID_8021Q,
        ),
        (
            [
                (EXACT6, Reason::BlockedExact),
                (IN_CIDR6, Reason::BlockedCidr),
            ],
            40,
            MalformedAt::Ipv6,
            TPID_8021AD,
        ),
    ];
    for (sources, header, at, single_tag) in families {
        for (src, reason) in sources {
            let base = udp(src);
            // Only the Ethernet header: the announced IP header is missing entirely.
            b.expect_malformed(&base[..14], at);
            // Every cut of the header, including those where the source is already there.
            for (tags, l3) in [
                (&[][..], 14),
                (&[(single_tag, 7)][..], 18),
                (&[(TPID_8021AD, 7), (TPID_8021Q, 8)][..], 22),
            ] {
                let pkt = craft::with_vlans(&base, tags);
                for cut in l3..l3 + header {
                    b.expect_malformed(&pkt[..cut], at);
                }
                // The header is all the parser needs: the transport header may be missing.
                b.expect(&pkt[..l3 + header], reason);
                b.expect(&pkt[..l3 + header + 1], reason);
            }
        }
    }
}

#[test]
fn truncation_inside_a_vlan_tag_is_malformed() {
    let b = Bench::standard();
    for src in [EXACT4, EXACT6] {
        let base = udp(src);
        let one = craft::with_vlans(&base, &[(TPID_8021Q, 7)]);
        for cut in 14..18 {
            b.expect_malformed(&one[..cut], MalformedAt::Vlan);
        }
        let two = craft::with_vlans(&base, &[(TPID_8021AD, 7), (TPID_8021Q, 8)]);
        for cut in 14..22 {
            b.expect_malformed(&two[..cut], MalformedAt::Vlan);
        }
        // Complete tags and nothing after them: the IP header is what is missing.
        let ip_at = if src == EXACT4 {
            MalformedAt::Ipv4
        } else {
            MalformedAt::Ipv6
        };
        b.expect_malformed(&one[..18], ip_at);
        b.expect_malformed(&two[..22], ip_at);
        // A third tag is not parsed, so cutting into it is not malformed but non-IP.
        let three = craft::with_vlans(&base, &[(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)]);
        for cut in 22..=26 {
            b.expect(&three[..cut], Reason::NonIp);
        }
    }
}

/// A 40-byte Record Route option (type 7, length 39, pointer 4, nine empty slots) and an end.
fn record_route_40() -> Vec<u8> {
    let mut options = vec![7, 39, 4];
    options.resize(39, 0);
    options.push(0);
    options
}

#[test]
fn ipv4_options_do_not_hide_the_source_and_cuts_inside_them_are_malformed() {
    let b = Bench::standard();
    let options_4 = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    for options in [options_4, record_route_40()] {
        for (src, reason) in [
            (EXACT4, Reason::BlockedExact),
            (IN_CIDR4, Reason::BlockedCidr),
            (UNLISTED4, Reason::NoMatch),
            (CIDR_BUT_ALLOWED4, Reason::Allowlisted),
        ] {
            let pkt = craft::udp4_with_options(v4(src), &options, b"payload");
            assert_eq!(pkt[14] & 0x0f, 5 + options.len() as u8 / 4, "IHL");
            b.expect(&pkt, reason);
            let tagged = craft::with_vlans(&pkt, &[(TPID_8021AD, 3), (TPID_8021Q, 4)]);
            b.expect(&tagged, reason);

            let header_end = 14 + 20 + options.len();
            for cut in 34..header_end {
                b.expect_malformed(&pkt[..cut], MalformedAt::Ipv4);
            }
            b.expect(&pkt[..header_end], reason);
        }
    }
}

#[test]
fn inconsistent_ipv4_headers_are_malformed_even_from_blocked_sources() {
    let b = Bench::standard();
    let good = RawIpv4 {
        payload: vec![0; 16],
        ..RawIpv4::new(v4(EXACT4))
    };
    b.expect(&good.frame(), Reason::BlockedExact);

    for version in [0, 1, 5, 6, 15] {
        let bad = RawIpv4 {
            version,
            ..good.clone()
        };
        b.expect_malformed(&bad.frame(), MalformedAt::Ipv4);
    }
    for ihl in 0..5 {
        let bad = RawIpv4 {
            ihl,
            ..good.clone()
        };
        b.expect_malformed(&bad.frame(), MalformedAt::Ipv4);
    }
    for total_len in [0, 1, 19] {
        let bad = RawIpv4 {
            total_len: Some(total_len),
            ..good.clone()
        };
        b.expect_malformed(&bad.frame(), MalformedAt::Ipv4);
    }
    // Total length exactly the header: an empty datagram is consistent.
    let exact = RawIpv4 {
        total_len: Some(20),
        ..good.clone()
    };
    b.expect(&exact.frame(), Reason::BlockedExact);

    // With options, the total length is compared with the whole header (IHL × 4), not 20.
    let with_options = RawIpv4 {
        ihl: 15,
        options: record_route_40(),
        ..good.clone()
    };
    b.expect(&with_options.frame(), Reason::BlockedExact);
    for total_len in [20, 59] {
        let bad = RawIpv4 {
            total_len: Some(total_len),
            ..with_options.clone()
        };
        b.expect_malformed(&bad.frame(), MalformedAt::Ipv4);
    }
    let exact = RawIpv4 {
        total_len: Some(60),
        ..with_options.clone()
    };
    b.expect(&exact.frame(), Reason::BlockedExact);

    // A total length beyond the frame is left to the kernel's own checks: the source is intact.
    let long = RawIpv4 {
        total_len: Some(1500),
        ..good.clone()
    };
    b.expect(&long.frame(), Reason::BlockedExact);

    // The IPv4 ethertype with an IPv6 header behind it, and the other way round.
    let v6_bytes = RawIpv6::new(v6(EXACT6)).bytes();
    b.expect_malformed(&craft::raw_frame(0x0800, &v6_bytes), MalformedAt::Ipv4);
    let v4_bytes = RawIpv4 {
        payload: vec![0; 40],
        ..good.clone()
    }
    .bytes();
    b.expect_malformed(&craft::raw_frame(0x86dd, &v4_bytes), MalformedAt::Ipv6);
}

#[test]
fn a_wrong_ipv6_version_is_malformed_even_from_a_blocked_source() {
    let b = Bench::standard();
    let good = RawIpv6 {
        payload: vec![0; 8],
        ..RawIpv6::new(v6(EXACT6))
    };
    b.expect(&good.frame(), Reason::BlockedExact);
    for version in [0, 4, 7, 15] {
        let bad = RawIpv6 {
            version,
            ..good.clone()
        };
        b.expect_malformed(&bad.frame(), MalformedAt::Ipv6);
    }
}

#[test]
fn every_ipv4_fragment_gets_the_verdict_of_its_source() {
    let b = Bench::standard();
    for (src, reason) in [
        (EXACT4, Reason::BlockedExact),
        (IN_CIDR4, Reason::BlockedCidr),
        (UNLISTED4, Reason::NoMatch),
        (EXACT_BUT_ALLOWED4, Reason::Allowlisted),
    ] {
        let first = craft::ipv4_fragment(v4(src), 0, true, &[0x11; 16]);
        let middle = craft::ipv4_fragment(v4(src), 2, true, &[0x22; 16]);
        let last = craft::ipv4_fragment(v4(src), 4, false, &[0x33; 5]);
        for pkt in [first, middle, last] {
            b.expect(&pkt, reason);
            b.expect(&craft::with_vlans(&pkt, &[(TPID_8021Q, 9)]), reason);
        }
    }
}

#[test]
fn every_ipv6_fragment_gets_the_verdict_of_its_source() {
    let b = Bench::standard();
    for (src, reason) in [
        (EXACT6, Reason::BlockedExact),
        (IN_CIDR6, Reason::BlockedCidr),
        (UNLISTED6, Reason::NoMatch),
    ] {
        // Fragment extension header (44): next header UDP, offset in 8-byte units, M flag.
        for (offset, more) in [(0u16, true), (2, true), (4, false)] {
            let offset_flags = (offset << 3) | u16::from(more);
            let mut payload = vec![17, 0];
            payload.extend_from_slice(&offset_flags.to_be_bytes());
            payload.extend_from_slice(&0xfeed_beefu32.to_be_bytes());
            payload.extend_from_slice(&[0x44; 16]);
            let pkt = RawIpv6 {
                next_header: 44,
                payload,
                ..RawIpv6::new(v6(src))
            };
            b.expect(&pkt.frame(), reason);
        }
    }
}

#[test]
fn monitor_mode_passes_and_counts_what_it_would_drop() {
    let mut b = Bench::standard();
    assert!(!b.shield.monitor().unwrap());
    b.set_monitor(true);
    let arp = craft::arp_request(v4(EXACT4), v4(UNLISTED4));
    let truncated = udp(EXACT4)[..30].to_vec();
    for pass in 0..2 {
        for (src, reason) in standard_cases() {
            let monitored = match reason {
                Reason::BlockedExact => Reason::MonitorExact,
                Reason::BlockedCidr => Reason::MonitorCidr,
                other => other,
            };
            let expected = if b.monitor { monitored } else { reason };
            b.expect(&udp(src), expected);
            b.expect(
                &craft::with_vlans(&tcp_syn(src), &[(TPID_8021AD, 1), (TPID_8021Q, 2)]),
                expected,
            );
        }
        b.expect(&arp, Reason::NonIp);
        b.expect(&truncated, Reason::Malformed);
        if pass == 0 {
            b.set_monitor(false);
        }
    }
    // Switching it on twice, or off twice, is not a toggle.
    b.set_monitor(true);
    b.set_monitor(true);
    b.expect(&udp(EXACT6), Reason::MonitorExact);
    b.set_monitor(false);
    b.set_monitor(false);
    b.expect(&udp(EXACT6), Reason::BlockedExact);
}

#[test]
fn entry_hits_rise_by_exactly_the_packets_that_matched_them() {
    let mut b = Bench::standard();
    for e in b
        .shield
        .blocked()
        .unwrap()
        .iter()
        .chain(&b.shield.allowed().unwrap())
    {
        assert_eq!(
            (e.hits, e.last_hit_ns),
            (0, 0),
            "{} before any packet",
            e.net
        );
    }
    let sends: &[(&str, u64, List, &str)] = &[
        (EXACT4, 3, Block, EXACT4),
        (IN_CIDR4, 2, Block, CIDR4),
        (IN_ALLOW4, 4, Allow, ALLOW4),
        // The allow entry gets the hit; the block entry is never even looked up.
        (EXACT_BUT_ALLOWED4, 5, Allow, ALLOW_OVER_EXACT4),
        (CIDR_BUT_ALLOWED4, 6, Allow, ALLOW_OVER_CIDR4),
        (EXACT6, 7, Block, EXACT6),
        (IN_CIDR6, 1, Block, CIDR6),
        // Same /128 in both lists: only the allowlist's copy is credited.
        (EXACT_BUT_ALLOWED6, 2, Allow, EXACT_BUT_ALLOWED6),
        (CIDR_BUT_ALLOWED6, 3, Allow, ALLOW_OVER_CIDR6),
    ];
    let mut expected: BTreeMap<(List, IpNet), u64> = b.hits().into_keys().map(|k| (k, 0)).collect();
    assert_eq!(
        expected.len(),
        12,
        "both copies of {EXACT_BUT_ALLOWED6} are listed"
    );
    for &(src, count, list, entry) in sends {
        for _ in 0..count {
            b.run(&udp(src));
        }
        *expected.get_mut(&(list, net(entry))).unwrap() += count;
    }
    // Packets that match nothing, or never reach a lookup, must not touch any entry.
    b.expect(&udp(UNLISTED4), Reason::NoMatch);
    b.expect(&udp(UNLISTED6), Reason::NoMatch);
    b.expect(&udp(EXACT4)[..14 + 19], Reason::Malformed);
    let bad_version = RawIpv4 {
        version: 6,
        ..RawIpv4::new(v4(EXACT4))
    };
    b.expect(&bad_version.frame(), Reason::Malformed);
    b.expect(&craft::arp_request(v4(EXACT4), v4(EXACT4)), Reason::NonIp);
    // Monitor mode still counts the entry that would have dropped the packet.
    b.set_monitor(true);
    b.expect(&udp(EXACT4), Reason::MonitorExact);
    b.expect(&udp(IN_CIDR6), Reason::MonitorCidr);
    *expected.get_mut(&(Block, net(EXACT4))).unwrap() += 1;
    *expected.get_mut(&(Block, net(CIDR6))).unwrap() += 1;

    assert_eq!(b.hits(), expected);
    for e in b
        .shield
        .blocked()
        .unwrap()
        .iter()
        .chain(&b.shield.allowed().unwrap())
    {
        assert_eq!(
            e.hits == 0,
            e.last_hit_ns == 0,
            "{}: a last-hit time exactly when hit",
            e.net
        );
    }
}

#[test]
fn unblock_and_unallow_take_effect_on_the_next_packet() {
    let mut b = Bench::standard();
    b.expect(&udp(EXACT4), Reason::BlockedExact);
    assert!(b.unblock(EXACT4));
    b.expect(&udp(EXACT4), Reason::NoMatch);
    assert!(!b.unblock(EXACT4), "already gone");

    b.expect(&udp(IN_CIDR6), Reason::BlockedCidr);
    assert!(b.unblock(CIDR6));
    b.expect(&udp(IN_CIDR6), Reason::NoMatch);
    // The allow under the removed prefix still allows.
    b.expect(&udp(CIDR_BUT_ALLOWED6), Reason::Allowlisted);

    // Removing the allow uncovers the block it was overriding.
    b.expect(&udp(CIDR_BUT_ALLOWED4), Reason::Allowlisted);
    assert!(b.unallow(ALLOW_OVER_CIDR4));
    b.expect(&udp(CIDR_BUT_ALLOWED4), Reason::BlockedCidr);
    b.expect(&udp(EXACT_BUT_ALLOWED6), Reason::Allowlisted);
    assert!(b.unallow(EXACT_BUT_ALLOWED6));
    b.expect(&udp(EXACT_BUT_ALLOWED6), Reason::BlockedExact);

    // And blocking again restores the drop.
    b.block(EXACT4);
    b.expect(&udp(EXACT4), Reason::BlockedExact);
}

#[test]
fn the_allowlist_wins_over_more_specific_blocks_and_nested_blocks_all_drop() {
    let mut b = Bench::new();
    for s in ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.128/25", "10.1.2.3"] {
        b.block(s);
    }
    b.allow("10.1.2.0/24");
    for s in [
        "2001:db8::/32",
        "2001:db8:1::/48",
        "2001:db8:1:2::/96",
        "2001:db8:1:2::3",
    ] {
        b.block(s);
    }
    b.allow("2001:db8:1:2::/64");

    let cases: &[(&str, Reason, &str)] = &[
        ("10.1.2.3", Reason::Allowlisted, "10.1.2.0/24"),
        ("10.1.2.200", Reason::Allowlisted, "10.1.2.0/24"),
        ("10.1.2.0", Reason::Allowlisted, "10.1.2.0/24"),
        ("10.1.2.255", Reason::Allowlisted, "10.1.2.0/24"),
        ("10.1.3.0", Reason::BlockedCidr, "10.1.0.0/16"),
        ("10.1.1.255", Reason::BlockedCidr, "10.1.0.0/16"),
        ("10.2.0.1", Reason::BlockedCidr, "10.0.0.0/8"),
        ("10.255.255.255", Reason::BlockedCidr, "10.0.0.0/8"),
        ("9.255.255.255", Reason::NoMatch, ""),
        ("11.0.0.0", Reason::NoMatch, ""),
        ("2001:db8:1:2::3", Reason::Allowlisted, "2001:db8:1:2::/64"),
        (
            "2001:db8:1:2::ffff",
            Reason::Allowlisted,
            "2001:db8:1:2::/64",
        ),
        ("2001:db8:1:3::", Reason::BlockedCidr, "2001:db8:1::/48"),
        ("2001:db8:2::1", Reason::BlockedCidr, "2001:db8::/32"),
        (
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            Reason::BlockedCidr,
            "2001:db8::/32",
        ),
        (
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            Reason::NoMatch,
            "",
        ),
        ("2001:db9::", Reason::NoMatch, ""),
    ];
    let mut expected: BTreeMap<(List, IpNet), u64> = b.hits().into_keys().map(|k| (k, 0)).collect();
    for &(src, reason, entry) in cases {
        b.expect(&udp(src), reason);
        if !entry.is_empty() {
            let list = if reason == Reason::Allowlisted {
                Allow
            } else {
                Block
            };
            // The LPM trie credits the longest matching prefix, not every one that contains it.
            *expected.get_mut(&(list, net(entry))).unwrap() += 1;
        }
    }
    assert_eq!(b.hits(), expected);

    // Taking out the inner prefix leaves the outer one blocking; taking out the outer one too
    // leaves nothing.
    assert!(b.unblock("10.1.0.0/16"));
    b.expect(&udp("10.1.3.0"), Reason::BlockedCidr);
    assert!(b.unblock("10.0.0.0/8"));
    b.expect(&udp("10.1.3.0"), Reason::NoMatch);
    assert!(b.unblock("2001:db8::/32"));
    b.expect(&udp("2001:db8:1:3::"), Reason::BlockedCidr);
    b.expect(&udp("2001:db8:2::1"), Reason::NoMatch);
}

#[test]
fn edge_prefix_lengths_cover_exactly_their_range() {
    let mut b = Bench::new();
    for s in [
        "128.0.0.0/1",
        "100.64.0.0/31",
        "100.64.0.4/30",
        "8000::/1",
        "2001:db8::/127",
        "2001:db8::4/126",
    ] {
        b.block(s);
    }
    let cases = [
        ("128.0.0.0", Reason::BlockedCidr),
        ("255.255.255.255", Reason::BlockedCidr),
        ("127.255.255.255", Reason::NoMatch),
        ("0.0.0.0", Reason::NoMatch),
        ("100.63.255.255", Reason::NoMatch),
        ("100.64.0.0", Reason::BlockedCidr),
        ("100.64.0.1", Reason::BlockedCidr),
        ("100.64.0.2", Reason::NoMatch),
        ("100.64.0.3", Reason::NoMatch),
        ("100.64.0.4", Reason::BlockedCidr),
        ("100.64.0.7", Reason::BlockedCidr),
        ("100.64.0.8", Reason::NoMatch),
        ("8000::", Reason::BlockedCidr),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            Reason::BlockedCidr,
        ),
        ("7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reason::NoMatch),
        ("::", Reason::NoMatch),
        ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", Reason::NoMatch),
        ("2001:db8::", Reason::BlockedCidr),
        ("2001:db8::1", Reason::BlockedCidr),
        ("2001:db8::2", Reason::NoMatch),
        ("2001:db8::3", Reason::NoMatch),
        ("2001:db8::4", Reason::BlockedCidr),
        ("2001:db8::7", Reason::BlockedCidr),
        ("2001:db8::8", Reason::NoMatch),
    ];
    for (src, reason) in cases {
        b.expect(&udp(src), reason);
    }

    // /0 blocks its whole family and nothing of the other; the allowlist still wins.
    let mut b = Bench::new();
    b.block("0.0.0.0/0");
    b.allow("192.0.2.1");
    for (src, reason) in [
        ("0.0.0.0", Reason::BlockedCidr),
        ("203.0.113.7", Reason::BlockedCidr),
        ("255.255.255.255", Reason::BlockedCidr),
        ("192.0.2.1", Reason::Allowlisted),
        ("2001:db8::1", Reason::NoMatch),
        ("::ffff:203.0.113.7", Reason::NoMatch),
    ] {
        b.expect(&udp(src), reason);
    }
    b.block("::/0");
    b.expect(&udp("2001:db8::1"), Reason::BlockedCidr);
    b.expect(&udp("::"), Reason::BlockedCidr);
}

/// Frames to cut at every length: each is padded to at least 200 bytes, so the sweep passes every
/// VLAN, IPv4 (with and without options) and IPv6 header boundary and then some.
fn sweep_bases() -> Vec<(&'static str, Vec<u8>, Reason)> {
    let pad = |mut p: Vec<u8>| {
        p.resize(p.len().max(200), 0xa5);
        p
    };
    let filler = [0x5a; 160];
    let two_tags = [(TPID_8021AD, 100), (TPID_8021Q, 200)];
    let three_tags = [(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
    vec![
        (
            "v4 udp exact",
            craft::udp4(v4(EXACT4), &filler),
            Reason::BlockedExact,
        ),
        (
            "v4 40 option bytes cidr, 2 tags",
            craft::with_vlans(
                &craft::udp4_with_options(v4(IN_CIDR4), &record_route_40(), &filler),
                &two_tags,
            ),
            Reason::BlockedCidr,
        ),
        (
            "v4 tcp syn allowed over exact, 1 tag",
            craft::with_vlans(&pad(tcp_syn(EXACT_BUT_ALLOWED4)), &[(TPID_8021Q, 5)]),
            Reason::Allowlisted,
        ),
        (
            "v4 fragment unlisted",
            pad(craft::ipv4_fragment(v4(UNLISTED4), 3, true, &filler)),
            Reason::NoMatch,
        ),
        (
            "v6 udp cidr",
            craft::udp6(v6(IN_CIDR6), &filler),
            Reason::BlockedCidr,
        ),
        (
            "v6 icmp exact, 2 tags",
            craft::with_vlans(
                &pad(craft::ip_packet(
                    ip(EXACT6),
                    ip("2001:db8:d::1"),
                    L4::IcmpEcho { id: 1, seq: 2 },
                    &filler,
                )),
                &two_tags,
            ),
            Reason::BlockedExact,
        ),
        (
            "v6 tcp syn allowed over cidr, 1 tag",
            craft::with_vlans(&pad(tcp_syn(CIDR_BUT_ALLOWED6)), &[(TPID_8021AD, 5)]),
            Reason::Allowlisted,
        ),
        (
            "v4 exact behind 3 tags",
            craft::with_vlans(&craft::udp4(v4(EXACT4), &filler), &three_tags),
            Reason::NonIp,
        ),
        (
            "arp",
            pad(craft::arp_request(v4(EXACT4), v4(UNLISTED4))),
            Reason::NonIp,
        ),
    ]
}

#[test]
fn every_length_from_14_to_200_gets_the_model_verdict_and_only_pass_or_drop() {
    let b = Bench::standard();
    let model = b.model();
    for (name, base, full_reason) in sweep_bases() {
        assert!(base.len() >= 200, "{name}: {} bytes", base.len());
        b.expect(&base, full_reason);
        let mut seen = BTreeSet::new();
        for len in 14..=200 {
            let pkt = &base[..len];
            // test_run itself panics on any return code but PASS and DROP (XDP_ABORTED included).
            let got = b.run(pkt);
            let want = model.verdict(pkt, false);
            assert_eq!(got, want, "{name} cut to {len} bytes: {}", hex(pkt));
            seen.insert(got);
        }
        // The sweep must have crossed from the cut headers to the full verdict; only a frame
        // with no VLAN tag and a non-IP ethertype is never malformed.
        let mut needed = BTreeSet::from([full_reason]);
        if base[12..14] != [0x08, 0x06] {
            needed.insert(Reason::Malformed);
        }
        assert_eq!(seen, needed, "{name}: reasons seen while cutting");
    }
}

#[test]
fn raw_ipv4_builds_headers_etherparse_accepts_when_asked_for_a_valid_one() {
    // Host-only: guards the hand-built headers the tests above rely on.
    let frame = RawIpv4 {
        options: record_route_40(),
        ihl: 15,
        payload: vec![1, 2, 3],
        ..RawIpv4::new(v4(EXACT4))
    }
    .frame();
    let (header, rest) = etherparse::Ipv4Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(header.source, v4(EXACT4).octets());
    assert_eq!(header.header_checksum, header.calc_header_checksum());
    assert_eq!(rest, [1, 2, 3]);
    let frame = RawIpv6::new(v6(EXACT6)).frame();
    let (header, _) = etherparse::Ipv6Header::from_slice(&frame[14..]).unwrap();
    assert_eq!(header.source, v6(EXACT6).octets());
    // And the shared parser reads the same source as etherparse from the same bytes.
    assert!(matches!(parse(&frame[..]), Parsed::V6 { src, .. } if src == v6(EXACT6).octets()));
}

/// The rate limit on the kernel and on a model that keeps its buckets from packet to packet.
///
/// Rate 1 pps, burst 2: a bucket passes two packets at once and refills a whole token only a
/// second later, so a third packet sent within that second (these run in microseconds) is
/// over the limit.
struct RateBench {
    b: Bench,
    model: ModelLists,
}

impl RateBench {
    fn new(prefix_v4: u8, prefix_v6: u8) -> Self {
        let mut b = Bench::new();
        b.shield.set_rate_limit(1, 2, prefix_v4, prefix_v6).unwrap();
        let mut model = ModelLists::new();
        model.rate_limit(1, 2, prefix_v4, prefix_v6);
        Self { b, model }
    }

    fn exempt(&mut self, s: &str) {
        self.b.shield.rate_exempt(net(s)).unwrap();
        self.model.rate_exempt(net(s));
    }

    fn unexempt(&mut self, s: &str) -> bool {
        let kernel = self.b.shield.rate_unexempt(net(s)).unwrap();
        assert_eq!(kernel, self.model.rate_unexempt(net(s)), "unexempt {s}");
        kernel
    }

    fn set_monitor(&mut self, on: bool) {
        self.b.set_monitor(on);
    }

    /// One UDP packet from `src`: the model and the kernel must both give `reason`.
    #[track_caller]
    fn expect(&self, src: &str, reason: Reason) {
        let pkt = udp(src);
        assert_eq!(
            self.model.verdict(&pkt, self.b.monitor),
            reason,
            "the model disagrees with this test's expectation for {src}"
        );
        assert_eq!(self.b.run(&pkt), reason, "kernel reason for {src}");
    }

    /// Every report waiting in the ring buffer.
    fn reports(events: &mut groundzero::ratelimit::RateEvents) -> Vec<OverLimit> {
        let mut out = Vec::new();
        events.drain(|o| out.push(o));
        out
    }
}

#[test]
fn one_ipv6_64_shares_one_bucket_and_the_report_names_the_64() {
    let mut r = RateBench::new(32, 64);
    let mut events = r.b.shield.rate_events().unwrap();
    let config = r.b.shield.config().unwrap();
    assert_eq!((config.rate_prefix_v4(), config.rate_prefix_v6()), (32, 64));

    r.expect("2001:2::1", Reason::NoMatch);
    r.expect("2001:2::2", Reason::NoMatch);
    // A third address of the same /64: its own address is new, its bucket is not.
    r.expect("2001:2::3", Reason::RateLimited);
    r.expect("2001:2::ffff:ffff:ffff:ffff", Reason::RateLimited);
    // The neighbouring /64 has a bucket of its own.
    r.expect("2001:2:0:1::1", Reason::NoMatch);
    r.expect("2001:2:0:1::2", Reason::NoMatch);
    // Monitor mode: the bucket still says no, the packet passes.
    r.set_monitor(true);
    r.expect("2001:2::4", Reason::MonitorRate);
    r.set_monitor(false);

    let reports = RateBench::reports(&mut events);
    let first = reports
        .first()
        .expect("the kernel reported the bucket over its limit");
    // BPF_PROG_TEST_RUN runs the program as if on the loopback device's first queue.
    assert_eq!(
        *first,
        OverLimit {
            prefix: net("2001:2::/64"),
            dropped: 1,
            ifindex: 1
        }
    );
    // At most once a second per bucket, and never about the other /64.
    assert!(
        reports.iter().all(|o| o.prefix == net("2001:2::/64")),
        "{reports:?}"
    );
}

#[test]
fn at_full_length_every_ipv6_address_has_its_own_bucket() {
    let mut r = RateBench::new(32, 128);
    let mut events = r.b.shield.rate_events().unwrap();
    for src in ["2001:2::1", "2001:2::2", "2001:2::3", "2001:2::4"] {
        r.expect(src, Reason::NoMatch);
    }
    r.expect("2001:2::1", Reason::NoMatch);
    r.expect("2001:2::1", Reason::RateLimited);
    r.expect("2001:2::2", Reason::NoMatch);
    let reports = RateBench::reports(&mut events);
    assert_eq!(
        reports.iter().map(|o| o.prefix).collect::<Vec<_>>(),
        [net("2001:2::1/128")]
    );
}

#[test]
fn one_ipv4_24_shares_one_bucket_and_at_32_each_address_has_its_own() {
    let mut r = RateBench::new(24, 128);
    let mut events = r.b.shield.rate_events().unwrap();
    r.expect("198.18.0.1", Reason::NoMatch);
    r.expect("198.18.0.2", Reason::NoMatch);
    r.expect("198.18.0.3", Reason::RateLimited);
    r.expect("198.18.0.255", Reason::RateLimited);
    r.expect("198.18.1.1", Reason::NoMatch);
    // IPv6 stays per address at 128.
    r.expect("2001:2::1", Reason::NoMatch);
    r.expect("2001:2::2", Reason::NoMatch);
    r.expect("2001:2::3", Reason::NoMatch);
    let reports = RateBench::reports(&mut events);
    assert_eq!(
        reports.first().map(|o| (o.prefix, o.dropped)),
        Some((net("198.18.0.0/24"), 1))
    );

    let mut r = RateBench::new(32, 64);
    let mut events = r.b.shield.rate_events().unwrap();
    for src in ["198.18.0.1", "198.18.0.2", "198.18.0.3"] {
        r.expect(src, Reason::NoMatch);
    }
    r.expect("198.18.0.3", Reason::NoMatch);
    r.expect("198.18.0.3", Reason::RateLimited);
    let reports = RateBench::reports(&mut events);
    assert_eq!(
        reports.iter().map(|o| o.prefix).collect::<Vec<_>>(),
        [net("198.18.0.3/32")]
    );
}

#[test]
fn exempt_sources_are_never_limited_until_unexempted() {
    let mut r = RateBench::new(24, 64);
    r.exempt("2001:2:0:7::/64");
    r.exempt("198.18.7.0/24");
    // A host inside a bucket's prefix: exempt itself, and it spends none of the bucket's tokens.
    r.exempt("2001:2:0:8::1");
    assert_eq!(
        r.b.shield.rate_exempted().unwrap(),
        [
            net("198.18.7.0/24"),
            net("2001:2:0:7::/64"),
            net("2001:2:0:8::1/128")
        ]
    );
    for _ in 0..5 {
        r.expect("2001:2:0:7::1", Reason::NoMatch);
        r.expect("198.18.7.9", Reason::NoMatch);
        r.expect("2001:2:0:8::1", Reason::NoMatch);
    }
    r.expect("2001:2:0:8::2", Reason::NoMatch);
    r.expect("2001:2:0:8::3", Reason::NoMatch);
    r.expect("2001:2:0:8::4", Reason::RateLimited);
    r.expect("2001:2:0:8::1", Reason::NoMatch);

    assert!(r.unexempt("2001:2:0:7::/64"));
    assert!(
        !r.unexempt("2001:2:0:7::/64"),
        "a second removal finds nothing"
    );
    // Exactly that entry: a covering prefix is another one.
    assert!(!r.unexempt("198.18.0.0/16"));
    assert_eq!(
        r.b.shield.rate_exempted().unwrap(),
        [net("198.18.7.0/24"), net("2001:2:0:8::1/128")]
    );
    r.expect("2001:2:0:7::1", Reason::NoMatch);
    r.expect("2001:2:0:7::1", Reason::NoMatch);
    r.expect("2001:2:0:7::1", Reason::RateLimited);
    r.expect("198.18.7.9", Reason::NoMatch);
}

#[test]
fn set_rate_limit_refuses_out_of_range_prefixes_and_keeps_the_other_flags() {
    let mut shield = common::shield();
    shield.set_monitor(true).unwrap();
    shield.set_rate_limit(10, 5, 24, 56).unwrap();
    for (v4, v6, family, bad, max) in [
        (0, 64, 4, 0, 32),
        (33, 64, 4, 33, 32),
        (24, 0, 6, 0, 128),
        (24, 129, 6, 129, 128),
    ] {
        match shield.set_rate_limit(1, 1, v4, v6) {
            Err(Error::RatePrefix {
                family: f,
                prefix_len,
                max: m,
            }) => assert_eq!((f, prefix_len, m), (family, bad, max), "/{v4} /{v6}"),
            other => panic!("/{v4} /{v6}: {other:?}"),
        }
    }
    let c = shield.config().unwrap();
    assert_eq!((c.rate_pps, c.rate_burst), (10, 5), "nothing changed");
    assert_eq!((c.rate_prefix_v4(), c.rate_prefix_v6()), (24, 56));
    assert!(c.monitor());
    shield.set_monitor(false).unwrap();
    let c = shield.config().unwrap();
    assert_eq!((c.rate_prefix_v4(), c.rate_prefix_v6()), (24, 56));
    shield.set_rate_limit(0, 1, 32, 128).unwrap();
    let c = shield.config().unwrap();
    // Every flag the rate limit and monitor mode own is clear; the slot tables' switch, set by
    // the load, is left alone.
    assert_eq!(
        (
            c.rate_prefix_v4(),
            c.rate_prefix_v6(),
            c.flags & !groundzero_common::maps::Config::EXACT_SLOTS
        ),
        (32, 128, 0)
    );
    assert_eq!(
        groundzero_common::maps::Config::exact_slots_in(c.flags),
        cfg!(target_arch = "x86_64"),
        "the load's slot switch was lost"
    );
}

#[test]
fn a_full_exempt_list_fails_with_an_error_that_names_it() {
    let mut shield = common::shield();
    let capacity = groundzero_common::ratelimit::RATE_EXEMPT_ENTRIES;
    let host = |i: u32| -> IpNet { net(&format!("2001:2::{:x}:{:x}", i >> 16, i & 0xffff)) };
    for i in 0..capacity {
        shield.rate_exempt(host(i)).unwrap();
    }
    assert_eq!(shield.rate_exempted().unwrap().len(), capacity as usize);
    match shield.rate_exempt(host(capacity)) {
        Err(Error::RateExemptUpdate { entry, .. }) => assert_eq!(entry, host(capacity)),
        other => panic!("{other:?}"),
    }
    // Re-adding one that is there is an update, not a new entry.
    shield.rate_exempt(host(0)).unwrap();
    assert!(shield.rate_unexempt(host(0)).unwrap());
    shield.rate_exempt(host(capacity)).unwrap();
}
