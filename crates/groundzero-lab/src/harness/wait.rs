//! Polling: the one loop the demo and the tests wait with.
use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

/// Calls `ok` every `every` until it says yes or `limit` has passed; whether it said yes. `ok`
/// is called at least once, and once more at the deadline.
pub fn wait_for(limit: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Reads datagrams from `socket` until `expected` have come (waiting up to 5 s for them: a
/// loaded machine may deliver late), then for a quiet 300 ms, so any extra (a leak past a
/// block) is counted too. Returns how many came. Sets the socket's read timeout (and panics if
/// it cannot: a socket without one would make a block look like silence).
pub fn recv_expected(socket: &UdpSocket, expected: usize) -> usize {
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
        // A socket without a timeout would make a block look like silence: fail loudly.
        socket
            .set_read_timeout(Some(wait))
            .expect("setting the socket's read timeout");
        match socket.recv_from(&mut buf) {
            Ok(_) => got += 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return got,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_says_yes_as_soon_as_ok_does_and_no_after_the_limit() {
        let mut calls = 0;
        assert!(wait_for(Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let start = Instant::now();
        assert!(!wait_for(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || false
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
    }
}
