//! Child processes of the demo and the tests: started in a network namespace with their output
//! captured in a log file, and stopped (SIGTERM, then SIGKILL) when dropped.
use std::{
    ffi::{OsStr, OsString},
    fs::{File, OpenOptions},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::{io, wait_for, HarnessError};

/// How long a dropped process has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How many of the last log lines an error shows.
const ERROR_LOG_LINES: usize = 60;

/// How to start a child process: a builder for [`Launch::spawn`].
#[derive(Clone, Debug)]
pub struct Launch {
    what: String,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    netns: Option<String>,
    log: Option<(PathBuf, bool)>,
    own_group: bool,
    die_with_parent: bool,
}

impl Launch {
    /// `program`, called `what` in errors ("the daemon", "the validator node").
    pub fn new(what: &str, program: impl AsRef<OsStr>) -> Self {
        Launch {
            what: what.into(),
            program: program.as_ref().into(),
            args: Vec::new(),
            env: Vec::new(),
            netns: None,
            log: None,
            own_group: false,
            die_with_parent: false,
        }
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().into());
        self
    }

    /// More arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable for the child (the rest is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().into(), value.as_ref().into()));
        self
    }

    /// Runs the child in the network namespace `/run/netns/<name>`. Only the network namespace
    /// changes (as with `nsenter --net`, not `ip netns exec`, which also gives a private /sys):
    /// the child sees the host's bpffs, so its pins outlive it and the caller can read them.
    /// The child itself enters the namespace, so its pid is the program's own.
    pub fn in_netns(mut self, name: &str) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Stdout and stderr to `path`, which is truncated first.
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some((path.to_path_buf(), false));
        self
    }

    /// Stdout and stderr appended to `path` (a restarted child adds to its predecessor's log).
    pub fn append_log_to(mut self, path: &Path) -> Self {
        self.log = Some((path.to_path_buf(), true));
        self
    }

    /// A process group of its own: a Ctrl-C in the terminal reaches only the caller, which can
    /// then stop its children in order instead of seeing them vanish.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// SIGTERM to the child when the thread that spawned it ends (PR_SET_PDEATHSIG): for the
    /// main thread of a program, so that a killed caller leaves no children behind.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// The log file, if output is captured.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_ref().map(|(p, _)| p.as_path())
    }

    /// Starts the child and returns at once.
    pub fn spawn(&self) -> Result<Supervised, HarnessError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some((path, append)) = &self.log {
            let out = OpenOptions::new()
                .create(true)
                .write(true)
                .append(*append)
                .truncate(!*append)
                .open(path)
                .map_err(io(format!("opening the log {}", path.display())))?;
            let err = out
                .try_clone()
                .map_err(io(format!("opening the log {}", path.display())))?;
            cmd.stdout(out).stderr(err);
        }
        if self.own_group {
            cmd.process_group(0);
        }
        // Opened here, entered in the child; closed on exec (O_CLOEXEC) and after the spawn.
        let netns = match &self.netns {
            Some(name) => {
                let path = format!("/run/netns/{name}");
                Some(
                    File::open(&path)
                        .map_err(io(format!("opening the network namespace {path}")))?,
                )
            }
            None => None,
        };
        let netns_fd = netns.as_ref().map(|f| f.as_raw_fd());
        let die_with_parent = self.die_with_parent;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        if netns_fd.is_some() || die_with_parent {
            // SAFETY: between fork and exec only async-signal-safe syscalls run (setns, prctl),
            // touching no memory of ours; `netns` stays open until the spawn has returned.
            unsafe {
                cmd.pre_exec(move || {
                    if let Some(fd) = netns_fd {
                        if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if die_with_parent {
                        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                        // The parent may have died before the prctl: then no signal will come.
                        if libc::getppid() != parent {
                            libc::_exit(1);
                        }
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            program: format!("{} ({})", self.what, Path::new(&self.program).display()),
            source,
        })?;
        drop(netns);
        Ok(Supervised {
            what: self.what.clone(),
            child,
            log: self.log.as_ref().map(|(p, _)| p.clone()),
        })
    }
}

/// A running child: stopped (SIGTERM, then SIGKILL after 5 s) when dropped, unless it has
/// already exited.
#[derive(Debug)]
pub struct Supervised {
    what: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Supervised {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it is called in errors.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Its log file, if output is captured.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Everything it logged so far (empty when output is not captured or not readable).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The last `n` lines of its log: what an error shows (a restarted child's log holds its
    /// predecessors' too).
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Gives the process up: it runs on after this value is gone (stopped by whoever holds its
    /// pid, as `groundzero lab down` stops what runs in the lab). Returns the pid.
    pub fn detach(self) -> u32 {
        let pid = self.pid();
        // Not dropped, so not stopped; the `Child` owns no pipes here (stdin is null, output
        // goes to a file), so nothing but a few bytes is left behind.
        std::mem::forget(self);
        pid
    }

    /// Its exit status, if it has exited (reaped here).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(limit, Duration::from_millis(20), || {
            status = self.exited();
            status.is_some()
        });
        status
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = self.pid();
        kill(Pid::from_raw(pid as i32), signal).map_err(|source| HarnessError::Signal {
            what: self.what.clone(),
            pid,
            signal,
            source,
        })
    }

    /// Sends `signal` and waits up to `limit` for the exit.
    pub fn stop_with(
        &mut self,
        signal: Signal,
        limit: Duration,
    ) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.exited() {
            return Ok(status);
        }
        self.signal(signal)?;
        self.wait_exit(limit)
            .ok_or_else(|| HarnessError::StillRunning {
                what: self.what.clone(),
                pid: self.pid(),
                signal,
                seconds: limit.as_secs(),
            })
    }

    /// Polls `ready` until it says yes (Ok), the process exits, `limit` passes or `abort` is
    /// set (errors carrying the log).
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        abort: Option<&AtomicBool>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), HarnessError> {
        let mut failure = None;
        let ok = wait_for(limit, Duration::from_millis(20), || {
            if ready() {
                return true;
            }
            if abort.is_some_and(|a| a.load(Ordering::SeqCst)) {
                failure = Some(HarnessError::Interrupted {
                    what: self.what.clone(),
                });
            } else if let Some(status) = self.exited() {
                failure = Some(HarnessError::Exited {
                    what: self.what.clone(),
                    status,
                    path: self.log.clone().unwrap_or_default(),
                    log: self.log_tail(ERROR_LOG_LINES),
                });
            }
            failure.is_some()
        });
        match failure {
            Some(e) => Err(e),
            None if ok => Ok(()),
            None => Err(HarnessError::NotReady {
                what: self.what.clone(),
                seconds: limit.as_secs(),
                path: self.log.clone().unwrap_or_default(),
                log: self.log_tail(ERROR_LOG_LINES),
            }),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.stop_with(Signal::SIGTERM, STOP_GRACE).is_err() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("gz-harness-{tag}-{}.log", std::process::id()))
    }

    #[test]
    fn a_child_is_waited_for_through_its_log_and_stopped_by_signal() {
        let log = log_path("ready");
        let mut p = Launch::new("a shell", "sh")
            .args(["-c", "echo $GZ_WORD; exec sleep 30"])
            .env("GZ_WORD", "ready")
            .log_to(&log)
            .spawn()
            .unwrap();
        p.wait_ready(Duration::from_secs(10), None, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready"))
        })
        .unwrap();
        assert_eq!(p.log_tail(1), "ready");
        let status = p
            .stop_with(Signal::SIGTERM, Duration::from_secs(10))
            .unwrap();
        assert!(!status.success(), "{status}");
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn a_child_that_exits_before_it_is_ready_is_an_error_with_its_log() {
        let log = log_path("exit");
        let mut p = Launch::new("a shell", "sh")
            .args(["-c", "echo broken config; exit 3"])
            .log_to(&log)
            .spawn()
            .unwrap();
        let err = p
            .wait_ready(Duration::from_secs(10), None, || false)
            .unwrap_err();
        assert!(
            matches!(&err, HarnessError::Exited { status, log, .. }
                if status.code() == Some(3) && log.contains("broken config")),
            "{err}"
        );
        let abort = AtomicBool::new(true);
        let mut q = Launch::new("a shell", "sleep").arg("30").spawn().unwrap();
        assert!(matches!(
            q.wait_ready(Duration::from_secs(10), Some(&abort), || false),
            Err(HarnessError::Interrupted { .. })
        ));
        let _ = std::fs::remove_file(&log);
    }
}
