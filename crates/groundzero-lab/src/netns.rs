//! Throw-away network namespaces and veth pairs: the test hosts of our tests and demo.
//!
//! A [`Netns`] is deleted when dropped (its veth ends go with it), so a failing test or a
//! panicking demo still cleans up. Names carry the process id, so parallel tests do not collide,
//! and [`Netns::remove_stale`] removes what a killed process left behind.

use std::{
    collections::BTreeSet,
    fs::File,
    path::PathBuf,
    process::Command,
    sync::{Mutex, MutexGuard, PoisonError},
};

use nix::sched::{setns, CloneFlags};

/// Every namespace this module makes starts with this.
pub const PREFIX: &str = "gz-";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error(
        "network namespace {name} already exists in this process \
         (tags must be unique among the namespaces alive at one time)"
    )]
    InUse { name: String },
    #[error("could not run `ip` (install iproute2)")]
    Spawn(#[source] std::io::Error),
    #[error("entering network namespace {name} failed")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `ip ARGS...`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(NetnsError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            command: format!("ip {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Names of the namespaces this process holds right now. `create` deletes a same-named leftover
/// first (from a recycled pid); without this check, two tests of one process using the same tag
/// would silently delete each other's namespace mid-test.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<String>> {
    // The set stays consistent even if a holder panicked: every update is a single call.
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A network namespace that exists for as long as this value (unless it was [`Netns::open`]ed
/// or [`Netns::keep`] was called: then it outlives the value).
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Delete the namespace on drop.
    owned: bool,
}

impl Netns {
    /// Creates `gz-<tag>-<pid>`, with loopback up. `tag` should be short (interface names are
    /// derived from it and the kernel allows 15 characters), and unique among the namespaces
    /// this process holds at one time ([`NetnsError::InUse`] otherwise).
    pub fn create(tag: &str) -> Result<Self, NetnsError> {
        let name = format!("{PREFIX}{tag}-{}", std::process::id());
        if !live().insert(name.clone()) {
            return Err(NetnsError::InUse { name });
        }
        let _ = ip(&["netns", "del", &name]); // a leftover from a recycled pid
        if let Err(e) = ip(&["netns", "add", &name]) {
            live().remove(&name);
            return Err(e);
        }
        let ns = Netns { name, owned: true };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a namespace with exactly this `name` (no pid suffix), with loopback up, deleted on
    /// drop unless [`Netns::keep`] is called. For topologies that must outlive the process that
    /// made them (`groundzero lab up`); the caller owns the naming and the stale-cleanup.
    pub fn create_named(name: &str) -> Result<Self, NetnsError> {
        if !live().insert(name.to_string()) {
            return Err(NetnsError::InUse { name: name.into() });
        }
        if let Err(e) = ip(&["netns", "add", name]) {
            live().remove(name);
            return Err(e);
        }
        let ns = Netns {
            name: name.into(),
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace `/run/netns/<name>`; dropping it deletes nothing.
    pub fn open(name: &str) -> Result<Self, NetnsError> {
        let path = format!("/run/netns/{name}");
        std::fs::metadata(&path).map_err(|source| NetnsError::Enter {
            name: name.into(),
            source,
        })?;
        Ok(Netns {
            name: name.into(),
            owned: false,
        })
    }

    /// Lets the namespace outlive this value (dropping it then deletes nothing).
    pub fn keep(mut self) -> Self {
        if self.owned {
            live().remove(&self.name);
            self.owned = false;
        }
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <this> ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Sets a sysctl inside this namespace (e.g. `net.ipv6.conf.all.accept_ra`, `0`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.try_run(|| std::fs::write(&path, value))?
            .map_err(|source| NetnsError::Enter {
                name: format!("{} (sysctl {key})", self.name),
                source,
            })
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it opens and interfaces it
    /// looks up are this namespace's. The calling thread is not moved.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.try_run(f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Netns::run`], but returns an error if the namespace cannot be entered.
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|errno| NetnsError::Enter {
                        name: self.name.clone(),
                        source: errno.into(),
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Deletes namespaces named `gz-*` whose process is gone (left behind by `kill -9`).
    pub fn remove_stale() {
        let Ok(entries) = std::fs::read_dir("/run/netns") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !PathBuf::from(format!("/proc/{pid}")).exists() {
                    let _ = ip(&["netns", "del", &name]);
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: could not delete network namespace {}: {e}",
                self.name
            );
        }
        live().remove(&self.name);
    }
}

/// Joins `a` and `b` with a veth pair: `a_if` in `a`, `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), NetnsError> {
    ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}
