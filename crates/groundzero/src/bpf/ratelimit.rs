//! Rate-based auto-ban, user-space side: settings, exempt prefixes, and the ring buffer through
//! which the XDP program reports buckets over their limit. Banning them (with a TTL) is the
//! caller's job: the daemon does it through its registry so bans carry metadata and expire.
//!
//! Buckets are per prefix (the source with its host bits cleared; lengths set with
//! [`Shield::set_rate_limit`]), so a report names a prefix: one address per bucket when the
//! lengths are 32 and 128, a whole IPv6 /64 (say) otherwise.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, MapError, RingBuf};
use groundzero_common::ratelimit::{
    Bucket, RateEvent, RATE_EVENTS, RATE_EXEMPT_ENTRIES, RATE_EXEMPT_V4, RATE_EXEMPT_V6, RATE_V4,
    RATE_V6,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{Error, Shield};

/// A bucket the kernel found over its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverLimit {
    /// The bucket's prefix: a /32 or /128 when buckets are per address.
    pub prefix: IpNet,
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
            let Some(prefix) = event_prefix(&ev) else {
                continue;
            };
            f(OverLimit {
                prefix,
                dropped: ev.dropped,
                ifindex: ev.ifindex,
            });
            n += 1;
        }
        n
    }
}

/// The prefix a report names, or None for a family or length the kernel never writes.
fn event_prefix(ev: &RateEvent) -> Option<IpNet> {
    let len = u8::try_from(ev.prefix_len).ok()?;
    let a = ev.addr;
    // trunc(): the kernel masked the address already; this keeps "network address" true even
    // for an event from some other writer.
    match ev.family {
        4 => Ipv4Net::new(Ipv4Addr::new(a[0], a[1], a[2], a[3]), len)
            .ok()
            .map(|n| IpNet::V4(n.trunc())),
        6 => Ipv6Net::new(Ipv6Addr::from(a), len)
            .ok()
            .map(|n| IpNet::V6(n.trunc())),
        _ => None,
    }
}

impl AsRawFd for RateEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        MapError::IoError(io) => io.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

impl Shield {
    /// Turns the rate limit on (`rate_pps` > 0) or off (0). `burst` is how many packets a
    /// bucket may pass at once; at least 1. Sources share a bucket per IPv4 `/prefix_v4` and
    /// per IPv6 `/prefix_v6` (1..=32 and 1..=128; 32 and 128 give every address its own):
    /// whoever holds a /64 cannot escape the limit by rotating through its addresses.
    ///
    /// Nothing changes when a length is out of range.
    pub fn set_rate_limit(
        &mut self,
        rate_pps: u32,
        burst: u32,
        prefix_v4: u8,
        prefix_v6: u8,
    ) -> Result<(), Error> {
        for (family, prefix_len, max) in [(4, prefix_v4, 32), (6, prefix_v6, 128)] {
            if !(1..=max).contains(&prefix_len) {
                return Err(Error::RatePrefix {
                    family,
                    prefix_len,
                    max,
                });
            }
        }
        self.update_config(|c| {
            c.rate_pps = rate_pps;
            c.rate_burst = burst.max(1);
            c.set_rate_prefixes(prefix_v4.into(), prefix_v6.into());
        })
    }

    /// Never rate-limit sources in `net` (host bits of `net` are ignored). The exemption is
    /// looked up with the full source address, before its bucket: an exempt host inside a
    /// bucket's prefix neither is limited nor spends that bucket's tokens.
    pub fn rate_exempt(&mut self, net: IpNet) -> Result<(), Error> {
        let net = net.trunc();
        let err = |source| Error::RateExemptUpdate {
            entry: net,
            capacity: RATE_EXEMPT_ENTRIES,
            source,
        };
        match net {
            IpNet::V4(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 4], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V4)?).map_err(err)?;
                trie.insert(&Key::new(n.prefix_len().into(), n.network().octets()), 1, 0)
                    .map_err(err)
            }
            IpNet::V6(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V6)?).map_err(err)?;
                trie.insert(&Key::new(n.prefix_len().into(), n.network().octets()), 1, 0)
                    .map_err(err)
            }
        }
    }

    /// Ends the exemption of exactly `net` (as given to [`Self::rate_exempt`]; a covering or
    /// covered prefix is another entry). Returns whether it was there.
    pub fn rate_unexempt(&mut self, net: IpNet) -> Result<bool, Error> {
        let net = net.trunc();
        let err = |source| Error::RateExemptUpdate {
            entry: net,
            capacity: RATE_EXEMPT_ENTRIES,
            source,
        };
        let result = match net {
            IpNet::V4(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 4], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V4)?).map_err(err)?;
                trie.remove(&Key::new(n.prefix_len().into(), n.network().octets()))
            }
            IpNet::V6(n) => {
                let mut trie: LpmTrie<&mut MapData, [u8; 16], u32> =
                    LpmTrie::try_from(self.map_mut_pub(RATE_EXEMPT_V6)?).map_err(err)?;
                trie.remove(&Key::new(n.prefix_len().into(), n.network().octets()))
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Every exempt prefix, IPv4 first, each family sorted: what a caller diffs against the
    /// set it wants, then adds and removes the difference.
    pub fn rate_exempted(&self) -> Result<Vec<IpNet>, Error> {
        let err = |map| move |source| Error::MapRead { map, source };
        let mut v4 = Vec::new();
        let trie: LpmTrie<&MapData, [u8; 4], u32> =
            LpmTrie::try_from(self.map(RATE_EXEMPT_V4)?).map_err(err(RATE_EXEMPT_V4))?;
        for key in trie.keys() {
            let key = key.map_err(err(RATE_EXEMPT_V4))?;
            // A trie only holds lengths up to its width (the kernel refuses longer ones).
            if let Some(n) = trie_net(key.prefix_len(), |len| Ipv4Net::new(key.data().into(), len))
            {
                v4.push(IpNet::V4(n));
            }
        }
        let mut v6 = Vec::new();
        let trie: LpmTrie<&MapData, [u8; 16], u32> =
            LpmTrie::try_from(self.map(RATE_EXEMPT_V6)?).map_err(err(RATE_EXEMPT_V6))?;
        for key in trie.keys() {
            let key = key.map_err(err(RATE_EXEMPT_V6))?;
            if let Some(n) = trie_net(key.prefix_len(), |len| Ipv6Net::new(key.data().into(), len))
            {
                v6.push(IpNet::V6(n));
            }
        }
        v4.sort();
        v6.sort();
        v4.extend(v6);
        Ok(v4)
    }

    /// Forgets every rate bucket: every prefix starts again with a full burst. Returns how many
    /// buckets there were. For tests that need a known starting point, and for an operator who
    /// changed the settings and wants them applied to everyone at once.
    pub fn rate_buckets_clear(&mut self) -> Result<usize, Error> {
        Ok(clear_buckets::<[u8; 4]>(self, RATE_V4)? + clear_buckets::<[u8; 16]>(self, RATE_V6)?)
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

/// A trie key as a prefix, or None for a length no prefix has.
fn trie_net<N, E>(prefix_len: u32, new: impl FnOnce(u8) -> Result<N, E>) -> Option<N> {
    new(u8::try_from(prefix_len).ok()?).ok()
}

fn clear_buckets<K: aya::Pod>(shield: &mut Shield, name: &'static str) -> Result<usize, Error> {
    let err = |source| Error::MapRead { map: name, source };
    let mut map: HashMap<&mut MapData, K, Bucket> =
        HashMap::try_from(shield.map_mut_pub(name)?).map_err(err)?;
    // Keys first, then deletes: deleting while walking with get_next_key can restart the walk.
    let keys = map.keys().collect::<Result<Vec<K>, _>>().map_err(err)?;
    let mut removed = 0;
    for key in &keys {
        match map.remove(key) {
            Ok(()) => removed += 1,
            // Evicted by the LRU since the walk: gone either way.
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(family: u32, addr: &[u8], prefix_len: u32) -> RateEvent {
        let mut ev = RateEvent {
            family,
            prefix_len,
            ..Default::default()
        };
        ev.addr[..addr.len()].copy_from_slice(addr);
        ev
    }

    #[test]
    fn a_report_names_the_bucket_prefix() {
        let v6: Ipv6Addr = "2001:2::".parse().unwrap();
        assert_eq!(
            event_prefix(&event(6, &v6.octets(), 64)),
            Some("2001:2::/64".parse().unwrap())
        );
        assert_eq!(
            event_prefix(&event(4, &[198, 18, 0, 0], 24)),
            Some("198.18.0.0/24".parse().unwrap())
        );
        assert_eq!(
            event_prefix(&event(4, &[198, 18, 0, 7], 32)),
            Some("198.18.0.7/32".parse().unwrap())
        );
        // Host bits from a writer that did not mask them are cleared, not reported.
        assert_eq!(
            event_prefix(&event(4, &[198, 18, 0, 7], 24)),
            Some("198.18.0.0/24".parse().unwrap())
        );
    }

    #[test]
    fn a_report_no_prefix_can_have_is_dropped() {
        assert_eq!(event_prefix(&event(4, &[198, 18, 0, 0], 33)), None);
        assert_eq!(event_prefix(&event(6, &[0x20, 1], 129)), None);
        // 256 + 24 must not wrap to 24.
        assert_eq!(event_prefix(&event(4, &[198, 18, 0, 0], 280)), None);
        assert_eq!(event_prefix(&event(5, &[198, 18, 0, 0], 24)), None);
    }
}
