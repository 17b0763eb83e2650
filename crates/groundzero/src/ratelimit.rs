//! Rate-based auto-ban, user-space side: settings, exempt prefixes, and the ring buffer through
//! which the XDP program reports sources over their limit. Banning them (with a TTL) is the
//! caller's job: the daemon does it through its registry so bans carry metadata and expire.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{lpm_trie::Key, LpmTrie, MapData, RingBuf};
use groundzero_common::ratelimit::{RateEvent, RATE_EVENTS, RATE_EXEMPT_V4, RATE_EXEMPT_V6};
use ipnet::IpNet;

use crate::{Error, ListKind, Shield};

/// A source the kernel found over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    pub source: IpAddr,
    /// Packets its bucket has dropped so far.
    pub dropped: u64,
    pub ifindex: u32,
}

/// The ring buffer of [`OverLimit`] reports.
pub struct RateEvents {
    ring: RingBuf<MapData>,
}

impl RateEvents {
    /// Hands every waiting report to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(OverLimit)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() < std::mem::size_of::<RateEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole #[repr(C)] RateEvent; any bit pattern is valid.
            let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const RateEvent) };
            let source = match ev.family {
                4 => IpAddr::V4(Ipv4Addr::new(
                    ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                )),
                6 => IpAddr::V6(Ipv6Addr::from(ev.addr)),
                _ => continue,
            };
            f(OverLimit {
                source,
                dropped: ev.dropped,
                ifindex: ev.ifindex,
            });
            n += 1;
        }
        n
    }
}

impl AsRawFd for RateEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Shield {
    /// Turns the per-source rate limit on (`rate_pps` > 0) or off (0). `burst` is how many
    /// packets a source may send at once; at least 1.
    pub fn set_rate_limit(&mut self, rate_pps: u32, burst: u32) -> Result<(), Error> {
        self.update_config(|c| {
            c.rate_pps = rate_pps;
            c.rate_burst = burst.max(1);
        })
    }

    /// Never rate-limit sources in `net`.
    pub fn rate_exempt(&mut self, net: IpNet) -> Result<(), Error> {
        let err = |source| Error::MapUpdate {
            list: ListKind::Allow,
            entry: net,
            source,
        };
        match net {
            IpNet::V4(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 4], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V4)?).map_err(err)?;
                trie.insert(&Key::new(n.prefix_len() as u32, n.network().octets()), 1, 0)
                    .map_err(err)
            }
            IpNet::V6(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V6)?).map_err(err)?;
                trie.insert(&Key::new(n.prefix_len() as u32, n.network().octets()), 1, 0)
                    .map_err(err)
            }
        }
    }

    /// Takes the over-limit report ring buffer (once per shield).
    pub fn rate_events(&mut self) -> Result<RateEvents, Error> {
        let map = self.take_map(RATE_EVENTS)?;
        let ring = RingBuf::try_from(map).map_err(|source| Error::MapRead {
            map: RATE_EVENTS,
            source,
        })?;
        Ok(RateEvents { ring })
    }
}
