//! The real `groundzero run` binary as a child process (optionally inside a network
//! namespace), with its own directories, for tests of what only a process shows: locks held
//! against a second daemon, SIGHUP reloads, exit codes and stderr.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use groundzero::pins;
use groundzero_lab::netns::Netns;
use serde_json::Value;

use super::state::{self, Response};

/// A temporary directory and the bpffs pin directories handed out under it, all removed on
/// drop (panic included). Drop it after the daemons that use it.
pub struct Workdir {
    pub dir: PathBuf,
    tag: String,
    pin_dirs: Vec<PathBuf>,
}

impl Workdir {
    pub fn new(tag: &str) -> Self {
        super::require_root();
        pins::ensure_bpffs().expect("bpffs mounted");
        let tag = format!("gz-proc-{tag}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Workdir {
            dir,
            tag,
            pin_dirs: Vec::new(),
        }
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A pin directory of this test (not created), removed on drop.
    pub fn pin_dir(&mut self, name: &str) -> PathBuf {
        let p = PathBuf::from("/sys/fs/bpf").join(format!("{}-{name}", self.tag));
        let _ = pins::remove_all(&p);
        self.pin_dirs.push(p.clone());
        p
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

/// A daemon config: `interfaces`, the three paths, then `extra` (tables only).
pub fn config_text(
    interfaces: &[&str],
    pin_dir: &Path,
    state_dir: &Path,
    socket: &Path,
    extra: &str,
) -> String {
    format!(
        "interfaces = {interfaces:?}\npin_dir = {pin_dir:?}\nstate_dir = {state_dir:?}\n\
         [api]\nsocket = {socket:?}\n{extra}\n"
    )
}

/// A `groundzero run --config FILE` child. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct ChildDaemon {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl ChildDaemon {
    /// Starts the binary with `config`, stderr (the log) to `log`, inside `ns` if given, and
    /// returns at once.
    pub fn spawn(config: &Path, socket: &Path, log: &Path, ns: Option<&Netns>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_groundzero"));
        cmd.args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if let Some(ns) = ns {
            // Only the network namespace changes (not the mount namespace, as `ip netns exec`
            // would): the daemon's pins must be in the bpffs the test reads. The process
            // itself is the daemon, so its pid is the one the lock names.
            let file = std::fs::File::open(format!("/run/netns/{}", ns.name())).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            // SAFETY: setns is a plain syscall, async-signal-safe; `file` outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("running the groundzero binary");
            drop(file);
            return Self::wrap(child, config, socket, log);
        }
        let child = cmd.spawn().expect("running the groundzero binary");
        Self::wrap(child, config, socket, log)
    }

    fn wrap(child: Child, config: &Path, socket: &Path, log: &Path) -> Self {
        ChildDaemon {
            child,
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
            config: config.to_path_buf(),
        }
    }

    /// [`ChildDaemon::spawn`], then waits (up to 30 s) until it answers `/v1/health`.
    pub fn start(config: &Path, socket: &Path, log: &Path, ns: Option<&Netns>) -> Self {
        let mut d = Self::spawn(config, socket, log, ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.healthy() {
                return d;
            }
            if let Some(status) = d.exited() {
                panic!(
                    "the daemon exited ({status}) at start; log:\n{}",
                    d.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 30 s; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn healthy(&self) -> bool {
        state::request(&self.socket, "GET", "/v1/health", None).is_some_and(|r| r.status == 200)
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)
            .expect("signalling the daemon");
    }

    /// Everything it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A JSON request on its socket; panics when nothing answers.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        state::request(&self.socket, method, path, body).unwrap_or_else(|| {
            panic!(
                "{method} {path}: no answer on {}; log:\n{}",
                self.socket.display(),
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

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: kill has no preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
