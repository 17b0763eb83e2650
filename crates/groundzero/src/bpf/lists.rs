//! The block and allow lists: adding and removing entries (one by one or all-or-nothing in
//! batches), looking them up, listing them, and keeping the summaries counted.

use std::collections::HashSet;

use aya::maps::MapError;
use groundzero_common::{
    lists::{Family, ListKind},
    maps::EntryStats,
};
use ipnet::IpNet;

use super::{
    batch,
    list_maps::{ListEntry, ListMaps},
    list_reader::ListReader,
    object::Object,
    summary::Summaries,
};
use crate::error::{errno, not_found, EntryOp, Error};

/// The list maps, their summaries and their capacities.
pub(crate) struct Lists {
    maps: ListMaps,
    /// The summaries in front of the tries and the exact hashes, counted on every insert and
    /// removal.
    summaries: Summaries,
    /// Per map, by [`ListKind::index`].
    capacity: [u32; 3],
    /// Inserts refused because a map was full, since load.
    failed_inserts: u64,
}

impl Lists {
    /// Takes the list and summary maps out of `object`. `summaries_fresh`: the summaries were
    /// just made next to tries that may hold entries, so count those now.
    /// `maps_dir`: where the maps are pinned, if they are (other processes may write them).
    /// `owner`: this process holds the pins (or they are its own): it rebuilds the exact slot
    /// tables from the hashes, which another loader (a tool, an application's fallback while
    /// the daemon restarts) leaves to the owner, as it leaves recovery and migration.
    pub(crate) fn take(
        object: &mut Object,
        capacity: [u32; 3],
        summaries_fresh: bool,
        maps_dir: Option<&std::path::Path>,
        owner: bool,
    ) -> Result<Self, Error> {
        let lists = Lists {
            summaries: Summaries::map(object, maps_dir)?,
            maps: ListMaps::take(object, maps_dir)?,
            capacity,
            failed_inserts: 0,
        };
        if summaries_fresh {
            for list in ListKind::ALL {
                let nets: Vec<IpNet> = lists.list(list)?.iter().map(|e| e.net).collect();
                lists.summaries.add_all(list, &nets)?;
            }
        }
        if owner {
            lists.reconcile_slots::<4>(Family::V4)?;
            lists.reconcile_slots::<16>(Family::V6)?;
        }
        Ok(lists)
    }

    /// Makes `family`'s slot table an index of its exact hash again: a writer may have died
    /// between its two steps, and pins of an older layout have no slots at all.
    fn reconcile_slots<const N: usize>(&self, family: Family) -> Result<(), Error>
    where
        [u8; N]: Default,
    {
        let Some(slots) = self.maps.slots() else {
            return Ok(());
        };
        let list = ListKind::BlockExact;
        // Held from the read of the hash to the last slot written (see `Slots::reconcile`).
        let _locked = slots.lock()?;
        let fd = self.maps.borrow_fd(list, family);
        let keys: Vec<[u8; N]> = batch::entries::<[u8; N], EntryStats>(fd)
            .map_err(|e| Error::MapRead {
                map: list.map_name(family),
                source: syscall_error("BPF_MAP_LOOKUP_BATCH", e),
            })?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let done = slots.reconcile(family, &keys);
        if done.published + done.withdrawn > 0 {
            log::info!(
                "exact {family:?} slots rebuilt from the hash: {} given a slot, {} withdrawn",
                done.published,
                done.withdrawn
            );
        }
        log::debug!("exact {family:?} slots: {} tombstones swept", done.swept);
        Ok(())
    }

    /// Inserts refused because a map was full, since load.
    pub(crate) fn failed_inserts(&self) -> u64 {
        self.failed_inserts
    }

    /// Read-only handles of their own on the list maps.
    pub(crate) fn reader(&self) -> Result<ListReader, Error> {
        Ok(ListReader::new(self.maps.try_clone()?))
    }

    /// The summaries' counts of `list` at `addr`'s keys.
    pub(crate) fn summary_counts(&self, list: ListKind, addr: std::net::IpAddr) -> Vec<u8> {
        self.summaries.counts_at(list, addr)
    }

    /// The summaries' bits of `list` at `addr`'s keys, as the XDP program reads them.
    pub(crate) fn summary_bits(&self, list: ListKind, addr: std::net::IpAddr) -> Option<Vec<bool>> {
        self.summaries.bits_at(list, addr)
    }

    /// Whether the object has the exact slot tables.
    pub(crate) fn has_slots(&self) -> bool {
        self.maps.slots().is_some()
    }

    /// Whether `addr` has a live exact slot; `None` without slot tables.
    pub(crate) fn exact_slot(&self, addr: std::net::IpAddr) -> Option<bool> {
        self.maps.exact_slot(addr)
    }

    /// Every entry of `list`, both families, sorted.
    pub(crate) fn list(&self, list: ListKind) -> Result<Vec<ListEntry>, Error> {
        let mut out = self.maps.list(list)?;
        out.sort_by_key(|e| e.net);
        Ok(out)
    }

    /// A lookup in the kernel map. For prefixes the kernel answers with the longest *covering*
    /// prefix, so the stats are `net`'s only if `net` is itself in the trie: callers ask only
    /// about entries they know are there.
    pub(crate) fn lookup(&self, list: ListKind, net: IpNet) -> Result<Option<ListEntry>, Error> {
        match self.maps.get(list, net) {
            Ok(stats) => Ok(Some(ListEntry::new(net, stats))),
            Err(e) if not_found(&e) => Ok(None),
            Err(source) => Err(Error::MapRead {
                map: list.map_name(Family::of(&net)),
                source,
            }),
        }
    }

    /// Adds `net`; `Ok(false)` if it was already there.
    pub(crate) fn insert(&mut self, list: ListKind, net: IpNet) -> Result<bool, Error> {
        // Counted before the insert: the summary may say "maybe" for a while, never "no" for an
        // entry that is in the trie.
        self.summaries.add(list, &net)?;
        let result = self.maps.insert(list, net)?;
        if result.is_err() {
            self.summaries.sub(list, &net)?;
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) => match errno(&e) {
                Some(libc::EEXIST) => Ok(false),
                // Hash maps say E2BIG when full, LPM tries ENOSPC.
                Some(libc::E2BIG) | Some(libc::ENOSPC) => Err(self.full(list, net)),
                _ => Err(update_error(list, EntryOp::Add, net, e)),
            },
        }
    }

    /// Removes exactly `net`; `Ok(false)` if it was not there.
    pub(crate) fn remove(&mut self, list: ListKind, net: IpNet) -> Result<bool, Error> {
        let result = self.maps.remove(list, net)?;
        if result.is_ok() {
            // Uncounted only after the removal, for the same reason as in `insert`.
            self.summaries.sub(list, &net)?;
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(update_error(list, EntryOp::Remove, net, e)),
        }
    }

    /// The error for a full map, counted.
    fn full(&mut self, list: ListKind, entry: IpNet) -> Error {
        self.failed_inserts += 1;
        Error::MapFull {
            list,
            capacity: self.capacity[list.index()],
            entry,
        }
    }

    /// Adds every entry or none: if one fails (a full map), those this call added are removed.
    pub(crate) fn insert_all(
        &mut self,
        nets: &[IpNet],
        list_of: impl Fn(&IpNet) -> ListKind,
    ) -> Result<(), Error> {
        let mut added = Vec::new();
        let result = self.insert_all_tracked(nets, &list_of, &mut added);
        if result.is_err() {
            // Undo what this call added (not what was there before): nothing half applied.
            self.remove_all_of(&added);
        }
        result
    }

    fn insert_all_tracked(
        &mut self,
        nets: &[IpNet],
        list_of: &impl Fn(&IpNet) -> ListKind,
        added: &mut Vec<(ListKind, IpNet)>,
    ) -> Result<(), Error> {
        let split = Split::of(nets, list_of);
        for &(list, net) in &split.one_by_one {
            if self.insert(list, net)? {
                added.push((list, net));
            }
        }
        self.insert_exact_batch(Family::V4, &split.exact4, added)?;
        self.insert_exact_batch(Family::V6, &split.exact6, added)
    }

    /// Exact entries go in with BPF_MAP_UPDATE_BATCH. The kernel's batch update cannot be told
    /// "never overwrite", so keys already in the map are read first (BPF_MAP_LOOKUP_BATCH) and
    /// left alone: an existing entry keeps its hits. Small inserts go one by one.
    ///
    /// Keys stay fixed-size arrays from start to end (no allocation per entry): at a million
    /// entries the user-space side otherwise costs as much as the kernel's.
    fn insert_exact_batch<const N: usize>(
        &mut self,
        family: Family,
        nets: &[(IpNet, [u8; N])],
        added: &mut Vec<(ListKind, IpNet)>,
    ) -> Result<(), Error>
    where
        [u8; N]: Default,
    {
        const CHUNK: usize = 1 << 16;
        const ONE_BY_ONE: usize = 64;
        let list = ListKind::BlockExact;
        if nets.len() <= ONE_BY_ONE {
            for &(net, _) in nets {
                if self.insert(list, net)? {
                    added.push((list, net));
                }
            }
            return Ok(());
        }
        let map = list.map_name(family);
        let capacity = self.capacity[list.index()] as usize;
        let fd = self.maps.borrow_fd(list, family);
        let existing: HashSet<[u8; N]> = batch::entries::<[u8; N], EntryStats>(fd)
            .map_err(|e| Error::MapRead {
                map,
                source: syscall_error("BPF_MAP_LOOKUP_BATCH", e),
            })?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        // An exact entry is one address, so its key identifies it: deduplicate on keys, keeping
        // each key's first occurrence, in the caller's order. By sorting, not with a hash set:
        // a million inserts into a set that outgrows the caches cost 200-400 ms here, the sort
        // a fraction of that.
        let mut sorted: Vec<([u8; N], u32)> =
            nets.iter().zip(0u32..).map(|((_, k), i)| (*k, i)).collect();
        sorted.sort_unstable();
        let mut keep = vec![false; nets.len()];
        for (j, (key, i)) in sorted.iter().enumerate() {
            let first = j == 0 || sorted[j - 1].0 != *key;
            keep[*i as usize] = first && !existing.contains(key);
        }
        drop(sorted);
        let (new, keys): (Vec<IpNet>, Vec<[u8; N]>) = nets
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k)
            .map(|(entry, _)| *entry)
            .unzip();
        let free = capacity - existing.len().min(capacity);
        if new.len() > free {
            // Refuse up front rather than fill the map and roll back.
            return Err(self.full(list, new[free]));
        }
        let values = vec![EntryStats::default(); new.len()];
        added.reserve(new.len());
        for start in (0..new.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(new.len());
            let fd = self.maps.borrow_fd(list, family);
            // Counted before the insert, as in `insert`; what a failed batch did not add stays
            // counted (the rollback below uncounts what it removes): a summary may say "maybe"
            // for an absent address, never "no" for a present one.
            self.summaries.add_all(list, &new[start..end])?;
            // The hash edit and the slots under the writers' exclusive lock (see `slots`); the
            // slots only for a batch that went in whole (a failed one is rolled back).
            let slots = self.maps.slots();
            let locked = slots.map(|s| s.lock()).transpose()?;
            let (_, result) = batch::update(fd, &keys[start..end], &values[start..end], 0);
            if let (Some(slots), Ok(())) = (slots, &result) {
                slots.publish_all(family, &keys[start..end]);
            }
            drop(locked);
            // How far a failed batch got is not reliably reported: count it all as added so
            // the caller's rollback removes whatever did go in.
            added.extend(new[start..end].iter().map(|n| (list, *n)));
            if let Err(e) = result {
                return Err(match e.raw_os_error() {
                    Some(libc::E2BIG) | Some(libc::ENOSPC) => self.full(list, new[start]),
                    _ => update_error(
                        list,
                        EntryOp::Add,
                        new[start],
                        syscall_error("BPF_MAP_UPDATE_BATCH", e),
                    ),
                });
            }
        }
        Ok(())
    }

    /// Removes every entry in `nets` from the list `list_of` names for it (exact ones in
    /// batches). Absent ones are ignored.
    pub(crate) fn remove_all(
        &mut self,
        nets: &[IpNet],
        list_of: impl Fn(&IpNet) -> ListKind,
    ) -> Result<(), Error> {
        let split = Split::of(nets, &list_of);
        for &(list, net) in &split.one_by_one {
            self.remove(list, net)?;
        }
        self.remove_exact_batch(Family::V4, &split.exact4)?;
        self.remove_exact_batch(Family::V6, &split.exact6)
    }

    fn remove_exact_batch<const N: usize>(
        &mut self,
        family: Family,
        nets: &[(IpNet, [u8; N])],
    ) -> Result<(), Error> {
        for chunk in nets.chunks(1 << 16) {
            let keys: Vec<[u8; N]> = chunk.iter().map(|(_, k)| *k).collect();
            let fd = self.maps.borrow_fd(ListKind::BlockExact, family);
            // Slots first, then the hash, under the writers' exclusive lock (see `slots`).
            let slots = self.maps.slots();
            let locked = slots.map(|s| s.lock()).transpose()?;
            if let Some(slots) = slots {
                for key in &keys {
                    slots.withdraw(family, key.as_slice());
                }
            }
            let (reported, result) = batch::delete(fd, &keys);
            // The kernel deletes key by key and, when a key stops it, reports how many it
            // deleted before (generic_map_delete_batch): those are uncounted, after their
            // removal. An error before the loop (a read-only fd, a bad attribute) leaves the
            // count we passed in: nothing is trusted then, and the chunk goes one by one.
            let done = match result {
                Ok(()) => chunk.len(),
                Err(_) if reported < chunk.len() => reported,
                Err(_) => 0,
            };
            if let Some(slots) = slots {
                // The keys the batch did not reach and the hash still holds get their slots
                // back before the lock goes: the one-by-one removal below takes each again,
                // and none stays listed without a slot if that removal stops too.
                for (net, key) in &chunk[done..] {
                    if self.maps.get(ListKind::BlockExact, *net).is_ok() {
                        slots.publish(family, key.as_slice());
                    }
                }
            }
            drop(locked);
            let removed: Vec<IpNet> = chunk[..done].iter().map(|(net, _)| *net).collect();
            self.summaries.sub_all(ListKind::BlockExact, &removed)?;
            // A batch stops at the first absent key (ENOENT): finish that chunk one by one.
            if result.is_err() {
                for &(net, _) in &chunk[done..] {
                    self.remove(ListKind::BlockExact, net)?;
                }
            }
        }
        Ok(())
    }

    /// Best-effort removal of what a failed all-or-nothing insert had added.
    fn remove_all_of(&mut self, entries: &[(ListKind, IpNet)]) {
        let exact: Vec<IpNet> = entries
            .iter()
            .filter(|(l, _)| *l == ListKind::BlockExact)
            .map(|(_, n)| *n)
            .collect();
        let _ = self.remove_all(&exact, |_| ListKind::BlockExact);
        for &(list, net) in entries.iter().filter(|(l, _)| *l != ListKind::BlockExact) {
            let _ = self.remove(list, net);
        }
    }
}

/// Entries split for a bulk edit: exact ones by family with their keys (they go in batches),
/// the rest (trie entries, one syscall each) with their list.
struct Split {
    exact4: Vec<(IpNet, [u8; 4])>,
    exact6: Vec<(IpNet, [u8; 16])>,
    one_by_one: Vec<(ListKind, IpNet)>,
}

impl Split {
    fn of(nets: &[IpNet], list_of: &impl Fn(&IpNet) -> ListKind) -> Self {
        let mut split = Split {
            exact4: Vec::new(),
            exact6: Vec::new(),
            one_by_one: Vec::new(),
        };
        for &net in nets {
            match (list_of(&net), net) {
                (ListKind::BlockExact, IpNet::V4(n)) => split.exact4.push((net, n.addr().octets())),
                (ListKind::BlockExact, IpNet::V6(n)) => split.exact6.push((net, n.addr().octets())),
                (list, _) => split.one_by_one.push((list, net)),
            }
        }
        split
    }
}

/// A map operation's error for the list entry it was about.
fn update_error(list: ListKind, op: EntryOp, entry: IpNet, source: MapError) -> Error {
    Error::MapUpdate {
        list,
        op,
        entry,
        source,
    }
}

/// A failed raw `bpf()` command as aya reports its own.
fn syscall_error(call: &'static str, io_error: std::io::Error) -> MapError {
    MapError::SyscallError(aya::sys::SyscallError { call, io_error })
}
