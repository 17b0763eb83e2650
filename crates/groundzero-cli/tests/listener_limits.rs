//! The daemon's listeners against slow and greedy clients (root: a real daemon; traffic on
//! loopback only): stalled connections are dropped after the header timeout and never take more
//! than the cap, the Unix API keeps answering while the metrics port is flooded, a body that
//! never finishes gets a 503, and shutdown lets a request in flight finish (bounded).

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use common::daemon::TestDaemon;
use hyper::Method;
use serde_json::Value;

/// A loopback port free a moment ago (the daemon logs the configured address, not the bound one,
/// so `:0` would leave the test guessing).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connections to 127.0.0.1:`port` that the server side has accepted: established sockets with
/// that local port and an inode (one still in the listen backlog has none yet).
fn accepted_on(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[1] == local && f[3] == "01" && f[9] != "0"
        })
        .count()
}

/// Reads what `stream` gets until it closes (or `limit` passes): (status, body).
fn read_answer(mut stream: impl Read, limit: Duration) -> (u16, String) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    common::daemon::status_and_body(&out)
}

fn unix(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// The head of a `POST /v1/block` whose body is `body`, and the body itself.
fn block_request(address: &str) -> (String, String) {
    let body = format!("{{\"entries\": [\"{address}\"], \"reason\": \"in flight\"}}");
    let head = format!(
        "POST /v1/block HTTP/1.1\r\nHost: gz\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    (head, body)
}

#[test]
fn slowloris_on_the_metrics_port_neither_exceeds_the_cap_nor_silences_the_api() {
    const CAP: usize = 8;
    const STALLED: usize = 3 * CAP;
    let header_timeout = Duration::from_secs(1);
    let port = free_port();
    let d = TestDaemon::start(&format!(
        "[guard]\nprotect_management = false\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [api]\nheader_read_timeout = \"1s\"\nmax_connections = {CAP}\n"
    ));
    // Half a request line each, then silence: the classic slowloris.
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metr").unwrap();
            s
        })
        .collect();

    // The API on the Unix socket has its own slots: it answers at once.
    let health = d.ok(Method::GET, "/v1/health", None);
    assert_eq!(health["status"], "ok");

    // While they stall, the daemon holds at most CAP of them (the rest wait in the backlog,
    // costing it no descriptor); and it does take some.
    let mut most = 0;
    while started.elapsed() < header_timeout / 2 {
        most = most.max(accepted_on(port));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        (1..=CAP).contains(&most),
        "{most} stalled connections accepted at once; the cap is {CAP}"
    );

    // Every stalled connection is closed by the server, with nothing sent: CAP at a time, each
    // after the header timeout, so all within (STALLED / CAP) timeouts plus a margin.
    let bound = header_timeout * (STALLED / CAP) as u32 + Duration::from_secs(4);
    for s in &mut stalled {
        s.set_read_timeout(Some(bound)).unwrap();
        let mut buf = Vec::new();
        // Closed by the server: end of stream (or a reset), not our read timeout.
        match s.read_to_end(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "a stalled connection was not closed: {other:?} {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        assert!(started.elapsed() < bound, "still open after {bound:?}");
    }

    // And then a real scrape is served.
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        started.elapsed() < bound,
        "a fresh scrape only after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_body_that_never_finishes_gets_a_json_503_after_the_request_timeout() {
    let d =
        TestDaemon::start("[guard]\nprotect_management = false\n[api]\nrequest_timeout = \"1s\"\n");
    let (head, body) = block_request("198.18.41.1");
    let mut s = unix(&d.socket);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
    let started = Instant::now();
    let (status, answer) = read_answer(&mut s, Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(status, 503, "{answer}");
    let error: Value = serde_json::from_str(&answer).unwrap();
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not finish within 1s")),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn shutdown_lets_a_request_in_flight_finish_and_refuses_new_ones() {
    let extra = "[guard]\nprotect_management = false";
    let d = TestDaemon::start(extra);
    let socket = d.socket.clone();
    let (head, body) = block_request("198.18.42.1");
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    let mut s = unix(&socket);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // the daemon is reading the body

    let stopping = Instant::now();
    let stopper = std::thread::spawn(move || d.stop());
    std::thread::sleep(Duration::from_millis(300));
    // Shutting down: no new connections...
    assert!(
        UnixStream::connect(&socket).is_err(),
        "a new connection was accepted while draining"
    );
    // ...but the one in flight finishes, and is answered.
    s.write_all(rest).unwrap();
    let (status, answer) = read_answer(&mut s, Duration::from_secs(10));
    assert_eq!(status, 200, "{answer}");
    let added: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(added["added"], 1, "{answer}");
    let (dir, pin_dir) = stopper.join().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "the drain waited for more than the request: {:?}",
        stopping.elapsed()
    );

    // The change it made was kept: a new daemon on the same state has it.
    let d = TestDaemon::start_with(dir, pin_dir, extra);
    let entries = d.ok(Method::GET, "/v1/entries?list=block", None);
    assert!(
        entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["entry"] == "198.18.42.1/32"),
        "{entries}"
    );
}

#[test]
fn a_request_that_never_finishes_holds_shutdown_up_for_the_drain_timeout_only() {
    let d = TestDaemon::start("[guard]\nprotect_management = false");
    let (head, body) = block_request("198.18.43.1");
    let mut s = unix(&d.socket);
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopping = Instant::now();
    drop(d);
    let took = stopping.elapsed();
    // The default drain is 5 s; the request timeout (60 s) is not what ended it.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    let (status, _) = read_answer(&mut s, Duration::from_secs(2));
    assert_eq!(status, 0, "the cut-off request got no answer");
}
