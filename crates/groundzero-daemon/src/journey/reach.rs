//! How far recent sampled journeys got: the shares the estimated stage rates are scaled by.
//!
//! The estimates multiply the filtered population's counted passed rate (the last second) by
//! the share of sampled passed journeys that reached a stage. Both halves must describe the same
//! packets: the share is taken over the last [`REACH_WINDOW`] passed journeys, under the
//! current filter only (the window is emptied when the filter changes), and journeys that
//! passed XDP but were never seen after it (no tag in the skb, a full ring, a packet copied by
//! the stack) count in the denominator as having reached nothing.

use std::collections::VecDeque;

use groundzero::journey::{Journey, Outcome};

/// Passed journeys the shares are taken over.
pub const REACH_WINDOW: usize = 1024;

/// The stages each of the last passed journeys reached (an empty list: passed XDP, never seen
/// after it).
#[derive(Debug, Default)]
pub struct ReachWindow {
    recent: VecDeque<Vec<&'static str>>,
}

impl ReachWindow {
    /// A journey finished: counted if it passed XDP.
    pub fn record(&mut self, journey: &Journey) {
        self.record_stages(journey.outcome, journey.hops.iter().map(|h| h.stage));
    }

    fn record_stages(&mut self, outcome: Outcome, stages: impl Iterator<Item = &'static str>) {
        if outcome == Outcome::XdpDrop {
            return;
        }
        let mut stages: Vec<&'static str> = stages.collect();
        // Once per journey, whatever the hops: a share is never above 1.
        stages.sort_unstable();
        stages.dedup();
        self.push(stages);
    }

    /// `n` journeys passed XDP and were never seen after it.
    pub fn record_unseen(&mut self, n: u64) {
        for _ in 0..n.min(REACH_WINDOW as u64) {
            self.push(Vec::new());
        }
    }

    fn push(&mut self, stages: Vec<&'static str>) {
        if self.recent.len() == REACH_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(stages);
    }

    /// The sample filter changed: the journeys so far describe other packets.
    pub fn reset(&mut self) {
        self.recent.clear();
    }

    /// Passed journeys in the window, those never seen after XDP included (the denominator).
    pub fn passed(&self) -> usize {
        self.recent.len()
    }

    /// Of the passed journeys in the window, the share that reached `stage` (0 when empty).
    pub fn share(&self, stage: &str) -> f64 {
        if self.recent.is_empty() {
            return 0.0;
        }
        let reached = self.recent.iter().filter(|s| s.contains(&stage)).count();
        reached as f64 / self.recent.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey(w: &mut ReachWindow, outcome: Outcome, stages: &[&'static str]) {
        w.record_stages(outcome, stages.iter().copied());
    }

    #[test]
    fn unseen_journeys_count_in_the_denominator() {
        let mut w = ReachWindow::default();
        journey(
            &mut w,
            Outcome::Delivered,
            &["xdp", "socket", "socket", "app"],
        );
        journey(&mut w, Outcome::XdpDrop, &["xdp", "xdp_verdict"]);
        w.record_unseen(3);
        assert_eq!(w.passed(), 4);
        assert_eq!(w.share("socket"), 0.25);
        assert_eq!(w.share("gro"), 0.0);
    }

    #[test]
    fn the_window_keeps_only_recent_journeys_and_a_filter_change_empties_it() {
        let mut w = ReachWindow::default();
        for _ in 0..REACH_WINDOW {
            journey(&mut w, Outcome::Delivered, &["xdp", "app"]);
        }
        w.record_unseen(REACH_WINDOW as u64 / 2);
        assert_eq!(w.passed(), REACH_WINDOW);
        assert_eq!(w.share("app"), 0.5);
        w.reset();
        assert_eq!(w.passed(), 0);
        assert_eq!(w.share("app"), 0.0);
    }
}
