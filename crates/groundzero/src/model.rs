//! The host-side model of the XDP program: the same parser and the same decision function from
//! `groundzero-common`, over plain collections instead of BPF maps.
//!
//! Used to explain verdicts, and by the differential test, which runs packets through the kernel
//! program and through this model and requires identical answers.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use groundzero_common::{
    decide,
    maps::Config,
    parse,
    ratelimit::{rate_key_v4, rate_key_v6, Bucket},
    Lists, Reason,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The three lists, as the kernel program sees them. Host entries (/32, /128) in the blocklist
/// go to the exact set, like [`crate::Shield::block`] puts them in the hash map.
///
/// The optional rate limit runs the kernel's token-bucket code with the clock stopped: every
/// bucket gets exactly its burst, which is what a fast burst of packets sees in the kernel.
/// Buckets are keyed as in the kernel: the source with its host bits cleared, by the same
/// functions, with the prefix lengths decoded from the same `Config.flags` bits.
#[derive(Clone, Debug, Default)]
pub struct ModelLists {
    allow: Vec<IpNet>,
    block_exact: HashSet<IpNet>,
    block_cidr: Vec<IpNet>,
    rate: Option<(u32, u32)>,
    /// Only its flags are used: the rate bucket prefix lengths, encoded as the kernel reads them.
    rate_config: Config,
    rate_exempt: Vec<IpNet>,
    /// Keyed like the kernel's LRU maps: by the masked address alone, not its length.
    buckets: RefCell<HashMap<IpAddr, Bucket>>,
}

impl ModelLists {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn allow(&mut self, net: IpNet) {
        self.allow.push(net);
    }

    pub fn block(&mut self, net: IpNet) {
        if groundzero_common::lists::is_exact_net(&net) {
            self.block_exact.insert(net);
        } else {
            self.block_cidr.push(net);
        }
    }

    /// Turns on the rate limit (packets per second, burst), with one bucket per IPv4
    /// `/prefix_v4` and per IPv6 `/prefix_v6`, like [`crate::Shield::set_rate_limit`] (which
    /// refuses lengths of 0 or over the width; here those mean one bucket for the whole family
    /// and one per address). A rate of 0 turns it off, as in the kernel.
    pub fn rate_limit(&mut self, rate_pps: u32, burst: u32, prefix_v4: u8, prefix_v6: u8) {
        self.rate = (rate_pps != 0).then_some((rate_pps, burst.max(1)));
        self.rate_config
            .set_rate_prefixes(prefix_v4.into(), prefix_v6.into());
    }

    /// Never rate-limit sources in `net`.
    pub fn rate_exempt(&mut self, net: IpNet) {
        self.rate_exempt.push(net.trunc());
    }

    /// Ends the exemption of exactly `net`; whether it was there.
    pub fn rate_unexempt(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        let before = self.rate_exempt.len();
        self.rate_exempt.retain(|n| *n != net);
        self.rate_exempt.len() != before
    }

    /// Forgets every bucket, like [`crate::Shield::rate_buckets_clear`].
    pub fn rate_buckets_clear(&mut self) {
        self.buckets.get_mut().clear();
    }

    /// The bucket key of `host` (its address with the host bits cleared), as the kernel
    /// computes it.
    fn bucket_of(&self, host: IpNet) -> IpAddr {
        match host {
            IpNet::V4(n) => {
                let len = self.rate_config.rate_prefix_v4();
                IpAddr::from(rate_key_v4(&n.addr().octets(), len))
            }
            IpNet::V6(n) => {
                let len = self.rate_config.rate_prefix_v6();
                IpAddr::from(rate_key_v6(&n.addr().octets(), len))
            }
        }
    }

    fn over_rate_host(&self, host: IpNet) -> bool {
        let Some((rate, burst)) = self.rate else {
            return false;
        };
        // Exempt by the full source, before the bucket, as in the kernel.
        if covered(&self.rate_exempt, &host) {
            return false;
        }
        let mut buckets = self.buckets.borrow_mut();
        let bucket = buckets
            .entry(self.bucket_of(host))
            .or_insert_with(|| Bucket::full(burst, 0));
        !bucket.take(0, rate, burst)
    }

    /// The verdict the XDP program gives `packet` (a whole Ethernet frame).
    pub fn verdict(&self, packet: &[u8], monitor: bool) -> Reason {
        decide(&parse(packet), self, monitor)
    }
}

fn v4(a: &[u8; 4]) -> IpNet {
    IpNet::V4(Ipv4Net::new((*a).into(), 32).expect("32 is a valid prefix"))
}

fn v6(a: &[u8; 16]) -> IpNet {
    IpNet::V6(Ipv6Net::new((*a).into(), 128).expect("128 is a valid prefix"))
}

fn covered(list: &[IpNet], host: &IpNet) -> bool {
    list.iter().any(|net| net.contains(host))
}

impl Lists<[u8; 4]> for ModelLists {
    fn allowed(&self, src: &[u8; 4]) -> bool {
        covered(&self.allow, &v4(src))
    }
    fn blocked_exact(&self, src: &[u8; 4]) -> bool {
        self.block_exact.contains(&v4(src))
    }
    fn blocked_cidr(&self, src: &[u8; 4]) -> bool {
        covered(&self.block_cidr, &v4(src))
    }
    fn over_rate(&self, src: &[u8; 4]) -> bool {
        self.over_rate_host(v4(src))
    }
}

impl Lists<[u8; 16]> for ModelLists {
    fn allowed(&self, src: &[u8; 16]) -> bool {
        covered(&self.allow, &v6(src))
    }
    fn blocked_exact(&self, src: &[u8; 16]) -> bool {
        self.block_exact.contains(&v6(src))
    }
    fn blocked_cidr(&self, src: &[u8; 16]) -> bool {
        covered(&self.block_cidr, &v6(src))
    }
    fn over_rate(&self, src: &[u8; 16]) -> bool {
        self.over_rate_host(v6(src))
    }
}
