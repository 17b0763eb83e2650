//! Pinning maps and XDP links in bpffs, so filtering outlives the process that set it up.
//!
//! Layout under the pin directory (default `/sys/fs/bpf/groundzero`):
//! - `maps/<map name>`: every map (lists, counters, config), reused by the next load;
//! - `links/<native|generic>/<interface>`: the XDP link of each interface; the directory records
//!   the mode the kernel gave, so a process that adopts the link can report it truthfully;
//! - `layout`: the map-layout stamp (see [`super::layout`]); `next/` and `retired/` exist only
//!   while a migration to a new layout runs (see `migrate`).
//!
//! bpffs refuses names with a dot (reserved for the kernel: EPERM), and interface names may
//! have one (`eth0.100`), so a `.` in an interface name is stored as `:`, which interface names
//! can never contain.

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::programs::{
    links::{FdLink, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
    Xdp,
};

use super::{mode::ActiveMode, sys};
use crate::error::{error_chain, Error};

/// The process, other than this one, that holds a `flock` on `dir` (a daemon holds one on its
/// pin directory for as long as it runs), from /proc/locks (`N: FLOCK ADVISORY WRITE PID
/// MAJ:MIN:INODE START END`). Loaders that do not hold the pins leave them as they are.
pub fn other_holder(dir: &Path) -> Option<u32> {
    flock_holder(dir).filter(|&pid| pid != std::process::id())
}

/// The process holding a `flock` on `path` (any process, this one included).
pub fn flock_holder(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(path).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, id) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let lock_inode: u64 = id.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && lock_inode == inode)
            .then(|| pid.parse().ok())
            .flatten()
    })
}

/// The conventional pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/groundzero";

/// Mounts bpffs at /sys/fs/bpf if nothing is mounted there (this kernel does not by default).
pub fn ensure_bpffs() -> Result<(), Error> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
        })
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        "/sys/fs/bpf",
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| Error::Pin {
        path: "/sys/fs/bpf".into(),
        message: format!("mounting bpffs: {e}"),
    })?;
    // `ip netns exec` gives its command a private mount namespace with a fresh /sys: a bpffs
    // mounted there dies with the process, and so would every pin. Say so loudly.
    log::warn!(
        "mounted bpffs at /sys/fs/bpf. If this process runs in a private mount namespace (for \
         example under `ip netns exec`), pins will not outlive it: use `nsenter --net=/run/netns/NAME`"
    );
    Ok(())
}

pub(crate) fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Pin {
        path: dir.to_path_buf(),
        message: format!("{e} (is bpffs mounted at /sys/fs/bpf? `mount -t bpf bpf /sys/fs/bpf`)"),
    })
}

pub(crate) fn link_path(dir: &Path, interface: &str, mode: ActiveMode) -> PathBuf {
    dir.join("links")
        .join(mode.to_string())
        .join(interface.replace('.', ":"))
}

/// The pinned link of `interface`, if any, with the mode it was made in.
pub(crate) fn find_link(dir: &Path, interface: &str) -> Option<(PathBuf, ActiveMode)> {
    [ActiveMode::Native, ActiveMode::Generic]
        .into_iter()
        .map(|mode| (link_path(dir, interface, mode), mode))
        .find(|(path, _)| path.exists())
}

/// Interfaces with a pinned link under `dir`.
pub fn pinned_interfaces(dir: &Path) -> Vec<(String, ActiveMode)> {
    let mut out = Vec::new();
    for mode in [ActiveMode::Native, ActiveMode::Generic] {
        let Ok(entries) = std::fs::read_dir(dir.join("links").join(mode.to_string())) else {
            continue;
        };
        for entry in entries.flatten() {
            out.push((entry.file_name().to_string_lossy().replace(':', "."), mode));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(crate) fn pin_link(program: &mut Xdp, id: XdpLinkId, path: &Path) -> Result<PinnedLink, Error> {
    if let Some(parent) = path.parent() {
        ensure_dir(parent)?;
    }
    let pin_err = |message: String| Error::Pin {
        path: path.to_path_buf(),
        message,
    };
    let link = program
        .take_link(id)
        .map_err(|e| pin_err(format!("taking the link to pin it: {}", error_chain(&e))))?;
    let fd_link = FdLink::try_from(link).map_err(|e| {
        pin_err(format!(
            "this kernel attached XDP without a bpf_link, which cannot be pinned: {e}"
        ))
    })?;
    fd_link.pin(path).map_err(|e| pin_err(error_chain(&e)))
}

/// Swaps `program` into the pinned link at `path`. `Ok(None)` if the link is defunct (its
/// interface is gone), so the caller can attach anew.
pub(crate) fn adopt_link(program: &mut Xdp, path: &Path) -> Result<Option<XdpLinkId>, Error> {
    let pin_err = |message: String| Error::Pin {
        path: path.to_path_buf(),
        message,
    };
    let pinned = PinnedLink::from_pin(path).map_err(|e| pin_err(error_chain(&e)))?;
    let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(e.to_string()))?;
    match program.attach_to_link(link) {
        Ok(id) => Ok(Some(id)),
        Err(aya::programs::ProgramError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOLINK) =>
        {
            Ok(None)
        }
        Err(e) => Err(pin_err(format!(
            "replacing the program in the pinned link: {}",
            error_chain(&e)
        ))),
    }
}

/// Detaches `interface`'s pinned link from its interface and unpins it.
pub fn unpin_link(dir: &Path, interface: &str) -> Result<(), Error> {
    if let Some((path, _)) = find_link(dir, interface) {
        detach_and_unpin(&path)?;
    }
    Ok(())
}

/// Removes every pin under `dir`: each link is detached from its interface first (so XDP is
/// off every interface when this returns), then the maps are unpinned, which frees them once
/// no process holds them. Returns what was removed.
pub fn remove_all(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for (sub, links) in [
        ("links/native", true),
        ("links/generic", true),
        ("maps", false),
        // An interrupted migration's maps.
        ("next/maps", false),
        ("retired/maps", false),
    ] {
        let sub_dir = dir.join(sub);
        let Ok(entries) = std::fs::read_dir(&sub_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if links {
                detach_and_unpin(&path)?;
            } else {
                remove_pin(&path)?;
            }
            removed.push(path);
        }
        let _ = std::fs::remove_dir(&sub_dir);
    }
    for stamp in ["next/layout", "layout-new", "layout"] {
        let path = dir.join(stamp);
        if std::fs::symlink_metadata(&path).is_ok() {
            remove_pin(&path)?;
            removed.push(path);
        }
    }
    for sub in ["links", "next", "retired"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    let _ = std::fs::remove_dir(dir);
    Ok(removed)
}

fn remove_pin(path: &Path) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|e| Error::Pin {
        path: path.to_path_buf(),
        message: format!("unpinning: {e}"),
    })
}

/// Unpinning alone does not detach at once: the kernel drops bpffs's reference to the link
/// after an RCU grace period and frees the link from a workqueue, so for a while after
/// `unlink()` the program still runs on the interface (a test that sent traffic right away
/// saw it dropped). BPF_LINK_DETACH detaches synchronously, under RTNL, before we unpin.
fn detach_and_unpin(path: &Path) -> Result<(), Error> {
    let pin_err = |message: String| Error::Pin {
        path: path.to_path_buf(),
        message,
    };
    match sys::obj_get(path) {
        Ok(link) => match sys::link_detach(link.as_fd()) {
            // ENOLINK: the link is defunct (its interface is gone); nothing left to detach.
            // EINVAL: the pin is not a link (someone put a map or program there).
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOLINK | libc::EINVAL)) => {}
            Err(e) => return Err(pin_err(format!("detaching the link: {e}"))),
        },
        Err(e) => return Err(pin_err(format!("opening the pin: {e}"))),
    }
    remove_pin(path)
}
