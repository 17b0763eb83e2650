//! One daemon per pin directory and per state directory.
//!
//! A second daemon on the same pins would swap its own program into the first one's links,
//! detach interfaces the first protects, and rewrite its journal and feed caches. Each daemon
//! therefore holds an exclusive `flock` on its pin directory (bpffs holds only pinned objects,
//! but a directory can be locked) and on a `lock` file in its state directory, for as long as
//! it runs; the kernel releases both when the process dies, even by `kill -9`, so a crash never
//! leaves a stale lock behind.

use std::{
    fs::File,
    io::Write,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use super::config::Validated;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{path} is in use by another groundzero daemon{}; stop it first, or give this one its own \
         pin_dir and state_dir (nothing of the running daemon was touched)",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Held { path: PathBuf, pid: Option<u32> },
    #[error("locking {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held locks; dropping them releases both.
pub struct Locks {
    _held: Vec<Flock<File>>,
}

/// Locks the state directory, then the pin directory (creating both, and mounting bpffs if
/// needed), or says which process holds them.
pub fn acquire_all(config: &Validated) -> Result<Locks, LockError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LockError::Io { path, source }
    };
    let state = &config.raw.state_dir;
    std::fs::create_dir_all(state).map_err(io(state))?;
    let lock_file = state.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_file)
        .map_err(io(&lock_file))?;
    let mut state_lock = lock(file, &lock_file)?;
    // For people reading the directory; the lock itself is what counts.
    let _ = state_lock.set_len(0);
    let _ = writeln!(&mut *state_lock, "{}", std::process::id());

    groundzero::pins::ensure_bpffs().map_err(|e| LockError::Io {
        path: config.raw.pin_dir.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let pins = &config.raw.pin_dir;
    std::fs::create_dir_all(pins).map_err(io(pins))?;
    let dir = File::open(pins).map_err(io(pins))?;
    let pin_lock = lock(dir, pins)?;
    Ok(Locks {
        _held: vec![state_lock, pin_lock],
    })
}

fn lock(file: File, path: &Path) -> Result<Flock<File>, LockError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held {
            path: path.to_path_buf(),
            pid: groundzero::pins::flock_holder(path),
        }),
        Err((_, e)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("gz-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = lock(File::open(&dir).unwrap(), &dir).unwrap();
        let err = lock(File::open(&dir).unwrap(), &dir).err().unwrap();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        assert!(
            err.to_string().contains("another groundzero daemon"),
            "{err}"
        );
        drop(first);
        assert!(lock(File::open(&dir).unwrap(), &dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
