//! Migrating a pin directory from an older map layout to [`LAYOUT`], under a running XDP link.
//!
//! The old program keeps filtering, with the old maps, until the kernel swaps the new program
//! into the pinned link (bpf_link_update, atomic per packet). The steps are ordered so that a
//! crash anywhere leaves one complete working set in force, never a link on half-copied maps:
//!
//! 1. **Build**: the new object is loaded with its maps pinned under `<pin_dir>/next/maps`
//!    (fresh), every list entry is copied from `<pin_dir>/maps` with its value (hit count, last
//!    hit) converted by the version steps below, the summaries are counted from the copied
//!    lists (and marked counted), and the counters and the config are copied (so Prometheus counters do not go
//!    backwards and monitor mode stays on). Then `<pin_dir>/next/layout` is stamped: the new set
//!    is complete. A crash before this stamp: `recover` removes `next/` and the old set, still
//!    in the links, is migrated again from scratch.
//! 2. **Swap**: each pinned link gets the new program. A crash during the swaps leaves each link
//!    on a complete set, old or new; `recover` then commits (below) and the next load adopts
//!    every link with the new program.
//! 3. **Commit**: `maps` moves to `retired/maps`, `next/maps` to `maps`, the directory is stamped
//!    [`LAYOUT`], `next/` and the retired maps are removed. Each step is a rename or an unlink
//!    that `recover` can finish.
//!
//! Entries whose hits arrive between the copy and the swap keep those hits in the old maps only
//! (a few milliseconds' worth); the entries themselves are all there.
//!
//! A later layout that changes a map's value type adds one conversion function per version
//! step (`entry_1_to_2`, then `entry_2_to_3`, ...) and chains them in [`convert_entry`].

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::maps::{lpm_trie::Key, Array, LpmTrie, Map, MapData, MapError, PerCpuArray};
use groundzero_common::{
    lists::{Family, ListKind},
    maps::{self as names, Config, Counter, EntryStats, InterfaceCounters},
};

use super::{
    batch,
    keys::Addr,
    layout::{self, LAYOUT},
    lists::Lists,
    object::{Object, ShieldOptions},
    pins,
};
use crate::error::{error_chain, Error};

/// Where a migration builds the new maps: `<pin_dir>/next` (bpffs refuses dots in names).
const NEXT: &str = "next";
/// Where the old maps wait to be removed once the new ones are in place.
const RETIRED: &str = "retired";

/// A list entry's value as layout 1 stores it.
type EntryV1 = EntryStats;
/// A list entry's value as layout 2 stores it.
type EntryV2 = EntryStats;
/// A list entry's value as layout 3 stores it.
type EntryV3 = EntryStats;
/// A list entry's value as layout 4 stores it.
type EntryV4 = EntryStats;
/// A list entry's value as layout 5 stores it.
type EntryV5 = EntryStats;
/// A list entry's value as layout 6 stores it in the hash. Layout 6's slot tables hold the hits
/// of the entries that have a slot: a migration *from* layout 6 must add those to the values
/// it copies (what `ListMaps::list` reports), not copy the hash's alone.
type EntryV6 = EntryStats;

/// Layout 1 → 2: the list value did not change (hits, last hit).
fn entry_1_to_2(value: EntryV1) -> EntryV2 {
    value
}

/// Layout 2 → 3: the list value did not change; what changed is where the program counts (see
/// the layout module).
fn entry_2_to_3(value: EntryV2) -> EntryV3 {
    value
}

/// Layout 3 → 4: the list value did not change; what is new are the exact summaries, counted
/// from the copied lists like the prefix ones.
fn entry_3_to_4(value: EntryV3) -> EntryV4 {
    value
}

/// Layout 4 → 5: the list value did not change; what is new are the summaries' bitmaps, set
/// as the copied lists are counted.
fn entry_4_to_5(value: EntryV4) -> EntryV5 {
    value
}

/// Layout 5 → 6: the hash's value did not change; what is new are the exact slot tables,
/// built from the copied hashes when the staged lists are taken, with no hits yet.
fn entry_5_to_6(value: EntryV5) -> EntryV6 {
    value
}

/// A list value of layout `from` as this build stores it: the version steps from `from` on,
/// chained (a layout-1 value takes every step, a layout-3 value the last one).
fn convert_entry(from: u32, value: EntryV1) -> EntryV6 {
    debug_assert!(
        (1..LAYOUT).contains(&from),
        "layout {from} is not older than {LAYOUT}"
    );
    let value = if from < 2 { entry_1_to_2(value) } else { value };
    let value = if from < 3 { entry_2_to_3(value) } else { value };
    let value = if from < 4 { entry_3_to_4(value) } else { value };
    let value = if from < 5 { entry_4_to_5(value) } else { value };
    entry_5_to_6(value)
}

/// Migrates the pins under `dir` from layout `from` to [`LAYOUT`] (see the module docs for the
/// order of the steps). `options` gives the capacities only where no old map says otherwise.
pub(crate) fn migrate(dir: &Path, from: u32, options: &ShieldOptions) -> Result<(), Error> {
    let fail = |message: String| Error::Migrate {
        dir: dir.to_path_buf(),
        from,
        to: LAYOUT,
        message,
    };
    log::info!(
        "{}: pins of map layout {from}; migrating them to layout {LAYOUT}",
        dir.display()
    );
    let old_maps = dir.join("maps");
    let next = dir.join(NEXT);
    let next_maps = next.join("maps");

    // 1. Build the new set, complete, before any link sees it.
    let mut staged_options = options.clone();
    for list in ListKind::ALL {
        // The old maps' sizes, so that the new maps hold every entry (and the operator's sizing
        // survives the upgrade).
        let name = list.map_name(Family::V4);
        let capacity = open_pinned(&old_maps, name)
            .and_then(|m| m.info())
            .map_err(|e| fail(format!("reading {name}'s size: {}", error_chain(&e))))?
            .max_entries();
        match list {
            ListKind::BlockExact => staged_options.exact_capacity = capacity,
            ListKind::BlockCidr => staged_options.cidr_capacity = capacity,
            ListKind::Allow => staged_options.allow_capacity = capacity,
        }
    }
    staged_options.pin_dir = Some(next.clone());
    let loaded = Object::load_at(&mut staged_options, Some(&next_maps))?;
    let mut staged = loaded.object;
    let mut copied = 0usize;
    for list in ListKind::ALL {
        copied += copy_list::<[u8; 4]>(&old_maps, &next_maps, list, from).map_err(&fail)?;
        copied += copy_list::<[u8; 16]>(&old_maps, &next_maps, list, from).map_err(&fail)?;
    }
    // Counting the summaries from the copied tries: taking the lists does exactly that when
    // told the summaries are fresh, which they are; as the pins' owner, it also builds the
    // exact slot tables from the copied hashes.
    let capacity = ListKind::ALL.map(|list| staged_options.capacity(list));
    drop(Lists::take(
        &mut staged,
        capacity,
        true,
        Some(&next_maps),
        true,
    )?);
    super::object::mark_summaries_counted(&next_maps)?;
    // Not worth failing an upgrade for: the daemon writes its config again at start, and
    // counters that restart from zero are a reset Prometheus knows how to read.
    if let Err(e) = copy_counters(&old_maps, &next_maps) {
        log::warn!("{}: {e}; they start anew", dir.display());
    }
    layout::write(&next, LAYOUT)?;
    log::info!("{}: {copied} list entries copied", next_maps.display());

    // 2. Swap the new program into every pinned link.
    let program = staged.xdp_mut()?;
    for (interface, mode) in pins::pinned_interfaces(dir) {
        let path = pins::link_path(dir, &interface, mode);
        match pins::adopt_link(program, &path)? {
            Some(_) => {
                log::info!("{interface}: the pinned link now runs the layout-{LAYOUT} program")
            }
            // Its interface is gone: nothing filters there; attaching later makes a new link.
            None => log::warn!("{}: defunct link left as it is", path.display()),
        }
    }

    // 3. Put the new maps where the next load looks for them.
    commit(dir)?;
    // The staged object goes: its program lives on in the links, its maps in the pins.
    drop(staged);
    Ok(())
}

/// A migration's directories are there (one runs, or a crash interrupted it).
pub(crate) fn in_progress(dir: &Path) -> bool {
    dir.join(NEXT).exists() || dir.join(RETIRED).exists()
}

/// Finishes or discards a migration a crash interrupted: with `next/` stamped, the new set is
/// complete and is committed; without, `next/` is removed (the old set is still the live one).
/// Leftover retired maps are removed.
pub(crate) fn recover(dir: &Path) -> Result<(), Error> {
    let next = dir.join(NEXT);
    if next.exists() {
        if layout::read_stamp(&layout::stamp_path(&next))?.is_some() {
            log::warn!(
                "{}: finishing a map-layout migration that was interrupted after its new maps were complete",
                dir.display()
            );
            commit(dir)?;
        } else {
            log::warn!(
                "{}: discarding an interrupted map-layout migration (the old maps are still in use)",
                dir.display()
            );
            remove_maps_dir(&next.join("maps"))?;
            remove_dir(&next)?;
        }
    }
    let retired = dir.join(RETIRED);
    if retired.exists() {
        remove_maps_dir(&retired.join("maps"))?;
        remove_dir(&retired)?;
    }
    Ok(())
}

/// Step 3, each part skipped if an earlier, interrupted run did it.
fn commit(dir: &Path) -> Result<(), Error> {
    let maps = dir.join("maps");
    let next = dir.join(NEXT);
    let next_maps = next.join("maps");
    let retired = dir.join(RETIRED);
    let retired_maps = retired.join("maps");
    if next_maps.exists() {
        if maps.exists() {
            // Retired maps of an earlier attempt would block the rename; they are not in use.
            remove_maps_dir(&retired_maps)?;
            pins::ensure_dir(&retired)?;
            rename(&maps, &retired_maps)?;
        }
        rename(&next_maps, &maps)?;
    }
    layout::write(dir, LAYOUT)?;
    let _ = std::fs::remove_file(layout::stamp_path(&next));
    remove_dir(&next)?;
    remove_maps_dir(&retired_maps)?;
    remove_dir(&retired)
}

/// Copies `list`'s entries of one family from the old pinned map to the new one, converting
/// each value. Returns how many.
fn copy_list<K: Addr>(
    from_dir: &Path,
    to_dir: &Path,
    list: ListKind,
    from: u32,
) -> Result<usize, String> {
    let name = list.map_name(K::FAMILY);
    let open = |dir: &Path| {
        open_pinned(dir, name).map_err(|e| format!("opening {name}: {}", error_chain(&e)))
    };
    let (old, new) = (open(from_dir)?, open(to_dir)?);
    let write_err = |e: std::io::Error| format!("copying into {name}: {e}");
    if list.is_trie() {
        let old: LpmTrie<MapData, K, EntryV1> =
            LpmTrie::try_from(Map::from_map_data(old).map_err(|e| e.to_string())?)
                .map_err(|e| format!("{name}: {e}"))?;
        let mut new: LpmTrie<MapData, K, EntryV4> =
            LpmTrie::try_from(Map::from_map_data(new).map_err(|e| e.to_string())?)
                .map_err(|e| format!("{name}: {e}"))?;
        // Tries have no batch operations; prefix lists are short next to the exact ones.
        let entries: Vec<(Key<K>, EntryV1)> = old
            .iter()
            .collect::<Result<_, MapError>>()
            .map_err(|e| format!("reading {name}: {}", error_chain(&e)))?;
        for (key, value) in &entries {
            new.insert(key, convert_entry(from, *value), 0)
                .map_err(|e| format!("copying into {name}: {}", error_chain(&e)))?;
        }
        Ok(entries.len())
    } else {
        let entries = batch::entries::<K, EntryV1>(old.fd().as_fd())
            .map_err(|e| format!("reading {name}: {e}"))?;
        let keys: Vec<K> = entries.iter().map(|(k, _)| *k).collect();
        let values: Vec<EntryV4> = entries
            .iter()
            .map(|(_, v)| convert_entry(from, *v))
            .collect();
        for (keys, values) in keys.chunks(1 << 14).zip(values.chunks(1 << 14)) {
            let (done, result) = batch::update(new.fd().as_fd(), keys, values, 0);
            result.map_err(write_err)?;
            if done != keys.len() {
                return Err(format!(
                    "copying into {name}: the kernel took {done} of {} entries",
                    keys.len()
                ));
            }
        }
        Ok(entries.len())
    }
}

/// Copies the per-reason counters (whole program and per interface, per CPU) and the config.
/// Their types did not change in layout 2; a layout that changes them converts here.
fn copy_counters(from_dir: &Path, to_dir: &Path) -> Result<(), String> {
    let open = |dir: &Path, name: &'static str| {
        open_pinned(dir, name)
            .and_then(Map::from_map_data)
            .map_err(|e| format!("opening {name}: {}", error_chain(&e)))
    };
    let err =
        |name: &'static str| move |e: MapError| format!("copying {name}: {}", error_chain(&e));

    let old: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(open(from_dir, names::COUNTERS)?).map_err(err(names::COUNTERS))?;
    let mut new: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(open(to_dir, names::COUNTERS)?).map_err(err(names::COUNTERS))?;
    for slot in 0..names::COUNTER_SLOTS {
        let values = old.get(&slot, 0).map_err(err(names::COUNTERS))?;
        new.set(slot, values, 0).map_err(err(names::COUNTERS))?;
    }

    let name = names::INTERFACE_COUNTERS;
    let old: PerCpuArray<MapData, InterfaceCounters> =
        PerCpuArray::try_from(open(from_dir, name)?).map_err(err(name))?;
    let mut new: PerCpuArray<MapData, InterfaceCounters> =
        PerCpuArray::try_from(open(to_dir, name)?).map_err(err(name))?;
    for slot in 0..names::INTERFACE_SLOTS {
        let values = old.get(&slot, 0).map_err(err(name))?;
        new.set(slot, values, 0).map_err(err(name))?;
    }

    let name = names::CONFIG;
    let old: Array<MapData, Config> = Array::try_from(open(from_dir, name)?).map_err(err(name))?;
    let mut new: Array<MapData, Config> =
        Array::try_from(open(to_dir, name)?).map_err(err(name))?;
    let config = old.get(&0, 0).map_err(err(name))?;
    new.set(0, config, 0).map_err(err(name))
}

/// The map pinned as `name` under `dir`, with a handle of its own.
fn open_pinned(dir: &Path, name: &str) -> Result<MapData, MapError> {
    MapData::from_pin(dir.join(name))
}

fn pin_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Pin {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to)
        .map_err(|e| pin_error(from, &format!("moving to {}", to.display()), e))
}

/// Unpins every map under `maps` (each is freed once no program or process holds it) and
/// removes the directory; nothing to do if it is absent.
fn remove_maps_dir(maps: &Path) -> Result<(), Error> {
    let entries = match std::fs::read_dir(maps) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(pin_error(maps, "listing", e)),
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        std::fs::remove_file(&path).map_err(|e| pin_error(&path, "unpinning", e))?;
    }
    remove_dir(maps)
}

fn remove_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(pin_error(dir, "removing", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every older layout reaches this build's value, hits and last hit intact: a layout-1 value
    /// through both steps, a layout-2 value through the last one.
    #[test]
    fn each_older_layout_converts_to_this_one_with_its_hits() {
        let old = EntryStats {
            hits: 41,
            last_hit_ns: 7_000_000_123,
        };
        for from in 1..LAYOUT {
            assert_eq!(convert_entry(from, old), old, "from layout {from}");
        }
    }
}
