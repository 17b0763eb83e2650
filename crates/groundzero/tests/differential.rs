//! Differential test: seeded random and mutated frames through the kernel program
//! (BPF_PROG_TEST_RUN) and through the host model with the same lists. For every packet the action
//! AND the reason must agree; the kernel's reason is read from its counters, per packet.
//!
//! Reproduce or extend with `GZ_DIFF_SEED=<seed> GZ_DIFF_PACKETS=<count>` (and
//! `GZ_DIFF_RATE_PACKETS=<count>` for the run with the rate limit on); the seed is printed
//! (run with `--nocapture` to see it and the per-reason tally).
//!
//! XDP_ABORTED (or any code but PASS and DROP) needs no check of its own here:
//! `Shield::test_run` panics on any other return value, which fails this test.
mod common;

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use groundzero::{model::ModelLists, parse_entry, IpNet, Reason, Shield};
use groundzero_common::parse::{parse, MalformedAt, Parsed};
use groundzero_lab::craft::{self, RawIpv4, RawIpv6};
use ipnet::{Ipv4Net, Ipv6Net};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Fixed, so that CI runs the same packets every time; override to explore.
const DEFAULT_SEED: u64 = 0x6772_6f75_6e64_7a30;
const DEFAULT_PACKETS: usize = 100_000;
/// The run with the rate limit on: fewer packets, since it also clears the buckets every chunk.
const DEFAULT_RATE_PACKETS: usize = 20_000;
/// Below this many packets the tally is too small to demand that every reason appears.
const COVERAGE_MIN_PACKETS: usize = 10_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Overlapping on purpose: nested blocks, allows inside blocks (wider and narrower), exact blocks
/// inside prefixes and inside allows, edge lengths (/1, /31, /32 allow, /127, /128 allow).
/// No /0 in any list: it would swallow every other rule of its family.
const BLOCK: &[&str] = &[
    "128.0.0.0/1",
    "10.0.0.0/8",
    "10.20.0.0/16",
    "10.20.30.0/24",
    "172.16.0.0/12",
    "192.0.2.0/31",
    "198.51.100.0/30",
    "203.0.113.128/25",
    "10.20.30.1",
    "10.20.30.40",
    "10.99.0.1",
    "192.0.2.2",
    "198.18.0.1",
    "203.0.113.127",
    "172.16.5.5",
    "0.0.0.0",
    "255.255.255.255",
    "8000::/1",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1:2::/64",
    "2001:db8:ffff::/127",
    "fd00::/8",
    "2001:db8:1:2::1",
    "2001:db8::1",
    "2001:db8:ffff::2",
    "2001:db9::1",
    "::",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fd00:1::7",
];
const ALLOW: &[&str] = &[
    "10.20.30.32/27",
    "172.16.5.5/32",
    "192.168.0.0/16",
    "200.0.0.0/8",
    "203.0.113.254/31",
    "10.99.0.0/31",
    "2001:db8:1:2::1:0/112",
    "2001:db8:1:2::1/128",
    "fd00:1::/32",
    "a000::/3",
    "2001:db8:ffff::1/128",
];

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter()
        .map(|s| parse_entry(s).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

/// Sources that sit on and just off the edges of every entry, so that the generator hits each
/// rule, each override and each boundary far more often than uniform addresses would.
fn source_pool(rng: &mut ChaCha8Rng, entries: &[IpNet]) -> (Vec<[u8; 4]>, Vec<[u8; 16]>) {
    let mut pool4 = Vec::new();
    let mut pool6 = Vec::new();
    for net in entries {
        match net {
            IpNet::V4(n) => {
                let first = u32::from(n.network());
                let last = u32::from(n.broadcast());
                let mut add = |a: u32| pool4.push(a.to_be_bytes());
                add(first);
                add(last);
                add(first.wrapping_sub(1));
                add(last.wrapping_add(1));
                add(first + (last - first) / 2);
                add(rng.gen_range(first..=last));
                if n.prefix_len() > 0 {
                    // The sibling prefix: differs only in the last network bit.
                    add(first ^ (1u32 << (32 - n.prefix_len())));
                }
            }
            IpNet::V6(n) => {
                let first = u128::from(n.network());
                let last = u128::from(n.broadcast());
                let mut add = |a: u128| pool6.push(a.to_be_bytes());
                add(first);
                add(last);
                add(first.wrapping_sub(1));
                add(last.wrapping_add(1));
                add(first + (last - first) / 2);
                add(rng.gen_range(first..=last));
                if n.prefix_len() > 0 {
                    add(first ^ (1u128 << (128 - n.prefix_len())));
                }
            }
        }
    }
    // IPv4 sources written as IPv4-mapped IPv6: a different address to the kernel, never a match
    // for the IPv4 entries.
    let mapped: Vec<[u8; 16]> = pool4
        .iter()
        .map(|a| Ipv4Addr::from(*a).to_ipv6_mapped().octets())
        .collect();
    pool6.extend(mapped);
    pool4.sort();
    pool4.dedup();
    pool6.sort();
    pool6.dedup();
    (pool4, pool6)
}

struct Generator {
    rng: ChaCha8Rng,
    pool4: Vec<[u8; 4]>,
    pool6: Vec<[u8; 16]>,
    /// Host entries of either list: the pool alone would hit them too rarely, since it has seven
    /// addresses around each prefix and most entries are prefixes.
    hosts4: Vec<[u8; 4]>,
    hosts6: Vec<[u8; 16]>,
}

impl Generator {
    fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.gen_range(0..=max);
        (0..len).map(|_| self.rng.gen()).collect()
    }

    fn src4(&mut self) -> [u8; 4] {
        match self.rng.gen_range(0..100) {
            0..=69 => *self.pool4.choose(&mut self.rng).unwrap(),
            70..=84 => *self.hosts4.choose(&mut self.rng).unwrap(),
            _ => self.rng.gen(),
        }
    }

    fn src6(&mut self) -> [u8; 16] {
        match self.rng.gen_range(0..100) {
            0..=69 => *self.pool6.choose(&mut self.rng).unwrap(),
            70..=84 => *self.hosts6.choose(&mut self.rng).unwrap(),
            _ => self.rng.gen(),
        }
    }

    fn ipv4(&mut self) -> Vec<u8> {
        let mut h = RawIpv4::new(Ipv4Addr::from(self.src4()));
        match self.rng.gen_range(0..100) {
            // Plain header.
            0..=64 => {}
            // Options, with the IHL that announces them.
            65..=84 => {
                h.ihl = self.rng.gen_range(6..=15);
                h.options = (0..(h.ihl as usize - 5) * 4)
                    .map(|_| self.rng.gen())
                    .collect();
            }
            // Any IHL (0..=4 included) with any amount of option bytes, agreeing or not.
            _ => {
                h.ihl = self.rng.gen_range(0..=15);
                h.options = self.random_bytes(40);
            }
        }
        if self.rng.gen_bool(0.08) {
            h.version = self.rng.gen_range(0..16);
        }
        if self.rng.gen_bool(0.15) {
            h.total_len = Some(if self.rng.gen_bool(0.5) {
                self.rng.gen_range(0..=80)
            } else {
                self.rng.gen()
            });
        }
        h.flags_fragment = match self.rng.gen_range(0..10) {
            0..=5 => 0,
            6 | 7 => 0x4000, // don't fragment
            _ => self.rng.gen(),
        };
        h.protocol = *[1, 6, 17, 47, 50, self.rng.gen()]
            .choose(&mut self.rng)
            .unwrap();
        h.payload = self.random_bytes(64);
        h.bytes()
    }

    fn ipv6(&mut self) -> Vec<u8> {
        let mut h = RawIpv6::new(Ipv6Addr::from(self.src6()));
        if self.rng.gen_bool(0.08) {
            h.version = self.rng.gen_range(0..16);
        }
        h.next_header = *[0, 6, 17, 44, 58, self.rng.gen()]
            .choose(&mut self.rng)
            .unwrap();
        if self.rng.gen_bool(0.1) {
            h.payload_len = Some(self.rng.gen());
        }
        h.payload = self.random_bytes(64);
        h.bytes()
    }

    /// A frame built field by field: 0 to 3 VLAN tags over IPv4, IPv6, ARP, an 802.3 length or
    /// any ethertype, and occasionally an IP header behind the other family's ethertype.
    fn structured(&mut self) -> Vec<u8> {
        let (ethertype, l3) = match self.rng.gen_range(0..100) {
            0..=44 => (0x0800, self.ipv4()),
            45..=79 => (0x86dd, self.ipv6()),
            80..=84 => {
                let arp =
                    craft::arp_request(Ipv4Addr::from(self.src4()), Ipv4Addr::from(self.src4()));
                (0x0806, arp[14..].to_vec())
            }
            85..=88 => (self.rng.gen_range(0..0x0600), self.random_bytes(80)),
            89..=94 => {
                let l3 = if self.rng.gen_bool(0.5) {
                    self.ipv4()
                } else {
                    self.random_bytes(80)
                };
                (self.rng.gen(), l3)
            }
            _ => {
                if self.rng.gen_bool(0.5) {
                    (0x86dd, self.ipv4())
                } else {
                    (0x0800, self.ipv6())
                }
            }
        };
        let depth = match self.rng.gen_range(0..100) {
            0..=44 => 0,
            45..=69 => 1,
            70..=91 => 2,
            _ => 3,
        };
        let tags: Vec<(u16, u16)> = (0..depth)
            .map(|_| {
                let tpid = if self.rng.gen_bool(0.5) {
                    craft::TPID_8021Q
                } else {
                    craft::TPID_8021AD
                };
                (tpid, self.rng.gen())
            })
            .collect();
        craft::with_vlan_tcis(&craft::raw_frame(ethertype, &l3), &tags)
    }

    /// A structured frame, then damage: byte flips in the first 64 bytes (where every header the
    /// parser reads lives), truncation to any length the kernel accepts, appended garbage.
    fn packet(&mut self) -> Vec<u8> {
        let mut pkt = self.structured();
        if self.rng.gen_bool(0.15) {
            let reach = pkt.len().min(64);
            for _ in 0..self.rng.gen_range(1..=4) {
                let i = self.rng.gen_range(0..reach);
                pkt[i] ^= self.rng.gen_range(1..=255u8);
            }
        }
        if self.rng.gen_bool(0.15) {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header; test_run.rs checks
            // that and the model's answer for them.
            // Half the cuts land where the headers are (at most 14 + 3 tags + 60 bytes of IPv4
            // header), so that every boundary is cut often, not once in a few hundred.
            let max = if self.rng.gen_bool(0.5) {
                pkt.len().min(14 + 12 + 60)
            } else {
                pkt.len()
            };
            let len = self.rng.gen_range(14..=max);
            pkt.truncate(len);
        }
        if self.rng.gen_bool(0.1) {
            let garbage = self.random_bytes(64);
            pkt.extend_from_slice(&garbage);
        }
        pkt
    }
}

/// Which map an entry lives in: the same prefix can be in the allowlist and the blocklist, and
/// each keeps its own hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum List {
    Allow,
    Block,
}

/// The entry the kernel credits with a hit for `reason`: the exact entry, or the longest prefix
/// of the trie that decided (an LPM trie lookup returns only the longest match).
fn credited_entry(
    reason: Reason,
    src: IpNet,
    allow: &[IpNet],
    block: &[IpNet],
) -> Option<(List, IpNet)> {
    let longest = |list: &[IpNet], hosts_too: bool| {
        list.iter()
            .filter(|n| hosts_too || n.prefix_len() < n.max_prefix_len())
            .filter(|n| n.contains(&src))
            .max_by_key(|n| n.prefix_len())
            .copied()
    };
    match reason {
        // Host entries of the allowlist live in its trie as /32 and /128.
        Reason::Allowlisted => longest(allow, true).map(|n| (List::Allow, n)),
        Reason::BlockedExact | Reason::MonitorExact => Some((List::Block, src)),
        // Host entries of the blocklist live in the hash, not in the prefix trie.
        Reason::BlockedCidr | Reason::MonitorCidr => {
            longest(block, false).map(|n| (List::Block, n))
        }
        // Buckets are not list entries.
        Reason::NoMatch
        | Reason::NonIp
        | Reason::Malformed
        | Reason::RateLimited
        | Reason::MonitorRate => None,
    }
}

fn source_of(pkt: &[u8]) -> Option<IpNet> {
    match parse(pkt) {
        Parsed::V4 { src, .. } => Some(IpNet::V4(Ipv4Net::new(src.into(), 32).unwrap())),
        Parsed::V6 { src, .. } => Some(IpNet::V6(Ipv6Net::new(src.into(), 128).unwrap())),
        _ => None,
    }
}

fn all_hits(shield: &Shield) -> BTreeMap<(List, IpNet), u64> {
    let blocked = shield
        .blocked()
        .unwrap()
        .into_iter()
        .map(|e| (List::Block, e));
    let allowed = shield
        .allowed()
        .unwrap()
        .into_iter()
        .map(|e| (List::Allow, e));
    blocked
        .chain(allowed)
        .map(|(list, e)| ((list, e.net), e.hits))
        .collect()
}

/// The rate limit of one run.
struct RateLimit {
    pps: u32,
    burst: u32,
    prefix_v4: u8,
    prefix_v6: u8,
    exempt: &'static [&'static str],
    /// Both sides forget their buckets every this many packets. The model runs with the clock
    /// stopped, the kernel's buckets refill at `pps`: at 1 pps a chunk of 200 packets (10 ms
    /// on an idle machine, 150 ms on a busy one) refills a fraction of a token, never the whole
    /// token that would change a verdict, while a run of many seconds would.
    chunk: usize,
}

#[test]
fn kernel_and_model_agree_on_every_packet() {
    let packets: usize = env_or("GZ_DIFF_PACKETS", DEFAULT_PACKETS);
    differential(packets, None);
}

/// The same with the rate limit on, per /16 and per /48 (not the default lengths): buckets
/// shared by many sources of the pool, so that rate-limited and passing packets from one prefix
/// interleave with list verdicts, and with exempt prefixes (a host and prefixes narrower and
/// wider than a bucket) that must neither be limited nor spend their bucket's tokens.
#[test]
fn kernel_and_model_agree_with_the_rate_limit_per_prefix() {
    let packets: usize = env_or("GZ_DIFF_RATE_PACKETS", DEFAULT_RATE_PACKETS);
    differential(
        packets,
        Some(RateLimit {
            pps: 1,
            burst: 3,
            prefix_v4: 16,
            prefix_v6: 48,
            // Each covers sources of the pool that no list decides (the edges just outside
            // 172.16.0.0/12, 203.0.113.128/25, 198.51.100.0/30, 2001:db8:ffff::/127 and
            // 2001:db8::/32): wider than their bucket, narrower, a host, equal, narrower.
            exempt: &[
                "172.0.0.0/8",
                "203.0.113.0/26",
                "198.51.100.4",
                "2001:db8:fffe::/48",
                "2001:db9::/64",
            ],
            chunk: 200,
        }),
    );
}

fn differential(packets: usize, rate: Option<RateLimit>) {
    let seed: u64 = env_or("GZ_DIFF_SEED", DEFAULT_SEED);
    println!("differential: GZ_DIFF_SEED={seed} packets={packets}");

    let allow = nets(ALLOW);
    let block = nets(BLOCK);
    let mut shield = common::shield();
    shield.allow_all(&allow).unwrap();
    shield.block_all(&block).unwrap();
    let mut model = ModelLists::new();
    allow.iter().for_each(|n| model.allow(*n));
    block.iter().for_each(|n| model.block(*n));
    if let Some(r) = &rate {
        shield
            .set_rate_limit(r.pps, r.burst, r.prefix_v4, r.prefix_v6)
            .unwrap();
        model.rate_limit(r.pps, r.burst, r.prefix_v4, r.prefix_v6);
        for n in nets(r.exempt) {
            shield.rate_exempt(n).unwrap();
            model.rate_exempt(n);
        }
    }
    let exempt = rate.as_ref().map(|r| nets(r.exempt)).unwrap_or_default();
    // Packets from exempt sources that reached the rate limit (no list decided them).
    let mut exempt_reached = 0u64;
    let mut chunk_started = Instant::now();

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let all_entries: Vec<IpNet> = allow.iter().chain(&block).copied().collect();
    let (pool4, pool6) = source_pool(&mut rng, &all_entries);
    let mut hosts4 = Vec::new();
    let mut hosts6 = Vec::new();
    for net in &all_entries {
        match net {
            IpNet::V4(n) if n.prefix_len() == 32 => hosts4.push(n.addr().octets()),
            IpNet::V6(n) if n.prefix_len() == 128 => hosts6.push(n.addr().octets()),
            _ => {}
        }
    }
    let mut gen = Generator {
        rng,
        pool4,
        pool6,
        hosts4,
        hosts6,
    };

    let mut monitor = false;
    let mut tally: BTreeMap<Reason, u64> = Reason::ALL.iter().map(|&r| (r, 0)).collect();
    let mut malformed_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected_hits: BTreeMap<(List, IpNet), u64> = allow
        .iter()
        .map(|&n| ((List::Allow, n), 0))
        .chain(block.iter().map(|&n| ((List::Block, n), 0)))
        .collect();
    let mut frame_bytes = 0u64;
    let started = Instant::now();
    // One counters read per packet (the read after one packet is the read before the next), so
    // every packet's reason is the kernel's own, not inferred from batch totals. It costs about
    // 50 µs per packet all told in a debug build: 100,000 packets take ~5 s.
    let mut previous = shield.counters().unwrap();

    for index in 0..packets {
        if let Some(r) = &rate {
            if index % r.chunk == 0 {
                shield.rate_buckets_clear().unwrap();
                model.rate_buckets_clear();
                chunk_started = Instant::now();
            }
        }
        // Monitor mode in runs of ~100 packets, on about a quarter of the time: the monitor
        // reasons get their share, the switch itself is exercised often, and there is no map
        // write per packet.
        let switch = if monitor { 1.0 / 100.0 } else { 1.0 / 300.0 };
        if gen.rng.gen_bool(switch) {
            monitor = !monitor;
            shield.set_monitor(monitor).unwrap();
        }
        let pkt = gen.packet();

        let want = model.verdict(&pkt, monitor);
        let fail = |what: String| -> ! {
            panic!(
                "kernel and model disagree: {what}\n  seed {seed}, packet index {index}, \
                 monitor {monitor}, {} bytes, parse {:?}\n  packet {}\n  rate chunk running \
                 for {:?} (a rate verdict can only differ after ~1 s)\n  reproduce: \
                 GZ_DIFF_SEED={seed} GZ_DIFF_PACKETS={} (or GZ_DIFF_RATE_PACKETS) cargo test \
                 -p groundzero --test differential -- --nocapture",
                pkt.len(),
                parse(&pkt[..]),
                hex(&pkt),
                chunk_started.elapsed(),
                index + 1,
            )
        };
        let action = shield
            .test_run(&pkt)
            .unwrap_or_else(|e| fail(format!("test_run failed: {e:?}")));
        let now = shield.counters().unwrap();
        let delta = now.since(&previous);
        previous = now;

        let counted: Vec<_> = delta.iter().filter(|(_, c)| c.packets > 0).collect();
        let got = match counted[..] {
            [(reason, c)] if c.packets == 1 && c.bytes == pkt.len() as u64 => reason,
            _ => fail(format!(
                "expected one packet of {} bytes under one reason, counters moved by {counted:?}",
                pkt.len()
            )),
        };
        if action != want.action() {
            fail(format!(
                "action: kernel {action:?}, model {:?} ({want:?})",
                want.action()
            ));
        }
        if got != want {
            fail(format!("reason: kernel {got:?}, model {want:?}"));
        }
        if action != got.action() {
            fail(format!("kernel returned {action:?} but counted {got:?}"));
        }

        *tally.get_mut(&want).unwrap() += 1;
        if let Parsed::Malformed { at } = parse(&pkt[..]) {
            *malformed_at.entry(format!("{at:?}")).or_default() += 1;
        }
        if let Some(src) = source_of(&pkt) {
            if want == Reason::NoMatch && exempt.iter().any(|n| n.contains(&src)) {
                exempt_reached += 1;
            }
            if let Some(entry) = credited_entry(want, src, &allow, &block) {
                *expected_hits
                    .get_mut(&entry)
                    .unwrap_or_else(|| panic!("{entry:?} credited but not in its list")) += 1;
            }
        }
        frame_bytes += pkt.len() as u64;
    }
    let elapsed = started.elapsed();

    println!(
        "differential: {packets} packets ({frame_bytes} bytes) in {:.2?} ({:.1} µs/packet, \
         including the model, one counters read and bookkeeping)",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / packets.max(1) as f64
    );
    for (reason, n) in &tally {
        println!(
            "  {:<14} {n:>7}  {:5.2}%",
            reason.label(),
            100.0 * *n as f64 / packets.max(1) as f64
        );
    }
    println!("  malformed at: {malformed_at:?}");
    println!("  exempt sources that reached the rate limit: {exempt_reached}");

    // The totals agree too, as a cross-check of the per-packet reads.
    let totals = shield.counters().unwrap();
    for (reason, n) in &tally {
        assert_eq!(totals.get(*reason).packets, *n, "total for {reason:?}");
    }
    assert_eq!(totals.total().bytes, frame_bytes);

    // Hit statistics: every entry was credited exactly the packets it decided.
    let got_hits = all_hits(&shield);
    assert_eq!(
        got_hits.keys().collect::<Vec<_>>(),
        expected_hits.keys().collect::<Vec<_>>(),
        "the kernel's lists are the lists loaded"
    );
    let wrong: Vec<_> = got_hits
        .iter()
        .filter(|(entry, hits)| expected_hits[*entry] != **hits)
        .map(|(entry, hits)| {
            format!(
                "{entry:?}: kernel {hits}, expected {}",
                expected_hits[entry]
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "per-entry hits differ:\n  {}",
        wrong.join("\n  ")
    );

    if packets >= COVERAGE_MIN_PACKETS {
        // A generator that stopped reaching a path would make this test pass vacuously.
        let floor = packets as u64 / 200;
        for (reason, n) in &tally {
            if rate.is_none() && matches!(reason, Reason::RateLimited | Reason::MonitorRate) {
                assert_eq!(*n, 0, "the rate limit is off in this run");
                continue;
            }
            assert!(
                *n >= floor,
                "{reason:?} covered only {n} times (< {floor}); the generator misses a path"
            );
        }
        if rate.is_some() {
            assert!(
                exempt_reached >= floor / 4,
                "only {exempt_reached} packets from exempt sources reached the rate limit"
            );
        }
        for at in [MalformedAt::Vlan, MalformedAt::Ipv4, MalformedAt::Ipv6] {
            let n = malformed_at.get(&format!("{at:?}")).copied().unwrap_or(0);
            assert!(
                n >= floor,
                "Malformed at {at:?} covered only {n} times (< {floor})"
            );
        }
        // Every entry must have decided some packet, except host blocks under an allow, which
        // the kernel never even looks up.
        let shadowed = |list: List, net: &IpNet| {
            list == List::Block
                && net.prefix_len() == net.max_prefix_len()
                && allow.iter().any(|a| a.contains(net))
        };
        let never: Vec<_> = got_hits
            .iter()
            .filter(|(_, &h)| h == 0)
            .map(|(k, _)| k)
            .collect();
        println!("  entries never hit (host blocks under an allow): {never:?}");
        for (list, net) in never {
            assert!(shadowed(*list, net), "{list:?} {net} was never hit");
        }
    } else {
        println!("differential: fewer than {COVERAGE_MIN_PACKETS} packets, coverage not asserted");
    }
}
