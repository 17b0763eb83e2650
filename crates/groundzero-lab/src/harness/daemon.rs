//! The real `groundzero run` binary as a child process: for what only a process shows (locks
//! held against a second daemon, SIGHUP reloads, `kill -9`, exit codes and stderr) and for the
//! demo, which runs the daemon as an operator would.
use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::atomic::AtomicBool,
    time::Duration,
};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    http::{self, Response},
    HarnessError, Launch, Supervised,
};

/// How long a daemon may take to answer `/v1/health` (a loaded 2-core machine, a debug build).
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// A `groundzero run` child and its API socket. Stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct ChildDaemon {
    process: Supervised,
    socket: PathBuf,
}

impl ChildDaemon {
    /// The command `<binary> run --config <config>` with `RUST_LOG=info` and its output in
    /// `log`; adjust it (a namespace, an appended log, a wrapper) before [`ChildDaemon::spawn`].
    pub fn command(binary: impl AsRef<OsStr>, config: &Path, log: &Path) -> Launch {
        Launch::new("the daemon", binary)
            .args([
                OsStr::new("run"),
                OsStr::new("--config"),
                config.as_os_str(),
            ])
            .env("RUST_LOG", "info")
            .log_to(log)
    }

    /// Starts `launch` and returns at once; `socket` is the API socket its config names.
    pub fn spawn(launch: &Launch, socket: &Path) -> Result<Self, HarnessError> {
        Ok(ChildDaemon {
            process: launch.spawn()?,
            socket: socket.to_path_buf(),
        })
    }

    /// [`ChildDaemon::spawn`], then waits until it answers `/v1/health` (up to
    /// [`START_LIMIT`]).
    pub fn start(launch: &Launch, socket: &Path) -> Result<Self, HarnessError> {
        let mut d = Self::spawn(launch, socket)?;
        d.wait_healthy(START_LIMIT, None)?;
        Ok(d)
    }

    /// Waits until it answers `/v1/health`: an error if it exits first, `limit` passes or
    /// `abort` is set.
    pub fn wait_healthy(
        &mut self,
        limit: Duration,
        abort: Option<&AtomicBool>,
    ) -> Result<(), HarnessError> {
        let socket = self.socket.clone();
        self.process
            .wait_ready(limit, abort, || healthy_on(&socket))
    }

    /// Gives the daemon up: it runs on after this value is gone ([`Supervised::detach`]).
    pub fn detach(self) -> u32 {
        self.process.detach()
    }

    /// Its API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The process.
    pub fn process(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// Its process id (the daemon's own: it entered its namespace itself).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it answers `/v1/health` with 200.
    pub fn healthy(&self) -> bool {
        healthy_on(&self.socket)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// Waits up to `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(limit)
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        self.process.signal(signal)
    }

    /// Sends `signal` and waits (up to 30 s) for the exit.
    pub fn stop_with(&mut self, signal: Signal) -> Result<ExitStatus, HarnessError> {
        self.process.stop_with(signal, START_LIMIT)
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Its log file, if output is captured.
    pub fn log(&self) -> Option<&Path> {
        self.process.log()
    }

    /// A JSON request on its socket (`Connection: close`); None when nothing answers.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Option<Response> {
        http::request(&self.socket, method, path, body)
    }
}

fn healthy_on(socket: &Path) -> bool {
    http::request(socket, "GET", "/v1/health", None).is_some_and(|r| r.status == 200)
}
