//! From the daemon's and the library's own types to the API's wire types
//! ([`groundzero_api`]): the one place that knows both, so neither the registry nor the
//! journey hub needs to know how a reply is spelled.

use groundzero::journey as lib;
use groundzero_api::{
    journey::{HopStage, MatchCounts, MissingStage, Outcome, StageLatency, TraceStatus},
    labels::parse_stage,
    lists, Source, Stage,
};

use crate::records::Holder;

/// A holder as the API shows it.
pub fn holder(h: &Holder) -> lists::Holder {
    lists::Holder {
        created: h.created,
        expires: h.expires,
        reason: h.reason.clone(),
        source: Source::parse(&h.source),
    }
}

/// A kernel stage from the library's label for it. The library makes its labels with
/// [`Stage::label`], so every one parses; `xdp` stands in should that ever change.
fn stage(label: &str) -> Stage {
    parse_stage(label).unwrap_or_else(|e| {
        log::error!("journey: {e}");
        Stage::Xdp
    })
}

/// Tracing's state.
pub fn trace_status(t: &lib::TraceStatus) -> TraceStatus {
    TraceStatus {
        enabled: t.enabled,
        filter: t.filter.clone(),
        sample_every: t.sample_every,
        stages_missing: t
            .stages_missing
            .iter()
            .map(|m| MissingStage {
                hook: m.hook.to_string(),
                stage: stage(m.stage),
                why: m.why.clone(),
            })
            .collect(),
    }
}

/// One stage's latencies.
pub fn stage_latency(l: &lib::StageLatency) -> StageLatency {
    StageLatency {
        count: l.count,
        label: l.label.to_string(),
        p50_ns: l.p50_ns,
        p99_ns: l.p99_ns,
        stage: stage(l.stage),
    }
}

/// What the assembler could not match.
pub fn match_counts(c: &lib::assemble::MatchCounts) -> MatchCounts {
    MatchCounts {
        after_end: c.after_end,
        repeated: c.repeated,
        unknown_id: c.unknown_id,
        unseen_in_stack: c.unseen_in_stack,
    }
}

/// How a journey ended.
pub fn outcome(o: lib::Outcome) -> Outcome {
    match o {
        lib::Outcome::XdpDrop => Outcome::XdpDrop,
        lib::Outcome::Delivered => Outcome::Delivered,
        lib::Outcome::Consumed => Outcome::Consumed,
        lib::Outcome::KernelDrop => Outcome::KernelDrop,
        lib::Outcome::Incomplete => Outcome::Incomplete,
        lib::Outcome::Merged => Outcome::Merged,
    }
}

/// One hop of a journey.
pub fn hop(h: &lib::Hop) -> groundzero_api::journey::Hop {
    groundzero_api::journey::Hop {
        cpu: h.cpu,
        label: h.label.clone(),
        stage: if h.stage == HopStage::XDP_VERDICT {
            HopStage::XdpVerdict
        } else {
            HopStage::At(stage(h.stage))
        },
        t_ns: h.t_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_labels_are_the_wire_labels() {
        for o in lib::Outcome::ALL {
            assert_eq!(outcome(o).label(), o.label());
        }
        for (label, _) in lib::stats::LATENCY_STAGES {
            assert_eq!(parse_stage(label).map(|s| s.label()), Ok(label));
        }
        let h = lib::Hop {
            stage: "xdp_verdict",
            label: "XDP_PASS".into(),
            t_ns: 5,
            cpu: 1,
        };
        assert_eq!(hop(&h).stage, HopStage::XdpVerdict);
        let h = holder(&Holder {
            source: "feed:spamhaus".into(),
            reason: None,
            created: 1,
            expires: None,
        });
        assert_eq!(h.source, Source::Feed("spamhaus".into()));
    }
}
