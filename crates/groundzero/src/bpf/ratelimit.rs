//! Rate-based auto-ban, user-space side: settings, exempt prefixes, and the ring buffer through
//! which the XDP program reports buckets over their limit. Banning them (with a TTL) is the
//! caller's job: the daemon does it through its registry so bans carry metadata and expire.
//!
//! Buckets are per prefix (the source with its host bits cleared; lengths set with
//! [`Shield::set_rate_limit`](crate::Shield::set_rate_limit)), so a report names a prefix: one address per bucket when the
//! lengths are 32 and 128, a whole IPv6 /64 (say) otherwise.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, RawFd},
};

use aya::maps::{lpm_trie::Key, HashMap, LpmTrie, MapData, RingBuf};
use groundzero_common::ratelimit::{
    Bucket, RateEvent, RATE_EVENTS, RATE_EXEMPT_ENTRIES, RATE_EXEMPT_V4, RATE_EXEMPT_V6, RATE_V4,
    RATE_V6,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    keys::{by_family, Addr},
    object::Object,
};
use crate::error::{not_found, Error};

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

/// The rate limit's maps: exempt prefixes and buckets, per family.
pub(crate) struct RateMaps {
    exempt_v4: LpmTrie<MapData, [u8; 4], u32>,
    exempt_v6: LpmTrie<MapData, [u8; 16], u32>,
    buckets_v4: HashMap<MapData, [u8; 4], Bucket>,
    buckets_v6: HashMap<MapData, [u8; 16], Bucket>,
}

impl RateMaps {
    /// Takes the rate limit's maps out of the loaded object.
    pub(crate) fn take(object: &mut Object) -> Result<Self, Error> {
        fn typed<M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            object: &mut Object,
            name: &'static str,
        ) -> Result<M, Error> {
            M::try_from(object.take_map(name)?)
                .map_err(|source| Error::MapRead { map: name, source })
        }
        Ok(RateMaps {
            exempt_v4: typed(object, RATE_EXEMPT_V4)?,
            exempt_v6: typed(object, RATE_EXEMPT_V6)?,
            buckets_v4: typed(object, RATE_V4)?,
            buckets_v6: typed(object, RATE_V6)?,
        })
    }

    /// Never rate-limit sources in `net` (host bits ignored).
    pub(crate) fn exempt(&mut self, net: IpNet) -> Result<(), Error> {
        let net = net.trunc();
        by_family!(
            net,
            &mut self.exempt_v4,
            &mut self.exempt_v6,
            |trie, addr, len| trie.insert(&Key::new(len.into(), addr), 1, 0)
        )
        .map_err(|source| Error::RateExemptUpdate {
            entry: net,
            capacity: RATE_EXEMPT_ENTRIES,
            source,
        })
    }

    /// Ends the exemption of exactly `net`; whether it was there.
    pub(crate) fn unexempt(&mut self, net: IpNet) -> Result<bool, Error> {
        let net = net.trunc();
        let result = by_family!(
            net,
            &mut self.exempt_v4,
            &mut self.exempt_v6,
            |trie, addr, len| trie.remove(&Key::new(len.into(), addr))
        );
        match result {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(source) => Err(Error::RateExemptRemove { entry: net, source }),
        }
    }

    /// Every exempt prefix, IPv4 first, each family sorted.
    pub(crate) fn exempted(&self) -> Result<Vec<IpNet>, Error> {
        let mut v4 = exempt_prefixes(&self.exempt_v4, RATE_EXEMPT_V4)?;
        v4.extend(exempt_prefixes(&self.exempt_v6, RATE_EXEMPT_V6)?);
        Ok(v4)
    }

    /// Forgets every rate bucket; how many there were.
    pub(crate) fn clear_buckets(&mut self) -> Result<usize, Error> {
        Ok(clear(&mut self.buckets_v4, RATE_V4)? + clear(&mut self.buckets_v6, RATE_V6)?)
    }
}

/// Takes the over-limit report ring buffer out of the object (once per shield).
pub(crate) fn take_events(object: &mut Object) -> Result<RateEvents, Error> {
    let ring =
        RingBuf::try_from(object.take_map(RATE_EVENTS)?).map_err(|source| Error::MapRead {
            map: RATE_EVENTS,
            source,
        })?;
    Ok(RateEvents { ring })
}

/// One family's exempt prefixes, sorted.
fn exempt_prefixes<K: Addr>(
    trie: &LpmTrie<MapData, K, u32>,
    name: &'static str,
) -> Result<Vec<IpNet>, Error> {
    let mut out = Vec::new();
    for key in trie.keys() {
        let key = key.map_err(|source| Error::MapRead { map: name, source })?;
        // A trie only holds lengths up to its width (the kernel refuses longer ones).
        out.extend(key.data().net(key.prefix_len()));
    }
    out.sort();
    Ok(out)
}

fn clear<K: aya::Pod>(
    map: &mut HashMap<MapData, K, Bucket>,
    name: &'static str,
) -> Result<usize, Error> {
    // Keys first, then deletes: deleting while walking with get_next_key can restart the walk.
    let keys = map
        .keys()
        .collect::<Result<Vec<K>, _>>()
        .map_err(|source| Error::MapRead { map: name, source })?;
    let mut removed = 0;
    for key in &keys {
        match map.remove(key) {
            Ok(()) => removed += 1,
            // Evicted by the LRU since the walk: gone either way.
            Err(e) if not_found(&e) => {}
            Err(source) => return Err(Error::MapDelete { map: name, source }),
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
