//! Per-minute stage percentiles, kept by the daemon for the last hour so that a page reload
//! (or a later `GET /v1/journey/history`) still shows how the stages moved.

use std::collections::{HashMap, VecDeque};

use groundzero::journey::{
    stats::{percentiles, stage_label, steps, LATENCY_STAGES},
    Journey, StageLatency,
};

/// Minutes kept.
pub const MINUTES: usize = 60;
/// Latencies kept per stage within one minute (the most recent): bounds memory under load.
const PER_MINUTE: usize = 4096;

#[derive(Default)]
struct Minute {
    start_unix: u64,
    journeys: u64,
    steps: HashMap<&'static str, (u64, VecDeque<u64>)>,
}

impl Minute {
    fn close(&self) -> Closed {
        let stages = LATENCY_STAGES
            .iter()
            .filter_map(|(stage, _)| {
                let (count, values) = self.steps.get(stage)?;
                let (p50, p99) = percentiles(values.iter().copied().collect());
                Some(StageLatency {
                    stage,
                    label: stage_label(stage),
                    count: *count,
                    p50_ns: p50,
                    p99_ns: p99,
                })
            })
            .collect();
        Closed {
            start_unix: self.start_unix,
            journeys: self.journeys,
            stages,
        }
    }
}

/// One finished minute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    pub start_unix: u64,
    pub journeys: u64,
    pub stages: Vec<StageLatency>,
}

/// A minute stays open this long after its end: a journey is recorded when it finishes, up to
/// the assembler's timeout (2 s) and a drain tick after its start.
const GRACE_S: u64 = 10;

/// Per-minute percentiles of the journeys that *started* in each minute (the XDP hook's time),
/// not of those drained in it: a journey closed by the timeout counts in the minute it began.
/// [`MINUTES`] minutes at most: the current one and those before it within the hour.
#[derive(Default)]
pub struct History {
    /// Minutes still taking journeys, oldest first.
    open: VecDeque<Minute>,
    done: VecDeque<Closed>,
    /// Journeys that finished after their minute closed (more than [`GRACE_S`] late), left out.
    pub late: u64,
}

impl History {
    /// Adds a journey that started at `start_unix`, recorded at `now_unix` (seconds).
    pub fn record(&mut self, now_unix: u64, start_unix: u64, journey: &Journey) {
        self.close_before(now_unix);
        let start = start_unix - start_unix % 60;
        if self.done.back().is_some_and(|c| c.start_unix >= start) {
            self.late += 1;
            return;
        }
        let i = match self.open.iter().position(|m| m.start_unix >= start) {
            Some(i) if self.open[i].start_unix == start => i,
            found => {
                let i = found.unwrap_or(self.open.len());
                self.open.insert(
                    i,
                    Minute {
                        start_unix: start,
                        ..Minute::default()
                    },
                );
                i
            }
        };
        let m = &mut self.open[i];
        m.journeys += 1;
        for (stage, step) in steps(journey) {
            let (count, values) = m.steps.entry(stage).or_default();
            *count += 1;
            if values.len() == PER_MINUTE {
                values.pop_front();
            }
            values.push_back(step);
        }
    }

    /// Closes the minutes that ended more than [`GRACE_S`] before `now_unix`.
    fn close_before(&mut self, now_unix: u64) {
        while self
            .open
            .front()
            .is_some_and(|m| m.start_unix + 60 + GRACE_S <= now_unix)
        {
            if let Some(m) = self.open.pop_front() {
                if self.done.len() == MINUTES {
                    self.done.pop_front();
                }
                self.done.push_back(m.close());
            }
        }
    }

    /// The minutes with journeys among the current one (at `now_unix`, still filling) and the
    /// [`MINUTES`]` - 1` before it, oldest first: never more than [`MINUTES`].
    pub fn minutes(&self, now_unix: u64) -> Vec<Closed> {
        let current = now_unix - now_unix % 60;
        let since = current.saturating_sub((MINUTES as u64 - 1) * 60);
        self.done
            .iter()
            .cloned()
            .chain(self.open.iter().map(Minute::close))
            .filter(|m| m.start_unix >= since && m.start_unix <= current)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use groundzero::journey::{Hop, Outcome};

    fn journey(verdict_ns: u64) -> Journey {
        let hop = |stage, t_ns| Hop {
            stage,
            label: String::new(),
            t_ns,
            cpu: 0,
        };
        Journey {
            id: 1,
            start_ns: 0,
            family: 4,
            protocol: 17,
            src: "198.18.0.10".parse().unwrap(),
            dst: "198.18.0.1".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            ifindex: 3,
            reason: groundzero::Reason::NoMatch,
            outcome: Outcome::Delivered,
            drop_reason: None,
            drop_function: None,
            entry: None,
            hops: vec![
                hop("xdp", 0),
                hop("xdp_verdict", verdict_ns),
                hop("app", 10_000),
            ],
        }
    }

    #[test]
    fn minutes_close_in_order_and_an_hour_is_kept() {
        let mut h = History::default();
        let t0: u64 = 1_800_000_000; // a minute boundary
        h.record(t0 + 1, t0 + 1, &journey(100));
        h.record(t0 + 59, t0 + 59, &journey(300));
        h.record(t0 + 61, t0 + 61, &journey(500));
        let m = h.minutes(t0 + 61);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].start_unix, m[0].journeys), (t0, 2));
        let xdp = m[0].stages.iter().find(|s| s.stage == "xdp").unwrap();
        assert_eq!((xdp.count, xdp.p50_ns, xdp.p99_ns), (2, 300, 300));
        assert_eq!(m[0].stages[0].label, "XDP verdict");
        assert_eq!((m[1].start_unix, m[1].journeys), (t0 + 60, 1));
        // Two hours on, a journey every minute: at most an hour, the current minute included.
        for i in 0..(2 * MINUTES as u64) {
            let t = t0 + 120 + i * 60;
            h.record(t, t, &journey(1));
        }
        let now = t0 + 120 + (2 * MINUTES as u64 - 1) * 60;
        let m = h.minutes(now);
        assert_eq!(m.len(), MINUTES, "{m:?}");
        assert_eq!(m.last().unwrap().start_unix, now);
        assert!(m.windows(2).all(|w| w[0].start_unix < w[1].start_unix));
    }

    /// A journey counts in the minute it started, even when it is drained (or timed out) in
    /// the next one; one later than the grace period is left out and counted.
    #[test]
    fn journeys_count_in_the_minute_they_started() {
        let mut h = History::default();
        let t0: u64 = 1_800_000_000;
        h.record(t0 + 30, t0 + 30, &journey(100));
        h.record(t0 + 61, t0 + 62, &journey(200));
        // Started at t0 + 59, finished by the timeout at t0 + 62.
        h.record(t0 + 62, t0 + 59, &journey(300));
        let m = h.minutes(t0 + 62);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].start_unix, m[0].journeys), (t0, 2));
        assert_eq!((m[1].start_unix, m[1].journeys), (t0 + 60, 1));
        // Long after t0's minute closed, a journey that started in it.
        h.record(t0 + 100, t0 + 10, &journey(400));
        assert_eq!(h.late, 1);
        assert_eq!(h.minutes(t0 + 100)[0].journeys, 2);
    }
}
