//! The harness the demo and the system tests share: start `groundzero run` (and the example
//! validator node) as supervised child processes in a namespace, write their configs, wait for
//! them, talk to their API socket, read the kernel maps they pinned, and forward a port into the
//! node's namespace.
//!
//! - [`wait`]: [`wait_for`], the one polling loop, and [`recv_expected`] for UDP receivers;
//! - [`process`]: [`Launch`] a child (in a network namespace, with its log captured) and keep
//!   it as a [`Supervised`] process, stopped when dropped;
//! - [`config`]: [`DaemonConfig`], a daemon config built as a TOML table;
//! - [`daemon`]: [`ChildDaemon`], the `groundzero` binary as a child process (the binary's path
//!   is a parameter: only the CLI crate's tests and the binary itself know it);
//! - [`workdir`]: [`Workdir`], a temporary directory and bpffs pin directories removed on drop;
//! - [`http`]: a blocking raw HTTP/1.1 exchange on the API socket, showing bad answers as
//!   they are;
//! - [`entries`]: what a daemon holds, read from its API and from its pinned kernel maps;
//! - [`forward`]: [`Forward`], a loopback port forwarded into a namespace;
//! - [`node`]: the example validator node as a child process.
//!
//! The in-process daemon of the tests (which runs `groundzero_daemon::run`) is not here: this
//! crate does not depend on the daemon's crate (the example node depends on this one).

pub mod config;
pub mod daemon;
pub mod entries;
pub mod forward;
pub mod http;
pub mod node;
pub mod process;
pub mod wait;
pub mod workdir;

use std::{path::PathBuf, process::ExitStatus};

pub use config::{ConfigError, DaemonConfig};
pub use daemon::ChildDaemon;
pub use entries::PinnedMaps;
pub use forward::Forward;
pub use process::{Launch, Supervised};
pub use wait::{recv_expected, wait_for};
pub use workdir::Workdir;

use crate::netns::NetnsError;

/// What went wrong while setting up or driving a lab process.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what} exited ({status}) before it was ready; the end of its log ({}):\n{log}", path.display())]
    Exited {
        what: String,
        status: ExitStatus,
        path: PathBuf,
        log: String,
    },
    #[error("{what} was not ready within {seconds} s; the end of its log ({}):\n{log}", path.display())]
    NotReady {
        what: String,
        seconds: u64,
        path: PathBuf,
        log: String,
    },
    #[error("interrupted while waiting for {what}")]
    Interrupted { what: String },
    #[error("{what} (pid {pid}) still runs {seconds} s after {signal}")]
    StillRunning {
        what: String,
        pid: u32,
        signal: nix::sys::signal::Signal,
        seconds: u64,
    },
    #[error("sending {signal} to {what} (pid {pid})")]
    Signal {
        what: String,
        pid: u32,
        signal: nix::sys::signal::Signal,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("mounting bpffs at /sys/fs/bpf")]
    Bpffs(#[source] Box<groundzero::Error>),
    #[error("opening the pinned maps in {}", pin_dir.display())]
    PinnedMaps {
        pin_dir: PathBuf,
        #[source]
        source: Box<groundzero::Error>,
    },
    #[error("reading or changing the pinned maps")]
    ReadMaps(#[source] Box<groundzero::Error>),
}

/// An `io::Error` mapper naming what was being done.
fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}

/// Fails loudly, rather than skipping, when not root: the system tests need CAP_BPF and
/// CAP_NET_ADMIN, and CI runs them as root. A skipped kernel test would be a green lie.
///
/// # Panics
/// When the effective user is not root: it is meant for tests.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads an XDP program and makes network namespaces: it needs root \
         (CI runs it as root; locally: sudo -E cargo test)"
    );
}
