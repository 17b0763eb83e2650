//! The example validator node (`validator-node`) as a child process, as the demo and the flood
//! test run it: in the lab's node namespace, banning through the daemon's API socket.
use std::{path::Path, sync::atomic::AtomicBool, time::Duration};

use super::{HarnessError, Launch, Supervised};

/// How long the node may take to bind its sockets.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// `<binary> --api-socket <api_socket> --ban-ttl <ban_ttl>` in `/run/netns/<netns>`, with
/// `RUST_LOG=info` and its output in `log`.
pub fn command(binary: &Path, api_socket: &Path, ban_ttl: &str, netns: &str, log: &Path) -> Launch {
    Launch::new("the validator node", binary)
        .arg("--api-socket")
        .arg(api_socket)
        .args(["--ban-ttl", ban_ttl])
        .env("RUST_LOG", "info")
        .in_netns(netns)
        .log_to(log)
}

/// Starts `launch` (from [`command`]) and waits until the node prints `ready` (its sockets are
/// bound): an error if it exits first, does not within 10 s, or `abort` is set.
pub fn start(launch: &Launch, abort: Option<&AtomicBool>) -> Result<Supervised, HarnessError> {
    let mut node = launch.spawn()?;
    let log = node.log().map(Path::to_path_buf).unwrap_or_default();
    node.wait_ready(READY_LIMIT, abort, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.lines().any(|l| l.trim() == "ready"))
    })?;
    Ok(node)
}
