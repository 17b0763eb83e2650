//! When a peer has misbehaved enough to be banned: too many requests in a short window, or too
//! many invalid messages. Pure bookkeeping (time is passed in), so it is unit-tested.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// The node's limits.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Requests per second a peer may send; counted over [`Policy::window`], so a flood is
    /// noticed within one window rather than after a whole second.
    pub max_requests_per_sec: u32,
    pub window: Duration,
    /// Invalid messages a peer may send within [`Policy::invalid_window`] before a ban.
    pub max_invalid: u32,
    pub invalid_window: Duration,
    /// A banned peer still seen misbehaving after this long is banned again (the daemon may
    /// be in monitor mode, or the ban may have been lifted by hand).
    pub reban_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_requests_per_sec: 200,
            window: Duration::from_millis(250),
            max_invalid: 5,
            invalid_window: Duration::from_secs(10),
            reban_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug)]
struct Peer {
    window_start: Instant,
    requests: u32,
    invalid_start: Instant,
    invalid: u32,
    banned_at: Option<Instant>,
    last_seen: Instant,
}

/// Per-peer counters for every address the node hears from.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    peers: HashMap<IpAddr, Peer>,
}

impl Tracker {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            peers: HashMap::new(),
        }
    }

    fn peer(&mut self, addr: IpAddr, now: Instant) -> &mut Peer {
        let peer = self.peers.entry(addr).or_insert(Peer {
            window_start: now,
            requests: 0,
            invalid_start: now,
            invalid: 0,
            banned_at: None,
            last_seen: now,
        });
        peer.last_seen = now;
        peer
    }

    /// Counts a valid request; `Some(reason)` if the peer is to be banned now.
    pub fn on_request(&mut self, addr: IpAddr, now: Instant) -> Option<String> {
        let policy = self.policy;
        let per_window = (f64::from(policy.max_requests_per_sec) * policy.window.as_secs_f64())
            .ceil()
            .max(1.0) as u32;
        let peer = self.peer(addr, now);
        if now.duration_since(peer.window_start) >= policy.window {
            peer.window_start = now;
            peer.requests = 0;
        }
        peer.requests += 1;
        (peer.requests > per_window)
            .then(|| {
                format!(
                    "too many requests: over {}/s ({per_window} in {} ms)",
                    policy.max_requests_per_sec,
                    policy.window.as_millis()
                )
            })
            .filter(|_| Self::due(peer, policy, now))
    }

    /// Counts an invalid message; `Some(reason)` if the peer is to be banned now.
    pub fn on_invalid(&mut self, addr: IpAddr, what: &str, now: Instant) -> Option<String> {
        let policy = self.policy;
        let peer = self.peer(addr, now);
        if now.duration_since(peer.invalid_start) >= policy.invalid_window {
            peer.invalid_start = now;
            peer.invalid = 0;
        }
        peer.invalid += 1;
        (peer.invalid >= policy.max_invalid)
            .then(|| {
                format!(
                    "invalid messages: {} within {}s (last: {what})",
                    peer.invalid,
                    policy.invalid_window.as_secs()
                )
            })
            .filter(|_| Self::due(peer, policy, now))
    }

    /// True (and noted) if a ban is due: the first, or a repeat after `reban_after`.
    fn due(peer: &mut Peer, policy: Policy, now: Instant) -> bool {
        let due = peer
            .banned_at
            .is_none_or(|at| now.duration_since(at) >= policy.reban_after);
        if due {
            peer.banned_at = Some(now);
        }
        due
    }

    /// Forgets peers not heard from in `idle` (a spoofed flood would otherwise grow the map).
    pub fn prune(&mut self, now: Instant, idle: Duration) {
        self.peers
            .retain(|_, p| now.duration_since(p.last_seen) < idle);
    }

    pub fn peers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 61));

    #[test]
    fn a_peer_within_the_rate_is_never_banned() {
        let mut t = Tracker::new(Policy::default());
        let start = Instant::now();
        // 100 requests per second for 10 s (half the limit).
        for i in 0..1000u64 {
            let now = start + Duration::from_millis(i * 10);
            assert_eq!(t.on_request(A, now), None, "request {i}");
        }
    }

    #[test]
    fn a_flood_is_banned_within_one_window_and_again_only_after_reban_after() {
        let policy = Policy::default();
        let mut t = Tracker::new(policy);
        let start = Instant::now();
        let mut bans = Vec::new();
        // 2000 requests per second for 6 s.
        for i in 0..12_000u64 {
            let now = start + Duration::from_micros(i * 500);
            if let Some(reason) = t.on_request(A, now) {
                bans.push((now - start, reason));
            }
        }
        assert!(bans[0].0 < policy.window, "{bans:?}");
        assert!(bans[0].1.starts_with("too many requests: over 200/s"));
        assert_eq!(bans.len(), 2, "a ban, then one repeat after 5 s: {bans:?}");
    }

    #[test]
    fn invalid_messages_ban_at_the_limit() {
        let mut t = Tracker::new(Policy::default());
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(t.on_invalid(A, "junk", now), None);
        }
        let reason = t.on_invalid(A, "junk", now).unwrap();
        assert_eq!(reason, "invalid messages: 5 within 10s (last: junk)");
    }

    #[test]
    fn idle_peers_are_forgotten() {
        let mut t = Tracker::new(Policy::default());
        let now = Instant::now();
        t.on_request(A, now);
        t.prune(now + Duration::from_secs(31), Duration::from_secs(30));
        assert_eq!(t.peers(), 0);
    }
}
