//! Shared by the integration tests that need the kernel (root).
#![allow(dead_code)]

use groundzero::{Shield, ShieldOptions};

/// Fails loudly, rather than skipping, when not root: these tests need CAP_BPF and
/// CAP_NET_ADMIN, and CI runs them as root. A skipped kernel test would be a green lie.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test loads an XDP program and makes network namespaces: it needs root \
         (CI runs it as root; locally: sudo -E cargo test)"
    );
}

/// A freshly loaded shield with default capacities.
pub fn shield() -> Shield {
    require_root();
    Shield::load(ShieldOptions::default()).unwrap_or_else(|e| panic!("loading the shield: {e:?}"))
}

pub mod child;
pub mod daemon;
pub mod state;
pub mod topology;

/// Reads datagrams from `socket` until `expected` have come (waiting up to 5 s for them: a
/// loaded machine may deliver late), then for a quiet 300 ms, so any extra (a leak past a
/// block) is counted too. Returns how many came. Sets the socket's read timeout.
pub fn recv_expected(socket: &std::net::UdpSocket, expected: usize) -> usize {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    let mut got = 0;
    loop {
        let wait = if got < expected {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(300)
        };
        if wait.is_zero() {
            return got;
        }
        socket.set_read_timeout(Some(wait)).unwrap();
        match socket.recv_from(&mut buf) {
            Ok(_) => got += 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return got,
        }
    }
}

/// Calls `ok` every `every` until it says yes or `limit` has passed; whether it said yes.
pub fn wait_for(
    limit: std::time::Duration,
    every: std::time::Duration,
    mut ok: impl FnMut() -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if ok() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
