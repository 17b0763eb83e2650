//! The map-layout version stamp of a pin directory, and what a load does with each version.
//!
//! A build's maps (their names, key and value types, sizes) are its *layout*. Pins made by one
//! build are adopted by the next only if both agree on it, so the pin directory carries a stamp:
//! `<pin_dir>/layout`, a symbolic link whose target is the version number (`layout -> 2`).
//! bpffs refuses regular files (EPERM on create) but takes symbolic links, so the stamp lives in
//! the same filesystem as the pins and dies with them; `readlink` shows it, and a rename replaces
//! it atomically.
//!
//! - Layout 1: pins without a stamp (every build up to commit e477daf).
//! - Layout 2: the stamp, plus whatever maps were added since (they are created fresh when a
//!   layout-1 directory is migrated).
//! - Layout 3: the program counts each packet once, in its interface's slot of
//!   `iface_counters`, and no longer writes the program-wide `counters` map (user space sums the
//!   interface slots). A layout-2 build adopting these pins would read totals that never move,
//!   so the version changes although no map's type did; the list values are unchanged.
//! - Layout 4: exact summaries (`block_sum_v4`, `block_sum_v6`) in front of the
//!   exact hashes; the program skips the lookup where their count is zero. A layout-3 build
//!   adopting these pins would add exact entries without counting them, and this build would
//!   then skip them: hence a new version, although no existing map changed.
//! - Layout 5: the program reads a bitmap beside every summary (`allow_bits_*`,
//!   `block_net_bits_*`, `block_bits_*`: a bit per key, set while its count is not zero)
//!   instead of the counts, which stay as user space's bookkeeping. A layout-4 build adopting
//!   these pins would count new entries without setting their bits, and this build would then
//!   skip them.
//! - Layout 6 ([`LAYOUT`]): the exact slot tables (`block_slots_v4`, `block_slots_v6`), an
//!   index of the exact hashes that the program reads without a helper call, and that holds
//!   the hits of the entries it indexes. A layout-5 build adopting these pins would add exact
//!   entries without slots and count their hits in the hash only; this build would not see
//!   those entries where the probe meets an empty slot.
//!
//! [`prepare`] runs before a pinned load: it finishes or discards an interrupted migration,
//! refuses a layout newer than this build's, and migrates an older one (`migrate`).

use std::path::{Path, PathBuf};

use super::{migrate, object::ShieldOptions, pins};
use crate::error::Error;

/// The map layout this build makes and adopts.
pub const LAYOUT: u32 = 6;

/// The layout of unstamped pins: everything before the stamp existed.
pub const UNSTAMPED_LAYOUT: u32 = 1;

/// The stamp's name, in the pin directory (and in the staging directory of a migration).
const STAMP: &str = "layout";

/// The stamp of `dir`.
pub(crate) fn stamp_path(dir: &Path) -> PathBuf {
    dir.join(STAMP)
}

/// The layout of the pins under `dir`: `None` if there are none (a fresh directory), 1 for pins
/// without a stamp, else what the stamp says.
pub fn read(dir: &Path) -> Result<Option<u32>, Error> {
    match read_stamp(&stamp_path(dir))? {
        Some(version) => Ok(Some(version)),
        None if has_pins(dir) => Ok(Some(UNSTAMPED_LAYOUT)),
        None => Ok(None),
    }
}

/// The version a stamp holds, `None` if there is no stamp at `path`.
pub(crate) fn read_stamp(path: &Path) -> Result<Option<u32>, Error> {
    let target = match std::fs::read_link(path) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Pin {
                path: path.to_path_buf(),
                message: format!("reading the layout stamp: {e}"),
            })
        }
    };
    let text = target.to_string_lossy();
    text.trim().parse().map(Some).map_err(|_| Error::Pin {
        path: path.to_path_buf(),
        message: format!(
            "the layout stamp says `{text}`, not a version number; remove the pins with \
                 `groundzero cleanup`"
        ),
    })
}

/// Stamps `dir` with `version`, replacing any stamp atomically (a new link, then a rename).
pub fn write(dir: &Path, version: u32) -> Result<(), Error> {
    let path = stamp_path(dir);
    let fresh = dir.join("layout-new");
    let err = |message: String| Error::Pin {
        path: path.clone(),
        message,
    };
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(version.to_string(), &fresh)
        .map_err(|e| err(format!("writing the layout stamp: {e}")))?;
    std::fs::rename(&fresh, &path).map_err(|e| err(format!("writing the layout stamp: {e}")))
}

/// True if `dir` holds pinned maps or links (bpffs cannot hold anything else but directories
/// and stamps).
fn has_pins(dir: &Path) -> bool {
    let non_empty = |d: PathBuf| {
        std::fs::read_dir(d)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    };
    non_empty(dir.join("maps")) || !pins::pinned_interfaces(dir).is_empty()
}

/// Gets `dir` ready for this build to adopt: an interrupted migration is finished or discarded,
/// a newer layout is refused, an older one migrated. Returns whether `dir` must be stamped once
/// the load has pinned its maps (it had no pins).
pub(crate) fn prepare(dir: &Path, options: &ShieldOptions) -> Result<bool, Error> {
    if let Some(pid) = pins::other_holder(dir) {
        // Another process (a daemon) owns these pins, and may be migrating them right now: a
        // second loader (an application's fallback, a tool) adopts what is current and changes
        // nothing, never finishes, discards or starts a migration under it.
        let busy = |what| Error::PinsBusy {
            dir: dir.to_path_buf(),
            pid,
            what,
        };
        if migrate::in_progress(dir) {
            return Err(busy("an interrupted map-layout migration finished"));
        }
        return match read(dir)? {
            Some(LAYOUT) => Ok(false),
            Some(found) if found > LAYOUT => Err(Error::NewerLayout {
                dir: dir.to_path_buf(),
                found,
                supported: LAYOUT,
            }),
            None if !has_pins(dir) => Ok(false),
            _ => Err(busy("a map-layout migration")),
        };
    }
    migrate::recover(dir)?;
    match read(dir)? {
        None => Ok(true),
        Some(LAYOUT) => Ok(false),
        Some(found) if found > LAYOUT => Err(Error::NewerLayout {
            dir: dir.to_path_buf(),
            found,
            supported: LAYOUT,
        }),
        Some(found) => {
            migrate::migrate(dir, found, options)?;
            Ok(false)
        }
    }
}
