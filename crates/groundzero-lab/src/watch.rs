//! Reading what the daemon did during a phase: XDP counters and when each attacker got banned.
//! Async (it talks to the daemon through [`groundzero_api::client`]); the caller owns the runtime.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use groundzero_api::client::{Client, ClientError, Method};
use ipnet::IpNet;

/// Packets the XDP program counted, by what it did with them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpTally {
    /// Dropped: a blocklist entry or the rate limit.
    pub dropped: u64,
    /// What monitor mode would have dropped (passed instead).
    pub would_drop: u64,
    /// Truncated or inconsistent headers (passed on for the kernel to discard).
    pub malformed: u64,
    /// Everything else that passed.
    pub passed: u64,
}

impl XdpTally {
    /// Totals over every interface, from `GET /v1/stats`.
    pub async fn read(client: &Client) -> Result<XdpTally, ClientError> {
        let stats = client.call(Method::GET, "/v1/stats", None).await?;
        let packets = |reason: &str| {
            stats["counters"][reason]["packets"]
                .as_u64()
                .unwrap_or_default()
        };
        Ok(XdpTally {
            dropped: packets("blocked_exact") + packets("blocked_cidr") + packets("rate_limited"),
            would_drop: packets("monitor_exact")
                + packets("monitor_cidr")
                + packets("monitor_rate"),
            malformed: packets("malformed"),
            passed: packets("no_match") + packets("allowlisted") + packets("non_ip"),
        })
    }

    pub fn since(&self, earlier: &XdpTally) -> XdpTally {
        XdpTally {
            dropped: self.dropped.saturating_sub(earlier.dropped),
            would_drop: self.would_drop.saturating_sub(earlier.would_drop),
            malformed: self.malformed.saturating_sub(earlier.malformed),
            passed: self.passed.saturating_sub(earlier.passed),
        }
    }
}

/// When each expected attacker first showed up on the blocklist, relative to the attack's start.
#[derive(Clone, Debug)]
pub struct BanClock {
    expected: HashSet<IpAddr>,
    attack_started: Instant,
    banned_after: HashMap<IpAddr, Duration>,
}

impl BanClock {
    pub fn new(expected: impl IntoIterator<Item = IpAddr>, attack_started: Instant) -> Self {
        Self {
            expected: expected.into_iter().collect(),
            attack_started,
            banned_after: HashMap::new(),
        }
    }

    /// Notes which expected attackers `blocked` (the blocklist now) covers.
    pub fn observe(&mut self, blocked: &[IpNet], now: Instant) {
        let after = now.saturating_duration_since(self.attack_started);
        for addr in &self.expected {
            if !self.banned_after.contains_key(addr) && blocked.iter().any(|n| n.contains(addr)) {
                self.banned_after.insert(*addr, after);
            }
        }
    }

    /// Polls the entries held by `source` and [`BanClock::observe`]s them.
    pub async fn poll(&mut self, client: &Client, source: &str) -> Result<(), ClientError> {
        let blocked = client.blocked_by(source).await?;
        self.observe(&blocked, Instant::now());
        Ok(())
    }

    pub fn expected(&self) -> usize {
        self.expected.len()
    }

    pub fn banned(&self) -> usize {
        self.banned_after.len()
    }

    /// When the last expected attacker was banned, if all were (and any were expected).
    pub fn all_banned_after(&self) -> Option<Duration> {
        (self.expected() > 0 && self.banned() == self.expected()).then(|| {
            self.banned_after
                .values()
                .max()
                .copied()
                .unwrap_or_default()
        })
    }

    /// Time to ban the `q` quantile of the attackers banned so far.
    pub fn banned_after_quantile(&self, q: f64) -> Option<Duration> {
        let mut times: Vec<Duration> = self.banned_after.values().copied().collect();
        times.sort_unstable();
        let last = times.len().checked_sub(1)?;
        times
            .get(((last as f64) * q.clamp(0.0, 1.0)).round() as usize)
            .copied()
    }

    /// Expected attackers not banned (yet).
    pub fn missing(&self) -> Vec<IpAddr> {
        let mut m: Vec<IpAddr> = self
            .expected
            .iter()
            .filter(|a| !self.banned_after.contains_key(a))
            .copied()
            .collect();
        m.sort();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_clock_records_the_first_sighting() {
        let t0 = Instant::now();
        let a: IpAddr = "198.19.1.1".parse().unwrap();
        let b: IpAddr = "198.19.1.2".parse().unwrap();
        let mut clock = BanClock::new([a, b], t0);
        clock.observe(
            &["198.19.1.1/32".parse().unwrap()],
            t0 + Duration::from_secs(1),
        );
        assert_eq!(clock.all_banned_after(), None);
        assert_eq!(clock.missing(), vec![b]);
        clock.observe(
            &["198.19.1.0/24".parse().unwrap()],
            t0 + Duration::from_secs(2),
        );
        assert_eq!(clock.all_banned_after(), Some(Duration::from_secs(2)));
        assert_eq!(
            clock.banned_after_quantile(0.0),
            Some(Duration::from_secs(1))
        );
    }
}
