//! The counters table shared by `attach` and `demo`.
use std::time::Duration;

use groundzero::{Counters, Reason};

/// One line per reason that saw traffic: packets, bytes and, given an earlier snapshot and the
/// time since, the rate.
pub fn render(now: &Counters, rate_since: Option<(&Counters, Duration)>) -> String {
    let mut out = format!(
        "{:<8} {:<14} {:>14} {:>16}",
        "verdict", "reason", "packets", "bytes"
    );
    out.push_str(if rate_since.is_some() {
        "    packets/s\n"
    } else {
        "\n"
    });
    for (reason, total) in now.iter() {
        if total.packets == 0 && reason != Reason::NoMatch {
            continue;
        }
        out.push_str(&format!(
            "{:<8} {:<14} {:>14} {:>16}",
            reason.action().label(),
            reason.label(),
            total.packets,
            total.bytes,
        ));
        if let Some((earlier, elapsed)) = rate_since {
            let delta = now.since(earlier).get(reason).packets;
            out.push_str(&format!(
                " {:>12.0}",
                delta as f64 / elapsed.as_secs_f64().max(1e-9)
            ));
        }
        out.push('\n');
    }
    out
}
