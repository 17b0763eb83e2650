//! The real `groundzero run` binary as a child process (optionally inside a network
//! namespace), with its own directories, for tests of what only a process shows: locks held
//! against a second daemon, SIGHUP reloads, exit codes and stderr. The lab harness's
//! [`harness::ChildDaemon`] with this crate's binary, panicking with the log on failure.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use groundzero_lab::{
    harness::{self, DaemonConfig, Launch},
    netns::Netns,
};
use serde_json::Value;

use super::state::Response;

/// The binary under test.
pub const GROUNDZERO: &str = env!("CARGO_BIN_EXE_groundzero");

/// A temporary directory and the bpffs pin directories handed out beside it, all removed on
/// drop (panic included). Drop it after the daemons that use it.
pub struct Workdir(harness::Workdir);

impl Workdir {
    pub fn new(tag: &str) -> Self {
        super::require_root();
        Workdir(
            harness::Workdir::create(&format!("gz-proc-{tag}"))
                .unwrap_or_else(|e| panic!("the test's directory: {e}")),
        )
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    /// A pin directory of this test (not created), removed on drop.
    pub fn pin_dir(&mut self, name: &str) -> PathBuf {
        self.0
            .pin_dir(name)
            .unwrap_or_else(|e| panic!("a pin directory: {e}"))
    }
}

/// A daemon config: `interfaces`, the three paths, then `extra` (TOML merged in).
pub fn config_text(
    interfaces: &[&str],
    pin_dir: &Path,
    state_dir: &Path,
    socket: &Path,
    extra: &str,
) -> String {
    DaemonConfig::with_paths(pin_dir, state_dir, socket)
        .interfaces(interfaces)
        .merge_toml(extra)
        .render()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `groundzero run --config <config>` logging to `log`, in `ns` if given.
pub fn command(config: &Path, log: &Path, ns: Option<&Netns>) -> Launch {
    let launch = harness::ChildDaemon::command(GROUNDZERO, config, log);
    match ns {
        Some(ns) => launch.in_netns(ns.name()),
        None => launch,
    }
}

/// A `groundzero run --config FILE` child. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct ChildDaemon(harness::ChildDaemon);

impl ChildDaemon {
    /// Starts the binary with `config`, its output (the log) to `log`, inside `ns` if given,
    /// and returns at once.
    pub fn spawn(config: &Path, socket: &Path, log: &Path, ns: Option<&Netns>) -> Self {
        ChildDaemon(
            harness::ChildDaemon::spawn(&command(config, log, ns), socket)
                .unwrap_or_else(|e| panic!("{e}: {e:?}")),
        )
    }

    /// [`ChildDaemon::spawn`], then waits (up to 30 s) until it answers `/v1/health`.
    pub fn start(config: &Path, socket: &Path, log: &Path, ns: Option<&Netns>) -> Self {
        ChildDaemon(
            harness::ChildDaemon::start(&command(config, log, ns), socket)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        self.0.signal(signal).expect("signalling the daemon");
    }

    /// A JSON request on its socket; panics when nothing answers.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.0.request(method, path, body).unwrap_or_else(|| {
            panic!(
                "{method} {path}: no answer on {}; log:\n{}",
                self.socket().display(),
                self.log_text()
            )
        })
    }

    /// `packets` of the interface counter `label` (`blocked_exact`, ...) from `/v1/stats`.
    pub fn interface_counter(&self, interface: &str, label: &str) -> u64 {
        let stats = self.request("GET", "/v1/stats", None).json().unwrap();
        stats["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["interface"] == interface))
            .and_then(|i| i["counters"][label]["packets"].as_u64())
            .unwrap_or_else(|| panic!("no {label} counter for {interface} in {stats}"))
    }
}

impl Deref for ChildDaemon {
    type Target = harness::ChildDaemon;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for ChildDaemon {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// The id of the XDP program on `dev` in `ns` (`xdp/id:N`, `xdpgeneric/id:N`, ... in
/// `ip link show`), or None when none is attached.
pub fn xdp_prog_id(ns: &Netns, dev: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "link", "show", "dev", dev])
        .output()
        .expect("running ip");
    assert!(out.status.success(), "ip link show {dev} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    words.windows(3).find_map(|w| {
        (w[0].starts_with("prog/xdp") && w[1] == "id")
            .then(|| w[2].parse().ok())
            .flatten()
    })
}

/// The IPv4 rate-limit exemptions the XDP program `prog_id` reads, found through the program's
/// own map ids: the exempt maps are not pinned, so opening the pin dir would not show them.
pub fn rate_exempt_v4_of(prog_id: u32) -> Vec<groundzero::IpNet> {
    use aya::maps::{lpm_trie::LpmTrie, Map, MapData, MapInfo};
    let prog = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .unwrap_or_else(|| panic!("no loaded program with id {prog_id}"));
    let ids = prog.map_ids().unwrap().unwrap_or_default();
    let id = ids
        .into_iter()
        .find(|id| {
            MapInfo::from_id(*id).is_ok_and(|m| {
                m.name_as_str() == Some(groundzero_common::ratelimit::RATE_EXEMPT_V4)
            })
        })
        .unwrap_or_else(|| panic!("program {prog_id} has no rate-exempt map"));
    let trie: LpmTrie<MapData, [u8; 4], u32> =
        LpmTrie::try_from(Map::LpmTrie(MapData::from_id(id).unwrap())).unwrap();
    trie.keys()
        .map(|k| {
            let k = k.unwrap();
            let a = k.data();
            format!("{}.{}.{}.{}/{}", a[0], a[1], a[2], a[3], k.prefix_len())
                .parse()
                .unwrap()
        })
        .collect()
}

/// A UDP socket bound in a namespace, counting what arrives per source address on a thread
/// of its own until dropped.
pub struct UdpTally {
    pub addr: SocketAddr,
    counts: Arc<Mutex<std::collections::BTreeMap<IpAddr, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpTally {
    pub fn bind(ns: &Netns, addr: SocketAddr) -> Self {
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .expect("binding the receiver");
        // A deep receive queue: the counting thread shares two busy cores with the daemon.
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket fd and a c_int option value of the size given.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let counts = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, stop) = (counts.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        *counts.lock().unwrap().entry(from.ip()).or_default() += 1;
                    }
                }
            })
        };
        UdpTally {
            addr,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received from `source` so far.
    pub fn from(&self, source: &str) -> u64 {
        let ip: IpAddr = source.parse().unwrap();
        self.counts.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for UdpTally {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket in `ns` bound to `source` (any port).
pub fn sender(ns: &Netns, source: &str) -> UdpSocket {
    let ip: IpAddr = source.parse().unwrap();
    ns.run(|| UdpSocket::bind(SocketAddr::new(ip, 0)))
        .expect("binding the sender")
}

/// How many datagrams a [`paced_flood`] has sent so far (others may watch it run).
pub type Sent = std::sync::atomic::AtomicU64;

/// Sends `per_tick` datagrams to `to` every `tick` until `duration` has passed or `stop` is
/// set, counting them in `sent`; returns how many it sent. Bounded in count and time.
pub fn paced_flood(
    socket: &UdpSocket,
    to: SocketAddr,
    per_tick: usize,
    tick: Duration,
    duration: Duration,
    stop: &AtomicBool,
    progress: &Sent,
) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = start;
    while start.elapsed() < duration && !stop.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            if socket.send_to(b"flood", to).is_ok() {
                sent += 1;
                progress.fetch_add(1, Ordering::SeqCst);
            }
        }
        next += tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    sent
}
