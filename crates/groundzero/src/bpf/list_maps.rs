//! The six list maps as typed handles: per family, one map per [`ListKind`], each a hash (exact
//! addresses) or an LPM trie (prefixes). The family × kind × shape dispatch is written here
//! once: the family picks the table array ([`by_family`]), the kind indexes it, and the table
//! knows its shape. Everything above names an entry by its [`ListKind`] and [`IpNet`].

use std::{
    os::fd::{AsFd, BorrowedFd},
    sync::Arc,
};

use aya::maps::{lpm_trie::Key, HashMap, IterableMap, LpmTrie, Map, MapData, MapError};
use groundzero_common::{
    lists::{Family, ListKind},
    maps::EntryStats,
};
use ipnet::IpNet;

use super::{
    keys::{by_family, Addr},
    object::Object,
    slots::{self, Slots},
};
use crate::error::Error;

/// BPF_NOEXIST from the kernel UAPI (include/uapi/linux/bpf.h): create, never overwrite.
const NOEXIST: u64 = 1;

/// A list entry with the kernel's hit statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub net: IpNet,
    pub hits: u64,
    /// CLOCK_MONOTONIC_COARSE nanoseconds of the last hit; 0 if never hit.
    pub last_hit_ns: u64,
}

impl ListEntry {
    pub(crate) fn new(net: IpNet, stats: EntryStats) -> Self {
        ListEntry {
            net,
            hits: stats.hits,
            last_hit_ns: stats.last_hit_ns,
        }
    }
}

/// One list map of one family.
enum Table<K: Addr> {
    /// Exact addresses, keyed by the address.
    Hash(HashMap<MapData, K, EntryStats>),
    /// Prefixes, keyed by prefix length and address.
    Trie(LpmTrie<MapData, K, EntryStats>),
}

impl<K: Addr> Table<K> {
    fn open(kind: ListKind, name: &'static str, map: Map) -> Result<Self, Error> {
        let err = |source| Error::MapRead { map: name, source };
        Ok(if kind.is_trie() {
            Table::Trie(LpmTrie::try_from(map).map_err(err)?)
        } else {
            Table::Hash(HashMap::try_from(map).map_err(err)?)
        })
    }

    fn data(&self) -> &MapData {
        match self {
            Table::Hash(m) => m.map(),
            Table::Trie(m) => m.map(),
        }
    }

    /// Adds without overwriting: an existing entry keeps its hits (EEXIST).
    fn insert(&mut self, addr: K, prefix_len: u8) -> Result<(), MapError> {
        let stats = EntryStats::default();
        match self {
            Table::Hash(m) => m.insert(addr, stats, NOEXIST),
            Table::Trie(m) => m.insert(&Key::new(prefix_len.into(), addr), stats, NOEXIST),
        }
    }

    fn remove(&mut self, addr: K, prefix_len: u8) -> Result<(), MapError> {
        match self {
            Table::Hash(m) => m.remove(&addr),
            Table::Trie(m) => m.remove(&Key::new(prefix_len.into(), addr)),
        }
    }

    fn get(&self, addr: K, prefix_len: u8) -> Result<EntryStats, MapError> {
        match self {
            Table::Hash(m) => m.get(&addr, 0),
            Table::Trie(m) => m.get(&Key::new(prefix_len.into(), addr), 0),
        }
    }

    /// Every entry; a hash in batches (a million entries in a few dozen syscalls, not two
    /// million), a trie key by key (the kernel has no batch lookup for tries).
    /// `slots`: the exact list's slot tables, whose hits are added to the hash's.
    fn entries(&self, out: &mut Vec<ListEntry>, slots: Option<&Slots>) -> Result<(), MapError> {
        match self {
            Table::Hash(m) => {
                let all = super::batch::entries::<K, EntryStats>(m.map().fd().as_fd())
                    .map_err(MapError::IoError)?;
                for (k, v) in all {
                    if let Some(net) = k.net(K::FAMILY.bits().into()) {
                        let extra = slots.and_then(|s| s.stats(K::FAMILY, k.as_ref()));
                        out.push(ListEntry::new(net, slots::merged(v, extra)));
                    }
                }
            }
            Table::Trie(m) => {
                for item in m.iter() {
                    let (key, v) = item?;
                    // A trie only holds lengths up to its width (the kernel refuses longer ones).
                    if let Some(net) = key.data().net(key.prefix_len()) {
                        out.push(ListEntry::new(net, v));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The six list maps, indexed by [`ListKind::index`] within each family, and the exact
/// lists' slot tables.
pub(crate) struct ListMaps {
    v4: [Table<[u8; 4]>; 3],
    v6: [Table<[u8; 16]>; 3],
    /// `None` for an object without them (an older build's).
    slots: Option<Arc<Slots>>,
}

/// An exact entry's key bytes and family.
fn exact_key(net: &IpNet) -> (Family, [u8; 16], usize) {
    let mut key = [0u8; 16];
    match net {
        IpNet::V4(n) => {
            key[..4].copy_from_slice(&n.addr().octets());
            (Family::V4, key, 4)
        }
        IpNet::V6(n) => {
            key.copy_from_slice(&n.addr().octets());
            (Family::V6, key, 16)
        }
    }
}

impl ListMaps {
    /// Takes the list maps out of the loaded object, and maps its slot tables.
    /// `maps_dir`: where the maps are pinned, if they are (other processes may write them).
    pub(crate) fn take(
        object: &mut Object,
        maps_dir: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let slots = Slots::map(object, maps_dir)?.map(Arc::new);
        let mut maps = Self::open(|kind, family| object.take_map(kind.map_name(family)))?;
        maps.slots = slots;
        Ok(maps)
    }

    /// Whether the exact address `addr` has a live slot; `None` without slot tables.
    pub(crate) fn exact_slot(&self, addr: std::net::IpAddr) -> Option<bool> {
        let (family, key, len) = exact_key(&IpNet::from(addr));
        Some(self.slots()?.holds(family, &key[..len]))
    }

    /// The exact lists' slot tables, if the object has them.
    pub(crate) fn slots(&self) -> Option<&Slots> {
        self.slots.as_deref()
    }

    /// Handles of their own on the same kernel maps (new file descriptors), usable apart from
    /// these.
    pub(crate) fn try_clone(&self) -> Result<Self, Error> {
        let mut maps = Self::open(|kind, family| {
            let map = kind.map_name(family);
            let read_err = |source| Error::MapRead { map, source };
            let fd = self
                .borrow_fd(kind, family)
                .try_clone_to_owned()
                .map_err(|e| read_err(MapError::IoError(e)))?;
            let data = MapData::from_fd(fd).map_err(read_err)?;
            Ok(if kind.is_trie() {
                Map::LpmTrie(data)
            } else {
                Map::HashMap(data)
            })
        })?;
        maps.slots = self.slots.clone();
        Ok(maps)
    }

    fn open(mut map: impl FnMut(ListKind, Family) -> Result<Map, Error>) -> Result<Self, Error> {
        Ok(ListMaps {
            v4: tables(Family::V4, &mut map)?,
            v6: tables(Family::V6, &mut map)?,
            slots: None,
        })
    }

    /// The fd of `kind`'s map of `family`.
    pub(crate) fn borrow_fd(&self, kind: ListKind, family: Family) -> BorrowedFd<'_> {
        let data = match family {
            Family::V4 => self.v4[kind.index()].data(),
            Family::V6 => self.v6[kind.index()].data(),
        };
        data.fd().as_fd()
    }

    /// Adds `net` to `kind`'s map of its family, never overwriting. An exact entry also gets
    /// a slot: after the hash insert, both under the writers' exclusive lock (see `slots`).
    /// The outer error is the lock's; the inner one the map's.
    pub(crate) fn insert(
        &mut self,
        kind: ListKind,
        net: IpNet,
    ) -> Result<Result<(), MapError>, Error> {
        let i = kind.index();
        let slots = self.slots.clone().filter(|_| kind == ListKind::BlockExact);
        let _locked = slots.as_deref().map(Slots::lock).transpose()?;
        let result = by_family!(net, &mut self.v4[i], &mut self.v6[i], |table, addr, len| {
            table.insert(addr, len)
        });
        // Also when it was there already (EEXIST): a slot it lacked is given now.
        let listed = match &result {
            Ok(()) => true,
            Err(e) => crate::error::errno(e) == Some(libc::EEXIST),
        };
        if let (Some(slots), true) = (slots.as_deref(), listed) {
            let (family, key, len) = exact_key(&net);
            slots.publish(family, &key[..len]);
        }
        Ok(result)
    }

    /// Removes exactly `net` from `kind`'s map of its family; an exact entry's slot first.
    /// The outer error is the lock's; the inner one the map's.
    pub(crate) fn remove(
        &mut self,
        kind: ListKind,
        net: IpNet,
    ) -> Result<Result<(), MapError>, Error> {
        let i = kind.index();
        let slots = self.slots.clone().filter(|_| kind == ListKind::BlockExact);
        let _locked = slots.as_deref().map(Slots::lock).transpose()?;
        if let Some(slots) = slots.as_deref() {
            let (family, key, len) = exact_key(&net);
            slots.withdraw(family, &key[..len]);
        }
        let result = by_family!(net, &mut self.v4[i], &mut self.v6[i], |table, addr, len| {
            table.remove(addr, len)
        });
        // A removal that failed for another reason than absence leaves the entry listed: it
        // gets its slot back, still under the lock.
        if let (Some(slots), Err(e)) = (slots.as_deref(), &result) {
            if !crate::error::not_found(e) {
                let (family, key, len) = exact_key(&net);
                slots.publish(family, &key[..len]);
            }
        }
        Ok(result)
    }

    /// The stats of `net` (an exact entry's with its slot's hits). For prefixes the kernel
    /// answers with the longest *covering* prefix (LPM semantics hold for user-space lookups
    /// too).
    pub(crate) fn get(&self, kind: ListKind, net: IpNet) -> Result<EntryStats, MapError> {
        let i = kind.index();
        let stats = by_family!(net, &self.v4[i], &self.v6[i], |table, addr, len| {
            table.get(addr, len)
        })?;
        let extra = match (kind, self.slots.as_deref()) {
            (ListKind::BlockExact, Some(slots)) => {
                let (family, key, len) = exact_key(&net);
                slots.stats(family, &key[..len])
            }
            _ => None,
        };
        Ok(slots::merged(stats, extra))
    }

    /// Every entry of `list`, both families (IPv4 first), in no particular order.
    pub(crate) fn list(&self, list: ListKind) -> Result<Vec<ListEntry>, Error> {
        let read_err = |family| {
            move |source| Error::MapRead {
                map: list.map_name(family),
                source,
            }
        };
        let mut out = Vec::new();
        let slots = self
            .slots
            .as_deref()
            .filter(|_| list == ListKind::BlockExact);
        self.v4[list.index()]
            .entries(&mut out, slots)
            .map_err(read_err(Family::V4))?;
        self.v6[list.index()]
            .entries(&mut out, slots)
            .map_err(read_err(Family::V6))?;
        Ok(out)
    }
}

/// One family's three tables, in [`ListKind::index`] order.
fn tables<K: Addr>(
    family: Family,
    map: &mut impl FnMut(ListKind, Family) -> Result<Map, Error>,
) -> Result<[Table<K>; 3], Error> {
    let mut one = |kind: ListKind| Table::open(kind, kind.map_name(family), map(kind, family)?);
    Ok([
        one(ListKind::BlockExact)?,
        one(ListKind::BlockCidr)?,
        one(ListKind::Allow)?,
    ])
}
