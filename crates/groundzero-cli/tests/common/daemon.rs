//! An in-process daemon for tests: its own socket, state dir and pin dir, stopped and cleaned
//! up (pins removed) on drop. It runs `groundzero_daemon::run`, so it lives here rather than in
//! the lab's harness (which must not depend on the daemon's crate); its config and waiting are
//! the harness's.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use groundzero::pins;
use groundzero_api::client::{Client, ClientError, Endpoint};
use groundzero_daemon as daemon;
use groundzero_daemon::config::Validated;
use groundzero_lab::harness::DaemonConfig;
use hyper::Method;
use serde_json::Value;

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct TestDaemon {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub pin_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    runtime: tokio::runtime::Runtime,
}

/// A new state directory and pin directory, unique to this process and call.
fn fresh_dirs() -> (PathBuf, PathBuf) {
    super::require_root();
    pins::ensure_bpffs().unwrap();
    let id = format!(
        "gz-d{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let dir = std::env::temp_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    (dir, PathBuf::from("/sys/fs/bpf").join(&id))
}

/// The daemon's config: the generated paths plus `extra` TOML (merged in: `extra` may have an
/// `[api]` table of its own). Returns the API socket's path too.
fn config_for(dir: &Path, pin_dir: &Path, extra: &str) -> (PathBuf, Validated) {
    let socket = dir.join("api.sock");
    let text = DaemonConfig::with_paths(pin_dir, &dir.join("state"), &socket)
        .merge_toml(extra)
        .render()
        .unwrap_or_else(|e| panic!("{e}"));
    let config =
        Validated::parse(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (socket, config)
}

impl TestDaemon {
    /// Starts a daemon whose config is the generated paths plus `extra` TOML.
    pub fn start(extra: &str) -> Self {
        let (dir, pin_dir) = fresh_dirs();
        Self::launch(dir, pin_dir, extra, None)
    }

    /// Starts a daemon whose threads live in `ns` (so it attaches to that namespace's links).
    pub fn start_in(ns: &groundzero_lab::netns::Netns, extra: &str) -> Self {
        let (dir, pin_dir) = fresh_dirs();
        Self::launch(
            dir,
            pin_dir,
            extra,
            Some(format!("/run/netns/{}", ns.name())),
        )
    }

    /// Runs a daemon that must fail to start: its error, and whether its API socket existed
    /// at any point while it ran (watched from another thread).
    pub fn start_err(extra: &str) -> (String, bool) {
        let (dir, pin_dir) = fresh_dirs();
        let (socket, config) = config_for(&dir, &pin_dir, extra);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (done, socket) = (done.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut seen = false;
                while !done.load(Ordering::SeqCst) {
                    seen |= socket.exists();
                    std::thread::sleep(Duration::from_micros(200));
                }
                seen | socket.exists()
            })
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let result = rt.block_on(daemon::run(config, std::future::pending()));
        done.store(true, Ordering::SeqCst);
        let seen = watcher.join().unwrap();
        let _ = pins::remove_all(&pin_dir);
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok(()) => panic!("the daemon started, but should have failed"),
            Err(e) => (format!("{e}"), seen),
        }
    }

    /// Starts on existing directories (a restart).
    pub fn start_with(dir: PathBuf, pin_dir: PathBuf, extra: &str) -> Self {
        Self::launch(dir, pin_dir, extra, None)
    }

    fn launch(dir: PathBuf, pin_dir: PathBuf, extra: &str, netns: Option<String>) -> Self {
        let (socket, config) = config_for(&dir, &pin_dir, extra);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Some(path) = netns {
                // Threads inherit the namespace of the thread that creates them, so the runtime's
                // workers and blocking threads all live in `ns`.
                let f = std::fs::File::open(path).unwrap();
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            }
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(daemon::run(config, async {
                let _ = rx.await;
            }))
            .map_err(|e| format!("{e:?}"))
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = TestDaemon {
            dir,
            socket,
            pin_dir,
            stop: Some(tx),
            thread: Some(thread),
            runtime,
        };
        d.wait_healthy();
        d
    }

    fn wait_healthy(&self) {
        let mut up = false;
        super::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
            up = self.call(Method::GET, "/v1/health", None).is_ok();
            up || self.thread.as_ref().is_some_and(|t| t.is_finished())
        });
        assert!(
            up,
            "the daemon did not come up on {}",
            self.socket.display()
        );
    }

    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.runtime
            .block_on(self.client().call(method, path, body.as_ref()))
    }

    pub fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body.clone())
            .unwrap_or_else(|e| panic!("{path} {body:?}: {e}"))
    }

    /// Stops the daemon, keeping its pins and state (for restart tests).
    pub fn stop(mut self) -> (PathBuf, PathBuf) {
        self.shutdown();
        let dirs = (self.dir.clone(), self.pin_dir.clone());
        self.dir = PathBuf::new(); // keep: the caller restarts on them
        dirs
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.shutdown();
        if !self.dir.as_os_str().is_empty() {
            let _ = pins::remove_all(&self.pin_dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Sends raw bytes as an HTTP request on the daemon's socket and returns (status, body).
pub fn raw_request(socket: &Path, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    status_and_body(&out)
}

/// The status code (0 if none) and the body of a raw HTTP/1.1 response.
pub fn status_and_body(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

pub fn post_raw(socket: &Path, path: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: gz\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_request(socket, req.as_bytes())
}
