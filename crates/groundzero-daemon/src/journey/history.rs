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

/// The last [`MINUTES`] minutes that had journeys, and the current one.
#[derive(Default)]
pub struct History {
    current: Option<Minute>,
    done: VecDeque<Closed>,
}

impl History {
    /// Adds a journey finished at `now_unix` (seconds).
    pub fn record(&mut self, now_unix: u64, journey: &Journey) {
        let start = now_unix - now_unix % 60;
        if self.current.as_ref().is_some_and(|m| m.start_unix != start) {
            if let Some(m) = self.current.take() {
                self.push(m.close());
            }
        }
        let m = self.current.get_or_insert_with(|| Minute {
            start_unix: start,
            ..Minute::default()
        });
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

    fn push(&mut self, closed: Closed) {
        if self.done.len() == MINUTES {
            self.done.pop_front();
        }
        self.done.push_back(closed);
    }

    /// The minutes within the last hour before `now_unix`, oldest first, the current one
    /// (still filling) last.
    pub fn minutes(&self, now_unix: u64) -> Vec<Closed> {
        let since = now_unix.saturating_sub(MINUTES as u64 * 60);
        self.done
            .iter()
            .cloned()
            .chain(self.current.as_ref().map(Minute::close))
            .filter(|m| m.start_unix + 60 > since)
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
        h.record(t0 + 1, &journey(100));
        h.record(t0 + 59, &journey(300));
        h.record(t0 + 61, &journey(500));
        let m = h.minutes(t0 + 61);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].start_unix, m[0].journeys), (t0, 2));
        let xdp = m[0].stages.iter().find(|s| s.stage == "xdp").unwrap();
        assert_eq!((xdp.count, xdp.p50_ns, xdp.p99_ns), (2, 300, 300));
        assert_eq!(m[0].stages[0].label, "XDP verdict");
        assert_eq!((m[1].start_unix, m[1].journeys), (t0 + 60, 1));
        // Two hours on: both minutes have left the window.
        for i in 0..(MINUTES as u64 + 5) {
            h.record(t0 + 120 + i * 60, &journey(1));
        }
        let m = h.minutes(t0 + 120 + (MINUTES as u64 + 4) * 60);
        assert!(m.len() <= MINUTES + 1);
        assert!(m.iter().all(|x| x.start_unix > t0 + 60), "{m:?}");
    }
}
