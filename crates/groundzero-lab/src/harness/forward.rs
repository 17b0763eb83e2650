//! A loopback port of this host forwarded into a network namespace: the browser is here, the
//! daemon listens in the node's namespace.
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{io, HarnessError};
use crate::netns::Netns;

/// Forwards 127.0.0.1:`port` on this host to 127.0.0.1:`port` in a namespace. Stops accepting
/// when dropped.
pub struct Forward {
    stop: Arc<AtomicBool>,
}

impl Forward {
    /// Listens on 127.0.0.1:`port` here and connects each client to the same port in
    /// `/run/netns/<netns>`.
    pub fn start(netns: &str, port: u16) -> Result<Forward, HarnessError> {
        let what = format!("listening on 127.0.0.1:{port}");
        let listener = TcpListener::bind(("127.0.0.1", port)).map_err(io(what.clone()))?;
        listener.set_nonblocking(true).map_err(io(what))?;
        let ns = Netns::open(netns)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let target = SocketAddr::from(([127, 0, 0, 1], port));
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        // The socket is made inside the namespace and keeps it afterwards.
                        if let Ok(Ok(upstream)) = ns.try_run(|| TcpStream::connect(target)) {
                            pipe(client, upstream);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(Forward { stop })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies both ways until either side closes (one thread per direction; a page holds a few
/// connections at most).
fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    }
}
