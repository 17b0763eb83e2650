//! [`ListReader`]: read-only handles on the six list maps, apart from the [`Shield`].
//!
//! Reading every entry of a million-entry list takes about a second. A daemon that did that
//! while holding the lock around its shield (for a Prometheus scrape's top-N, say) would stall
//! every block and unblock meanwhile. A reader owns its own file descriptors of the same kernel
//! maps, so it can be taken under the lock in microseconds and used after releasing it.

use std::os::fd::{AsFd, OwnedFd};

use aya::maps::{LpmTrie, Map, MapData, MapError};
use groundzero_common::maps::{self as names, EntryStats};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{error::Error, shield::ListEntry, ListKind, Shield};

/// Read-only access to the lists of one [`Shield`], usable without it.
pub struct ListReader {
    block_v4: OwnedFd,
    block_v6: OwnedFd,
    block_net_v4: LpmTrie<MapData, [u8; 4], EntryStats>,
    block_net_v6: LpmTrie<MapData, [u8; 16], EntryStats>,
    allow_v4: LpmTrie<MapData, [u8; 4], EntryStats>,
    allow_v6: LpmTrie<MapData, [u8; 16], EntryStats>,
}

impl std::fmt::Debug for ListReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListReader").finish_non_exhaustive()
    }
}

fn read_err(map: &'static str) -> impl Fn(MapError) -> Error {
    move |source| Error::MapRead { map, source }
}

fn trie<K: aya::Pod>(
    shield: &Shield,
    name: &'static str,
) -> Result<LpmTrie<MapData, K, EntryStats>, Error> {
    let fd = shield.list_map_fd(name)?;
    let data = MapData::from_fd(fd).map_err(read_err(name))?;
    LpmTrie::try_from(Map::LpmTrie(data)).map_err(read_err(name))
}

impl ListReader {
    pub(crate) fn new(shield: &Shield) -> Result<Self, Error> {
        Ok(ListReader {
            block_v4: shield.list_map_fd(names::BLOCK_V4)?,
            block_v6: shield.list_map_fd(names::BLOCK_V6)?,
            block_net_v4: trie(shield, names::BLOCK_NET_V4)?,
            block_net_v6: trie(shield, names::BLOCK_NET_V6)?,
            allow_v4: trie(shield, names::ALLOW_V4)?,
            allow_v6: trie(shield, names::ALLOW_V6)?,
        })
    }

    /// Every blocked address and prefix with its hits, in no particular order.
    pub fn blocked(&self) -> Result<Vec<ListEntry>, Error> {
        let mut entries = self.list(ListKind::BlockExact)?;
        entries.extend(self.list(ListKind::BlockCidr)?);
        Ok(entries)
    }

    /// Every allowed address and prefix with its hits, in no particular order.
    pub fn allowed(&self) -> Result<Vec<ListEntry>, Error> {
        self.list(ListKind::Allow)
    }

    /// One list, both families, in no particular order.
    pub fn list(&self, list: ListKind) -> Result<Vec<ListEntry>, Error> {
        let entry = |net: IpNet, stats: EntryStats| ListEntry {
            net,
            hits: stats.hits,
            last_hit_ns: stats.last_hit_ns,
        };
        let mut out = Vec::new();
        let (t4, t6, n4, n6) = match list {
            ListKind::BlockExact => {
                // Batched reads: a million-entry list is a few dozen syscalls, not two million.
                let batch_err = |map: &'static str| {
                    move |e: std::io::Error| Error::MapRead {
                        map,
                        source: MapError::IoError(e),
                    }
                };
                for (k, v) in crate::batch::entries::<[u8; 4], EntryStats>(self.block_v4.as_fd())
                    .map_err(batch_err(names::BLOCK_V4))?
                {
                    out.push(entry(Ipv4Net::new(k.into(), 32).expect("valid").into(), v));
                }
                for (k, v) in crate::batch::entries::<[u8; 16], EntryStats>(self.block_v6.as_fd())
                    .map_err(batch_err(names::BLOCK_V6))?
                {
                    out.push(entry(Ipv6Net::new(k.into(), 128).expect("valid").into(), v));
                }
                return Ok(out);
            }
            ListKind::BlockCidr => (
                &self.block_net_v4,
                &self.block_net_v6,
                names::BLOCK_NET_V4,
                names::BLOCK_NET_V6,
            ),
            ListKind::Allow => (
                &self.allow_v4,
                &self.allow_v6,
                names::ALLOW_V4,
                names::ALLOW_V6,
            ),
        };
        for item in t4.iter() {
            let (k, v) = item.map_err(read_err(n4))?;
            let net =
                Ipv4Net::new(k.data().into(), k.prefix_len() as u8).expect("kernel keys are valid");
            out.push(entry(net.into(), v));
        }
        for item in t6.iter() {
            let (k, v) = item.map_err(read_err(n6))?;
            let net =
                Ipv6Net::new(k.data().into(), k.prefix_len() as u8).expect("kernel keys are valid");
            out.push(entry(net.into(), v));
        }
        Ok(out)
    }
}
