//! Reading what the daemon did during a phase: XDP counters and when each attacker got banned.
//! Async (it talks to the daemon through [`groundzero_api::client`]); the caller owns the runtime.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use groundzero_api::{
    client::{Client, ClientError},
    counters::ReasonCounters,
    Action, Reason,
};
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
        Ok(XdpTally::from_counters(&client.stats().await?.counters))
    }

    /// The tally of the daemon's counters: every reason lands in exactly one bucket.
    pub fn from_counters(counters: &ReasonCounters) -> XdpTally {
        let packets = |pick: fn(Reason) -> bool| counters.sum(pick).packets;
        XdpTally {
            dropped: packets(|r| r.action() == Action::Drop),
            would_drop: packets(Reason::would_drop),
            malformed: packets(|r| r == Reason::Malformed),
            passed: packets(|r| {
                r.action() == Action::Pass && !r.would_drop() && r != Reason::Malformed
            }),
        }
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
    fn every_reason_lands_in_its_bucket() {
        let counters: ReasonCounters = Reason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    groundzero_api::counters::CounterView {
                        bytes: 0,
                        packets: 1 << (r as u32),
                    },
                )
            })
            .collect();
        let t = XdpTally::from_counters(&counters);
        // The buckets of the old lookup by label: blocked_exact + blocked_cidr + rate_limited,
        // monitor_*, malformed, and no_match + allowlisted + non_ip.
        let bit = |r: Reason| 1u64 << (r as u32);
        assert_eq!(
            t.dropped,
            bit(Reason::BlockedExact) + bit(Reason::BlockedCidr) + bit(Reason::RateLimited)
        );
        assert_eq!(
            t.would_drop,
            bit(Reason::MonitorExact) + bit(Reason::MonitorCidr) + bit(Reason::MonitorRate)
        );
        assert_eq!(t.malformed, bit(Reason::Malformed));
        assert_eq!(
            t.passed,
            bit(Reason::NoMatch) + bit(Reason::Allowlisted) + bit(Reason::NonIp)
        );
    }

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
