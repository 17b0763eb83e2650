//! One HTTP server loop for every listener (the API's Unix socket, the TCP API, `/metrics`), with
//! the limits that keep a slow or greedy client from exhausting it:
//!
//! - **header read timeout** (hyper's own, started when a connection is accepted and again when
//!   a kept-alive connection waits for its next request): a client that connects and then sends
//!   nothing, or half a request line, is dropped after [`Limits::header_read_timeout`];
//! - **request timeout** (tower's `TimeoutLayer`): reading the body and producing the response
//!   head must finish within [`Limits::request_timeout`], else `503 {"error": ...}`. Streams
//!   (the journey page's server-sent events) are not cut: the limit ends at the response head;
//! - **connection cap** per listener: a slot (semaphore permit) is taken *before* `accept`. At
//!   the cap we stop accepting and new connections wait in the kernel's listen backlog rather
//!   than being accepted and closed: waiting costs this process no descriptor and no CPU (an
//!   accept-and-close loop is work an attacker could keep us doing), and since every held
//!   connection is bounded by the timeouts above, the queue moves. Each listener has its own
//!   cap, so a flood on TCP cannot take the Unix socket's slots (what `groundzero` and the
//!   guard use);
//! - **accept errors** (EMFILE and the like) are logged and retried after a growing pause
//!   instead of a busy loop;
//! - **graceful drain**: on shutdown we stop accepting, let requests in flight finish for up to
//!   [`Limits::drain_timeout`] (idle kept-alive connections close at once), then drop the rest.

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{
    error_handling::HandleErrorLayer, http::StatusCode, response::IntoResponse, Json, Router,
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::Semaphore,
    task::JoinSet,
};

/// What one listener allows. The defaults suit the daemon: a 1M-entry import (about 25 MB of
/// JSON, ~3 s to apply) fits in the request timeout many times over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From accepting a connection (or the end of its previous response) to the end of the
    /// request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// From the request head to the response head (the body upload included). Default 60 s.
    pub request_timeout: Duration,
    /// Connections open at once on this listener; more wait in the listen backlog. Default 256.
    pub max_connections: usize,
    /// On shutdown, how long requests in flight may take to finish. Default 5 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_connections: 256,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// A listening socket [`serve`] can take connections from.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = tokio::net::TcpListener::accept(self).await?;
        // Small JSON answers: do not wait for Nagle. Failing to set it changes nothing else.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(stream, _)| stream)
    }
}

/// The pauses after accept errors that are not about one connection: from the first to the
/// last, doubling; back to the first after a successful accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then drains (see the
/// module documentation) and returns. `name` says which listener in log lines.
pub async fn serve<L: Accept>(
    name: &str,
    mut listener: L,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let app = with_request_timeout(app, limits.request_timeout);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    tokio::pin!(shutdown);

    loop {
        // Finished connections: their results are nothing, but the set would keep them.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; stop rather than spin if it were
            },
        };
        let io = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(io) => {
                    backoff = ACCEPT_BACKOFF.0;
                    io
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    log::warn!("{name}: accepting a connection failed: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            },
        };
        let connection =
            http.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            // Header timeouts and clients that hang up land here: nothing to tell anyone.
            let _ = connection.await;
            drop(slot);
        });
    }

    // Stop accepting first: new clients get "connection refused" instead of waiting in a
    // backlog nobody will serve.
    drop(listener);
    let open = graceful.count();
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!(
            "{name}: requests still running after {:?} of draining: closing them",
            limits.drain_timeout
        );
    } else if open > 0 {
        log::info!("{name}: drained {open} connection(s)");
    }
    connections.shutdown().await;
}

/// Errors about one incoming connection (it went away before we took it): try the next at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// `app` with a time limit from request head to response head; past it, `503` with our usual
/// JSON error. The handler's future is dropped then, but work it handed to a blocking thread (a
/// list change, an import) still finishes: the message says so rather than "nothing happened".
fn with_request_timeout(app: Router, limit: Duration) -> Router {
    app.layer(
        tower::ServiceBuilder::new()
            .layer(HandleErrorLayer::new(
                move |_: tower::BoxError| async move { timed_out(limit) },
            ))
            .layer(tower::timeout::TimeoutLayer::new(limit)),
    )
}

fn timed_out(limit: Duration) -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(groundzero_api::ErrorBody::new(format!(
            "the request did not finish within {}; work it had started may still complete",
            humantime::format_duration(limit)
        ))),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_millis(500),
            max_connections: 2,
            drain_timeout: Duration::from_secs(2),
        }
    }

    fn app() -> Router {
        Router::new()
            .route("/fast", get(|| async { "fast" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    "slow"
                }),
            )
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/medium",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "medium"
                }),
            )
    }

    /// A server on 127.0.0.1 with `limits`; its address, a shutdown trigger and its task.
    async fn start(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve("test", listener, app(), limits, async {
                let _ = rx.await;
            })
            .await
        });
        (addr, tx, task)
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }

    fn get_request(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn stalled_clients_are_dropped_and_the_cap_holds_then_frees() {
        let (addr, stop, task) = start(limits()).await;
        // Fill both slots with half a request line each, and a third waits in the backlog.
        let mut stalled = Vec::new();
        for _ in 0..3 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /fa").await.unwrap();
            stalled.push(s);
        }
        let started = Instant::now();
        // Each stalled connection is closed by the server (EOF) within the header timeout of
        // its accept; the third is accepted only when a slot frees, so it takes about twice.
        for s in &mut stalled {
            let mut buf = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
                .await
                .expect("the server must close a stalled connection");
            // hyper closes without an answer (a slowloris gets nothing to read).
            assert!(n.is_err() || buf.is_empty(), "{buf:?}");
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500),
            "the third connection waited for a slot: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        // Then a real request is served.
        let answer = exchange(addr, &get_request("/fast")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn slow_handlers_get_a_json_503() {
        let (addr, stop, task) = start(limits()).await;
        let started = Instant::now();
        let answer = exchange(addr, &get_request("/slow")).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("{\"error\":\"the request did not finish within 500ms"));
        assert!(started.elapsed() < Duration::from_millis(800));
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish_and_refuses_new_ones() {
        let (addr, stop, task) = start(limits()).await;
        let in_flight = tokio::spawn(async move { exchange(addr, &get_request("/medium")).await });
        // An idle kept-alive connection must not hold the drain up.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let _ = stop.send(());
        task.await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "drained in {:?}",
            started.elapsed()
        );
        let answer = in_flight.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("medium"), "{answer}");
        let mut buf = Vec::new();
        let _ = idle.read_to_end(&mut buf).await;
        assert!(buf.is_empty());
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn the_drain_is_bounded() {
        let limits = Limits {
            drain_timeout: Duration::from_millis(200),
            request_timeout: Duration::from_secs(10),
            ..limits()
        };
        let (addr, stop, task) = start(limits).await;
        // A request head with a body that never comes: in flight until the drain gives up.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let _ = stop.send(());
        task.await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn per_connection_errors_are_told_apart_from_resource_errors() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        // EMFILE: back off, do not spin.
        assert!(!is_per_connection(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
    }
}
