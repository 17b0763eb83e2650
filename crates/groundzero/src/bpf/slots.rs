//! User space's side of the exact lists' slot tables (see `groundzero_common::slots`): mapped
//! into this process, written under the exclusive lock on the pinned maps' directory, read
//! for the hits they hold.
//!
//! The order of each write is the one that never drops an address the hash does not hold:
//! - an add goes into the hash first, then into a slot;
//! - a removal takes the slot first (a tombstone), then the entry out of the hash.
//!
//! Both happen under the exclusive lock, so no other writer runs between the two steps (a
//! removal by another process cannot leave a slot behind an entry it just deleted). A writer
//! that dies between the steps leaves an entry in the hash without a slot: still blocked where
//! its window is full, not blocked where the probe meets an empty slot, until the next load
//! rebuilds the slots from the hash ([`Slots::reconcile`]).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use groundzero_common::{
    lists::Family,
    maps::EntryStats,
    slots::{
        self as sl, next_tag, EXACT_SLOTS, SLOT_LIVE, SLOT_PROBES, SLOT_STATE, SLOT_TOMB,
        SLOT_WRITING,
    },
};

use super::{
    object::Object,
    summary::{Locked, Shared, WriteLock},
};
use crate::error::Error;

/// How many keys ahead a batch fetches the home slots of.
const AHEAD: usize = 16;

/// One family's table, mapped.
struct Table {
    mem: Shared,
    /// Bytes per slot, and where the key and the stats start in one.
    size: usize,
    key_at: usize,
    stats_at: usize,
    key_len: usize,
    home: fn(&[u8]) -> u32,
}

fn home4(key: &[u8]) -> u32 {
    sl::home_v4(key.try_into().expect("an IPv4 key is 4 bytes"))
}

fn home6(key: &[u8]) -> u32 {
    sl::home_v6(key.try_into().expect("an IPv6 key is 16 bytes"))
}

impl Table {
    fn slot(&self, i: u32) -> *mut u8 {
        let at = i as usize * self.size;
        assert!(at + self.size <= self.mem.len(), "slot {i} out of range");
        // SAFETY: in bounds (checked above) of a live mapping.
        unsafe { self.mem.base().add(at) }
    }

    fn tag(&self, i: u32) -> &AtomicU32 {
        // SAFETY: a slot starts with its u32 tag, 8-byte aligned (slot sizes are multiples of 8).
        unsafe { &*self.slot(i).cast::<AtomicU32>() }
    }

    fn stat(&self, i: u32, word: usize) -> &AtomicU64 {
        // SAFETY: the stats are two u64 words, 8-byte aligned within the slot.
        unsafe {
            &*self
                .slot(i)
                .add(self.stats_at + 8 * word)
                .cast::<AtomicU64>()
        }
    }

    /// Slot `i`'s key as it is now, padded to 16 bytes (no allocation: a load reads a
    /// million of them).
    fn read_key(&self, i: u32) -> [u8; 16] {
        let mut now = [0u8; 16];
        for (j, byte) in now[..self.key_len].iter_mut().enumerate() {
            // SAFETY: within the slot's key; volatile because the kernel side reads it too and
            // the tag, read around it, is what makes it consistent.
            *byte = unsafe { std::ptr::read_volatile(self.slot(i).add(self.key_at + j)) };
        }
        now
    }

    fn key_is(&self, i: u32, key: &[u8]) -> bool {
        self.read_key(i)[..self.key_len] == *key
    }

    fn write_key(&self, i: u32, key: &[u8]) {
        for (j, byte) in key.iter().enumerate() {
            // SAFETY: within the slot's key; the slot's tag says "being written" meanwhile.
            unsafe { std::ptr::write_volatile(self.slot(i).add(self.key_at + j), *byte) };
        }
    }

    /// Asks the CPU to fetch `key`'s home slot (and the line after it) ahead of a write or a
    /// probe: a million keys otherwise cost a cache miss each, one after the other.
    fn prefetch(&self, key: &[u8]) {
        let at = self.slot((self.home)(key));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64) as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = at;
    }

    /// Calls `f` on each of `keys` in order, with the home slots of the keys [`AHEAD`] on
    /// fetched meanwhile.
    fn each_prefetched<K: AsRef<[u8]>>(&self, keys: &[K], mut f: impl FnMut(&[u8])) {
        for (i, key) in keys.iter().enumerate() {
            if let Some(next) = keys.get(i + AHEAD) {
                self.prefetch(next.as_ref());
            }
            f(key.as_ref());
        }
    }

    /// The live slot holding `key`, read as the XDP program reads it: `None` if the probe meets
    /// an empty slot or the end of the window first.
    fn find(&self, key: &[u8]) -> Option<u32> {
        let home = (self.home)(key);
        for p in 0..SLOT_PROBES {
            let i = sl::probe(home, p);
            let tag = self.tag(i).load(Ordering::Acquire);
            match tag & SLOT_STATE {
                sl::SLOT_EMPTY => return None,
                SLOT_LIVE if self.key_is(i, key) && self.tag(i).load(Ordering::Acquire) == tag => {
                    return Some(i)
                }
                _ => {}
            }
        }
        None
    }

    /// The hits the program counted in `key`'s slot, if it has one.
    fn stats(&self, key: &[u8]) -> Option<EntryStats> {
        let i = self.find(key)?;
        Some(EntryStats {
            hits: self.stat(i, 0).load(Ordering::Relaxed),
            last_hit_ns: self.stat(i, 1).load(Ordering::Relaxed),
        })
    }

    /// Gives `key` a slot, if it has none and its window has room: false when it stays in the
    /// hash only. Under the exclusive lock.
    fn publish(&self, key: &[u8]) -> bool {
        if self.find(key).is_some() {
            return true;
        }
        let home = (self.home)(key);
        let Some(i) = (0..SLOT_PROBES)
            .map(|p| sl::probe(home, p))
            .find(|&i| self.state(i) != SLOT_LIVE)
        else {
            return false;
        };
        self.set_state(i, SLOT_WRITING);
        fence(Ordering::SeqCst);
        self.write_key(i, key);
        self.stat(i, 0).store(0, Ordering::Relaxed);
        self.stat(i, 1).store(0, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.set_state(i, SLOT_LIVE);
        true
    }

    /// Takes `key`'s slot, if it has one: it becomes a tombstone. Under the exclusive lock.
    fn withdraw(&self, key: &[u8]) {
        if let Some(i) = self.find(key) {
            self.set_state(i, SLOT_TOMB);
        }
    }

    /// Sets slot `i`'s state, as a new generation.
    fn set_state(&self, i: u32, state: u32) {
        let tag = self.tag(i);
        tag.store(
            next_tag(tag.load(Ordering::Acquire), state),
            Ordering::SeqCst,
        );
    }

    fn state(&self, i: u32) -> u32 {
        self.tag(i).load(Ordering::Acquire) & SLOT_STATE
    }

    /// Turns tombstones back into empty slots where no probe needs them: a tombstone whose
    /// next slot is empty ends every probe that reaches it (nothing was ever placed past an
    /// empty slot), unless it lies in the window of an entry that is in the hash only, whose
    /// probe must keep meeting no empty slot. Walks back from each empty slot. Under the
    /// exclusive lock, with `hash_only` the homes of every entry without a slot. (Reconcile
    /// gives those a slot first wherever their window has a tombstone, so their windows are
    /// all live by now; the check keeps the rule true whatever the order.)
    fn sweep(&self, hash_only: &[u32]) -> usize {
        let mut protected = vec![false; EXACT_SLOTS as usize];
        for &home in hash_only {
            for p in 0..SLOT_PROBES {
                protected[sl::probe(home, p) as usize] = true;
            }
        }
        let mut swept = 0;
        for start in 0..EXACT_SLOTS {
            if self.state(start) != sl::SLOT_EMPTY {
                continue;
            }
            let mut i = sl::probe(start, EXACT_SLOTS - 1); // the slot before, wrapping
            while self.state(i) == SLOT_TOMB && !protected[i as usize] {
                self.set_state(i, sl::SLOT_EMPTY);
                swept += 1;
                i = sl::probe(i, EXACT_SLOTS - 1);
            }
        }
        swept
    }
}

/// Both families' slot tables and the writers' lock.
pub(crate) struct Slots {
    v4: Table,
    v6: Table,
    lock: WriteLock,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").finish_non_exhaustive()
    }
}

/// How far the slot tables were from the hashes, as [`Slots::reconcile`] found them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reconciled {
    /// Entries of the hash given a slot they lacked.
    pub(crate) published: usize,
    /// Live slots whose address the hash no longer holds, and half-written ones, made
    /// tombstones.
    pub(crate) withdrawn: usize,
    /// Tombstones made empty slots again.
    pub(crate) swept: usize,
}

impl Slots {
    /// Maps `object`'s slot tables; `None` for an object without them (an older build's, which
    /// the benchmark loads beside this one's: its program asks the hash every time).
    pub(crate) fn map(
        object: &Object,
        maps_dir: Option<&std::path::Path>,
    ) -> Result<Option<Self>, Error> {
        let array = |name: &'static str| -> Result<Option<Shared>, Error> {
            match object.map(name) {
                Ok(aya::maps::Map::Array(data)) => {
                    let size = match name {
                        sl::BLOCK_SLOTS_V4 => std::mem::size_of::<sl::SlotV4>(),
                        _ => std::mem::size_of::<sl::SlotV6>(),
                    };
                    Shared::map(name, data, size * EXACT_SLOTS as usize).map(Some)
                }
                // Present but not an array: an error, not "no slots".
                Ok(_) => Err(Error::NoMap { map: name }),
                Err(Error::NoMap { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let (Some(v4), Some(v6)) = (array(sl::BLOCK_SLOTS_V4)?, array(sl::BLOCK_SLOTS_V6)?) else {
            return Ok(None);
        };
        Ok(Some(Slots {
            v4: Table {
                mem: v4,
                size: std::mem::size_of::<sl::SlotV4>(),
                key_at: std::mem::offset_of!(sl::SlotV4, key),
                stats_at: std::mem::offset_of!(sl::SlotV4, stats),
                key_len: 4,
                home: home4,
            },
            v6: Table {
                mem: v6,
                size: std::mem::size_of::<sl::SlotV6>(),
                key_at: std::mem::offset_of!(sl::SlotV6, key),
                stats_at: std::mem::offset_of!(sl::SlotV6, stats),
                key_len: 16,
                home: home6,
            },
            lock: WriteLock::open(maps_dir)?,
        }))
    }

    fn table(&self, family: Family) -> &Table {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// The writers' exclusive lock, held while it lives: around a hash edit and its slots.
    pub(crate) fn lock(&self) -> Result<Locked<'_>, Error> {
        self.lock.lock(false)
    }

    /// Gives `key` a slot (see [`Table::publish`]); under [`Self::lock`], after the hash insert.
    pub(crate) fn publish(&self, family: Family, key: &[u8]) -> bool {
        self.table(family).publish(key)
    }

    /// [`Self::publish`] for each of `keys`, with the slots of the keys a few ahead fetched
    /// meanwhile (a batch of a million new entries spends its time waiting on memory).
    pub(crate) fn publish_all<K: AsRef<[u8]>>(&self, family: Family, keys: &[K]) {
        let table = self.table(family);
        table.each_prefetched(keys, |key| {
            table.publish(key);
        });
    }

    /// Takes `key`'s slot; under [`Self::lock`], before the hash removal.
    pub(crate) fn withdraw(&self, family: Family, key: &[u8]) {
        self.table(family).withdraw(key)
    }

    /// The hits counted in `key`'s slot.
    pub(crate) fn stats(&self, family: Family, key: &[u8]) -> Option<EntryStats> {
        self.table(family).stats(key)
    }

    /// Whether `key` has a live slot, as the XDP program would find it.
    pub(crate) fn holds(&self, family: Family, key: &[u8]) -> bool {
        self.table(family).find(key).is_some()
    }

    /// Makes `family`'s table an index of exactly `keys` (the hash's, read under the same
    /// lock): a slot for each key that lacks one and has room, a tombstone for each live slot
    /// whose key is not there (or that repeats another's) and for each slot a writer left
    /// half-written, and empty slots again for the tombstones no probe needs. For the owner's
    /// load, which cannot know whether a writer died between its two steps.
    ///
    /// The caller holds [`Self::lock`] from before it read `keys` until this returns: a writer
    /// in between could otherwise remove a key this then gives a slot (an address dropped
    /// that no list holds), or add one this then withdraws.
    pub(crate) fn reconcile(&self, family: Family, keys: &[&[u8]]) -> Reconciled {
        let table = self.table(family);
        let listed: std::collections::HashSet<&[u8]> = keys.iter().copied().collect();
        let mut done = Reconciled::default();
        // One pass over the slots (no slot changes under the lock but by this pass).
        let mut seen = std::collections::HashSet::new();
        for i in 0..EXACT_SLOTS {
            let stale = match table.state(i) {
                SLOT_LIVE => {
                    let key = table.read_key(i);
                    !listed.contains(&key[..table.key_len]) || !seen.insert(key)
                }
                state => state == SLOT_WRITING,
            };
            if stale {
                table.set_state(i, SLOT_TOMB);
                done.withdrawn += 1;
            }
        }
        let mut hash_only = Vec::new();
        table.each_prefetched(keys, |key| {
            if table.find(key).is_some() {
                return;
            }
            if table.publish(key) {
                done.published += 1;
            } else {
                hash_only.push((table.home)(key));
            }
        });
        done.swept = table.sweep(&hash_only);
        done
    }
}

/// Adds `extra` (a slot's hits) to `stats` (the hash value's): the entry's hits are the sum,
/// its last hit the later of the two.
pub(crate) fn merged(stats: EntryStats, extra: Option<EntryStats>) -> EntryStats {
    match extra {
        None => stats,
        Some(s) => EntryStats {
            hits: stats.hits + s.hits,
            last_hit_ns: stats.last_hit_ns.max(s.last_hit_ns),
        },
    }
}
