//! `validator-node`: an example application that embeds groundzero.
//!
//! It serves the lab's peer protocol (`groundzero_lab::peer_protocol`: `PING n`, `GET height`)
//! on UDP and TCP, counts requests and invalid messages per peer, and bans a peer that sends too
//! many requests or too many invalid messages, through groundzero, with a reason and a TTL
//! (see `bans.rs`).
//!
//! The node keeps no block list of its own: dropping banned peers is groundzero's job, done in
//! XDP before the node pays anything for their packets. (With the daemon in monitor mode the bans
//! are recorded but nothing is dropped, and the node keeps paying: that is the demo's "without
//! the shield" phase.) Its UDP receive buffer is deliberately modest, like a node that has not
//! been tuned for floods, so a flood that reaches it crowds out legitimate requests.
//!
//! Single-threaded on purpose: one core's worth of work, so a flood competes with legitimate
//! peers for it, as it would on a busy node.

mod bans;
mod policy;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use groundzero_api::client::Endpoint;
use groundzero_lab::peer_protocol::{Request, MAX_MESSAGE, PORT};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::mpsc,
};

use bans::{Ban, Banner};
use policy::{Policy, Tracker};

/// Serve the lab's peer protocol and ban misbehaving peers through groundzero.
#[derive(Parser, Debug)]
#[command(name = "validator-node", version, about)]
struct Args {
    /// IPv4 address to serve on.
    #[arg(long, default_value = "0.0.0.0")]
    listen_v4: Ipv4Addr,
    /// IPv6 address to serve on.
    #[arg(long, default_value = "::")]
    listen_v6: Ipv6Addr,
    #[arg(long, default_value_t = PORT)]
    port: u16,
    /// The groundzero daemon's Unix socket (bans carry source, reason and TTL).
    #[arg(long, default_value = "/run/groundzero/api.sock")]
    api_socket: PathBuf,
    /// Use the daemon's TCP API at HOST:PORT instead (needs --token-file).
    #[arg(long, requires = "token_file")]
    api: Option<String>,
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// If no daemon answers, ban through the maps pinned here (e.g. /sys/fs/bpf/groundzero).
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Do not ban at all (only log what would be banned).
    #[arg(long)]
    no_ban: bool,
    /// How long a ban lasts.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ban_ttl: Duration,
    /// Requests per second a peer may send.
    #[arg(long, default_value_t = 200)]
    max_requests_per_sec: u32,
    /// Invalid messages a peer may send within 10 s.
    #[arg(long, default_value_t = 5)]
    max_invalid: u32,
    /// CPU time each GET costs the node, in microseconds: a stand-in for the signature checks
    /// and storage reads of a real node. Calibrated at start into hashing rounds, so a debug
    /// and a release build cost the same.
    #[arg(long, default_value_t = 40)]
    work_us: u32,
    /// UDP receive buffer in bytes (the kernel doubles it; 0 keeps the system default).
    #[arg(long, default_value_t = 32 * 1024)]
    rcvbuf: usize,
    /// Print counters this often.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    stats_every: Duration,
}

/// What the node has done, for the periodic line.
#[derive(Default)]
struct Counters {
    served: AtomicU64,
    invalid: AtomicU64,
    ban_decisions: AtomicU64,
}

/// Shared by the UDP and TCP servers (one thread: the mutex is never contended).
struct Node {
    tracker: Mutex<Tracker>,
    counters: Counters,
    bans: mpsc::Sender<Ban>,
    work_rounds: u32,
    started: Instant,
}

enum Outcome {
    Answer(String),
    /// Invalid: no answer. `true` if the peer was banned just now.
    Invalid {
        banned: bool,
    },
}

impl Node {
    fn handle(&self, peer: IpAddr, message: &[u8]) -> Outcome {
        let now = Instant::now();
        match Request::parse(message) {
            Ok(request) => {
                let ban = self.tracker.lock().unwrap().on_request(peer, now);
                if let Some(reason) = ban {
                    self.ban(peer, reason);
                }
                self.counters.served.fetch_add(1, Ordering::Relaxed);
                Outcome::Answer(request.answer(self.work_rounds).encode())
            }
            Err(invalid) => {
                self.counters.invalid.fetch_add(1, Ordering::Relaxed);
                let what = invalid.to_string();
                let ban = self.tracker.lock().unwrap().on_invalid(peer, &what, now);
                let banned = ban.is_some();
                if let Some(reason) = ban {
                    self.ban(peer, reason);
                }
                Outcome::Invalid { banned }
            }
        }
    }

    fn ban(&self, peer: IpAddr, reason: String) {
        self.counters.ban_decisions.fetch_add(1, Ordering::Relaxed);
        // A full queue means the banner is far behind; this peer comes up again later.
        let _ = self.bans.try_send(Ban { peer, reason });
    }

    fn stats_line(&self) -> String {
        format!(
            "t={:.0}s served={} invalid={} ban_decisions={} peers_tracked={}",
            self.started.elapsed().as_secs_f64(),
            self.counters.served.load(Ordering::Relaxed),
            self.counters.invalid.load(Ordering::Relaxed),
            self.counters.ban_decisions.load(Ordering::Relaxed),
            self.tracker.lock().unwrap().peers()
        )
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let banner = if args.no_ban {
        Banner::LogOnly
    } else {
        let endpoint = match (&args.api, &args.token_file) {
            (Some(address), Some(file)) => Endpoint::Tcp {
                address: address.clone(),
                token: std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?
                    .trim()
                    .to_string(),
            },
            _ => Endpoint::Unix(args.api_socket.clone()),
        };
        Banner::connect(Some(endpoint), args.pin_dir.clone()).await?
    };
    log::info!("bans go to {}", banner.describe());
    let (tx, rx) = mpsc::channel(65_536);
    let node = Arc::new(Node {
        tracker: Mutex::new(Tracker::new(Policy {
            max_requests_per_sec: args.max_requests_per_sec,
            max_invalid: args.max_invalid,
            ..Policy::default()
        })),
        counters: Counters::default(),
        bans: tx,
        work_rounds: calibrate(args.work_us),
        started: Instant::now(),
    });
    let banner_task = tokio::spawn(bans::run(banner, rx, args.ban_ttl));

    let v4 = SocketAddr::new(args.listen_v4.into(), args.port);
    let v6 = SocketAddr::new(args.listen_v6.into(), args.port);
    let mut servers = tokio::task::JoinSet::new();
    for addr in [v4, v6] {
        let udp = udp_socket(addr, args.rcvbuf)?;
        servers.spawn(serve_udp(udp, node.clone()));
        let tcp = tcp_listener(addr)?;
        servers.spawn(serve_tcp(tcp, node.clone()));
    }
    log::info!(
        "serving on udp+tcp {v4} and {v6} (work {} µs = {} rounds per GET, rcvbuf {} bytes, limits {}/s and {} invalid per 10s, ban ttl {})",
        args.work_us,
        node.work_rounds,
        args.rcvbuf,
        args.max_requests_per_sec,
        args.max_invalid,
        humantime::format_duration(args.ban_ttl)
    );
    println!("ready"); // for whoever started us: the sockets are bound

    let mut stats = tokio::time::interval(args.stats_every);
    let mut prune = tokio::time::interval(Duration::from_secs(10));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = stats.tick() => log::info!("{}", node.stats_line()),
            _ = prune.tick() => node.tracker.lock().unwrap().prune(Instant::now(), Duration::from_secs(30)),
            Some(done) = servers.join_next() => {
                done.context("a server task panicked")??;
            }
        }
    }
    servers.abort_all();
    let line = node.stats_line();
    drop(node); // closes the ban channel: the banner flushes and ends
    let applied = banner_task.await.unwrap_or(0);
    log::info!("stopping: {line} bans_applied={applied}");
    Ok(())
}

/// Hashing rounds that take about `work_us` on this CPU with this build.
fn calibrate(work_us: u32) -> u32 {
    const SAMPLE: u32 = 20_000;
    // The fastest of a few samples: one taken while this thread was preempted would make each
    // request's work too small, and the node's capacity a matter of luck at startup.
    let fastest = (0..5)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(groundzero_lab::peer_protocol::block_hash(1, SAMPLE));
            started.elapsed()
        })
        .min()
        .expect("five samples");
    let per_round_ns = (fastest.as_nanos() as f64 / f64::from(SAMPLE)).max(0.1);
    ((f64::from(work_us) * 1000.0 / per_round_ns).round() as u32).max(1)
}

fn udp_socket(addr: SocketAddr, rcvbuf: usize) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if rcvbuf > 0 {
        socket.set_recv_buffer_size(rcvbuf)?;
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding udp {addr}"))?;
    Ok(UdpSocket::from_std(socket.into())?)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding tcp {addr}"))?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}

async fn serve_udp(socket: UdpSocket, node: Arc<Node>) -> Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        if let Outcome::Answer(answer) = node.handle(from.ip(), &buf[..n]) {
            // Answers to spoofed sources fail (the lab routes them nowhere): that is fine.
            let _ = socket.send_to(answer.as_bytes(), from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, node: Arc<Node>) -> Result<()> {
    loop {
        let (stream, from) = listener.accept().await?;
        tokio::spawn(serve_connection(stream, from.ip(), node.clone()));
    }
}

/// One peer's connection: one request per line. Closed when the peer is banned.
async fn serve_connection(stream: TcpStream, peer: IpAddr, node: Arc<Node>) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    // A line longer than a message can be is invalid; `take` keeps a peer from making us
    // buffer without end.
    let mut lines = BufReader::new(read.take(u64::MAX));
    let mut line = Vec::with_capacity(MAX_MESSAGE + 2);
    loop {
        line.clear();
        lines.get_mut().set_limit((MAX_MESSAGE + 2) as u64 + 1);
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match node.handle(peer, &line) {
            Outcome::Answer(mut answer) => {
                answer.push('\n');
                if write.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Outcome::Invalid { banned: true } => return,
            Outcome::Invalid { banned: false } => {}
        }
    }
}
