//! A snapshot of the XDP program's per-reason counters, summed over CPUs.

use groundzero_common::{maps::Counter, Action, Reason};

/// Packets and bytes per [`Reason`], summed over all CPUs at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    by_reason: [Counter; Reason::ALL.len()],
}

impl Counters {
    pub fn from_slots(slots: impl IntoIterator<Item = (Reason, Counter)>) -> Self {
        let mut c = Counters::default();
        for (reason, counter) in slots {
            let slot = &mut c.by_reason[reason as usize];
            slot.packets += counter.packets;
            slot.bytes += counter.bytes;
        }
        c
    }

    /// The counter for one reason.
    pub fn get(&self, reason: Reason) -> Counter {
        self.by_reason[reason as usize]
    }

    /// Every reason with its counter, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (Reason, Counter)> + '_ {
        Reason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    /// Everything the program saw.
    pub fn total(&self) -> Counter {
        self.sum(|_| true)
    }

    /// Everything that got one action.
    pub fn by_action(&self, action: Action) -> Counter {
        self.sum(|r| r.action() == action)
    }

    /// Packets a block entry matched while monitor mode let them pass.
    pub fn would_drop(&self) -> Counter {
        self.sum(Reason::would_drop)
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters::from_slots(self.iter().map(|(r, now)| {
            let then = earlier.get(r);
            let delta = Counter {
                packets: now.packets.saturating_sub(then.packets),
                bytes: now.bytes.saturating_sub(then.bytes),
            };
            (r, delta)
        }))
    }

    fn sum(&self, keep: impl Fn(Reason) -> bool) -> Counter {
        self.iter()
            .filter(|(r, _)| keep(*r))
            .fold(Counter::default(), |acc, (_, c)| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(packets: u64, bytes: u64) -> Counter {
        Counter { packets, bytes }
    }

    #[test]
    fn sums_cpus_and_groups_by_action() {
        let snap = Counters::from_slots([
            (Reason::BlockedExact, c(2, 200)),
            (Reason::BlockedExact, c(3, 300)), // a second CPU
            (Reason::NoMatch, c(1, 60)),
            (Reason::MonitorCidr, c(4, 400)),
        ]);
        assert_eq!(snap.get(Reason::BlockedExact), c(5, 500));
        assert_eq!(snap.by_action(Action::Drop), c(5, 500));
        assert_eq!(snap.by_action(Action::Pass), c(5, 460));
        assert_eq!(snap.would_drop(), c(4, 400));
        assert_eq!(snap.total(), c(10, 960));
    }

    #[test]
    fn since_subtracts_per_reason() {
        let before = Counters::from_slots([(Reason::NoMatch, c(1, 10))]);
        let after = Counters::from_slots([(Reason::NoMatch, c(4, 40)), (Reason::NonIp, c(1, 60))]);
        let delta = after.since(&before);
        assert_eq!(delta.get(Reason::NoMatch), c(3, 30));
        assert_eq!(delta.get(Reason::NonIp), c(1, 60));
    }
}
