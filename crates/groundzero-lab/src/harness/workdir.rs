//! A temporary directory of one test or demo run, and the bpffs pin directories handed out
//! beside it: all removed on drop (panic included).
use std::path::{Path, PathBuf};

use groundzero::pins;

use super::{io, HarnessError};
use crate::topology::process_alive;

/// Where bpffs is mounted.
const BPFFS: &str = "/sys/fs/bpf";

/// `<tmp>/<prefix>-<pid>` and its pin directories. Drop it after the processes that use it.
#[derive(Debug)]
pub struct Workdir {
    dir: PathBuf,
    name: String,
    pin_dirs: Vec<PathBuf>,
}

impl Workdir {
    /// Creates `<tmp>/<prefix>-<pid>` (empty: a leftover of a recycled pid is removed), after
    /// removing `<prefix>-<pid>` directories of processes that are gone (a killed run could not
    /// remove its own). Mounts bpffs if needed, for [`Workdir::pin_dir`].
    pub fn create(prefix: &str) -> Result<Self, HarnessError> {
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !process_alive(p)) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let name = format!("{prefix}-{}", std::process::id());
        let dir = tmp.join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Workdir {
            dir,
            name,
            pin_dirs: Vec::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A pin directory `/sys/fs/bpf/<prefix>-<pid>-<name>` (emptied, not created), removed on
    /// drop. bpffs is mounted if it is not.
    pub fn pin_dir(&mut self, name: &str) -> Result<PathBuf, HarnessError> {
        pins::ensure_bpffs().map_err(|e| HarnessError::Bpffs(Box::new(e)))?;
        let p = Path::new(BPFFS).join(format!("{}-{name}", self.name));
        let _ = pins::remove_all(&p);
        self.pin_dirs.push(p.clone());
        Ok(p)
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        for p in &self.pin_dirs {
            let _ = pins::remove_all(p);
            let _ = std::fs::remove_dir(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
