//! From per-stage kernel events to whole journeys.
//!
//! Events arrive through one ring buffer from every CPU. A journey starts with its XDP event
//! (which carries the flow and the verdict) and ends at the application's read, a kernel drop,
//! a normal free, or a timeout. Events for ids that never started are counted as unmatched,
//! never attached to a guess.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::Kallsyms;
use groundzero_common::{
    journey::{JourneyEvent, Stage, MERGED_BY},
    Action, Reason,
};
use ipnet::IpNet;

/// How a journey ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Dropped by the XDP program.
    XdpDrop,
    /// Read by an application.
    Delivered,
    /// Freed after normal processing without an application read (a SYN, an ICMP echo...).
    Consumed,
    /// Dropped by the kernel; the reason is in [`Journey::drop_reason`].
    KernelDrop,
    /// Seen in the stack, then lost from view before any end (freed on a path without an
    /// observer, or still queued when the timeout passed).
    Incomplete,
    /// Its data was appended to another skb and this one freed: TCP coalescing or IP fragment
    /// reassembly (`kfree_skb_partial`), or a GRO merge (`napi_skb_free_stolen_head`,
    /// `__napi_kfree_skb`). The bytes travel on in the other skb's journey.
    Merged,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::XdpDrop,
        Outcome::Delivered,
        Outcome::Consumed,
        Outcome::KernelDrop,
        Outcome::Incomplete,
        Outcome::Merged,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::XdpDrop => "xdp_drop",
            Outcome::Delivered => "delivered",
            Outcome::Consumed => "consumed",
            Outcome::KernelDrop => "kernel_drop",
            Outcome::Incomplete => "incomplete",
            Outcome::Merged => "merged",
        }
    }
}

/// One point of a journey. `t_ns` is relative to the XDP hook.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Hop {
    /// `xdp`, `xdp_verdict`, `gro`, `stack`, `ip`, `transport`, `socket`, `app`,
    /// `kernel_drop`, `consumed`.
    pub stage: &'static str,
    /// Where in the kernel this was observed.
    pub label: String,
    pub t_ns: u64,
    /// The CPU it was observed on.
    pub cpu: u32,
}

/// The list entry that dropped a journey's packet, recorded when its drop event was drained
/// (by whoever knows the lists: the daemon's registry), so later list changes do not rewrite it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEntry {
    pub entry: IpNet,
    /// `true`: an exact entry, the packet's source itself (the kernel's key); `false`: a
    /// prefix looked up when the event arrived (the kernel cannot return an LPM key).
    pub exact: bool,
    /// Its first holder's source (`feed:NAME`, `app:NAME`, ...), reason and expiry.
    pub source: Option<String>,
    pub reason: Option<String>,
    pub expires_unix: Option<u64>,
    /// When it was recorded, Unix ms.
    pub at_unix_ms: u64,
}

/// A sampled packet's path, measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Journey {
    pub id: u32,
    /// CLOCK_MONOTONIC ns of the XDP hook.
    pub start_ns: u64,
    pub family: u8,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    pub reason: Reason,
    pub outcome: Outcome,
    /// The kernel's `skb_drop_reason` value for [`Outcome::KernelDrop`].
    pub drop_reason: Option<u32>,
    /// The function that dropped it, for [`Outcome::KernelDrop`] (from kallsyms; the address
    /// in hex when no symbol covers it).
    pub drop_function: Option<String>,
    /// For XDP drops by a list entry: the entry, recorded at drain time.
    pub entry: Option<RecordedEntry>,
    pub hops: Vec<Hop>,
}

impl Journey {
    pub fn verdict(&self) -> Action {
        self.reason.action()
    }

    pub fn total_ns(&self) -> u64 {
        self.hops.last().map_or(0, |h| h.t_ns)
    }

    /// "udp", "tcp", "icmp", "icmpv6" or the protocol number.
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            n => n.to_string(),
        }
    }
}

pub fn stage_hook(stage: Stage) -> &'static str {
    match stage {
        Stage::Xdp => "XDP hook",
        Stage::Gro => "skb built (napi_gro_receive)",
        Stage::Stack => "netif_receive_skb",
        Stage::Ip => "ip_rcv_core / ip6_rcv_core",
        Stage::Transport => "transport receive",
        Stage::Socket => "socket receive queue",
        Stage::App => "read by the application",
        Stage::KernelDrop => "kfree_skb",
        Stage::Consumed => "consume_skb",
        Stage::Merged => "merged into the previous segment",
    }
}

#[derive(Debug)]
struct Partial {
    journey: Journey,
}

/// Counts of what could not be matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MatchCounts {
    /// Passed at XDP but never seen by `netif_receive_skb` (no XDP metadata support, or the
    /// packet was redirected or dropped before the stack).
    pub unseen_in_stack: u64,
    /// Stage events whose XDP start was never seen (ring buffer full, or tracing restarted).
    pub unknown_id: u64,
    /// Stage events after their journey had ended: normal (a UDP skb is consumed after it
    /// was read, a TCP skb read in two calls), not an error.
    pub after_end: u64,
    /// A stage seen again in the same journey (TCP is seen at `ip_protocol_deliver_rcu` and
    /// again at `tcp_probe`): only the first occurrence counts.
    pub repeated: u64,
}

/// Functions whose `consume_skb` means "the application has read this datagram": UDP readers
/// copy with `copy_linear_skb`, which has no tracepoint, then free the skb here.
const READER_FREES: [&str; 3] = ["skb_consume_udp", "udp_recvmsg", "udpv6_recvmsg"];

/// Turns events into journeys.
#[derive(Debug)]
pub struct Assembler {
    symbols: Kallsyms,
    pending: HashMap<u32, Partial>,
    /// Ids recently completed, to tell late events from unknown ones.
    done: HashMap<u32, u64>,
    timeout_ns: u64,
    pub counts: MatchCounts,
}

impl Assembler {
    /// Journeys not ended within `timeout_ns` of their XDP hook are closed as incomplete.
    pub fn new(timeout_ns: u64) -> Self {
        Self::with_symbols(timeout_ns, Kallsyms::default())
    }

    /// With kernel symbols, drops and frees name the function that did them.
    pub fn with_symbols(timeout_ns: u64, symbols: Kallsyms) -> Self {
        Self {
            symbols,
            pending: HashMap::new(),
            done: HashMap::new(),
            timeout_ns,
            counts: MatchCounts::default(),
        }
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one event; returns the journey it completed, if any.
    pub fn feed(&mut self, ev: &JourneyEvent) -> Option<Journey> {
        let stage = Stage::from_u8(ev.stage)?;
        if stage == Stage::Xdp {
            let journey = start(ev)?;
            if journey.verdict() == Action::Drop {
                return Some(self.finish(journey));
            }
            // A reused id (per-CPU counter wrapped) replaces a stale partial.
            self.pending.insert(ev.id, Partial { journey });
            return None;
        }
        let Some(partial) = self.pending.get_mut(&ev.id) else {
            if self.done.contains_key(&ev.id) {
                self.counts.after_end += 1;
            } else {
                self.counts.unknown_id += 1;
            }
            return None;
        };
        let j = &mut partial.journey;
        let t_ns = ev.ts_ns.saturating_sub(j.start_ns);
        let function = self.symbols.function(ev.aux);
        // A datagram freed by its reader was delivered: that free is the application stage.
        let stage = match (stage, function) {
            (Stage::Consumed, Some(f)) if READER_FREES.contains(&f) => Stage::App,
            _ => stage,
        };
        if j.hops.iter().any(|h| h.stage == stage.label()) {
            self.counts.repeated += 1;
            return None;
        }
        let function = match stage {
            Stage::Merged => MERGED_BY.get(ev.extra as usize).copied(),
            _ => function,
        };
        let label = match function {
            Some(f) => format!("{} in {f}", stage_hook(stage)),
            None => stage_hook(stage).to_string(),
        };
        j.hops.push(Hop {
            stage: stage.label(),
            label,
            t_ns,
            cpu: ev.cpu,
        });
        let outcome = match stage {
            Stage::App => Some(Outcome::Delivered),
            Stage::KernelDrop => {
                j.drop_reason = Some(ev.extra);
                j.drop_function = Some(match function {
                    Some(f) => f.to_string(),
                    None => format!("{:#x}", ev.aux),
                });
                Some(Outcome::KernelDrop)
            }
            Stage::Consumed => Some(Outcome::Consumed),
            Stage::Merged => Some(Outcome::Merged),
            _ => None,
        }?;
        let mut journey = self.pending.remove(&ev.id)?.journey;
        journey.outcome = outcome;
        Some(self.finish(journey))
    }

    /// Closes journeys older than the timeout (`now_ns` is CLOCK_MONOTONIC, the kernel's clock).
    pub fn expire(&mut self, now_ns: u64) -> Vec<Journey> {
        let timeout = self.timeout_ns;
        let old: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ns.saturating_sub(p.journey.start_ns) > timeout)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::new();
        for id in old {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let mut journey = p.journey;
            // Only the XDP hops: the packet never reached the stack as far as we could see.
            if journey.hops.len() <= 2 {
                self.counts.unseen_in_stack += 1;
                self.done.insert(id, now_ns);
                continue;
            }
            journey.outcome = Outcome::Incomplete;
            out.push(self.finish(journey));
        }
        self.done
            .retain(|_, at| now_ns.saturating_sub(*at) <= 4 * timeout);
        out
    }

    fn finish(&mut self, journey: Journey) -> Journey {
        self.done.insert(journey.id, journey.start_ns);
        journey
    }
}

fn start(ev: &JourneyEvent) -> Option<Journey> {
    let reason = Reason::from_index(ev.reason as u32)?;
    let (src, dst) = match ev.family {
        4 => {
            let s: [u8; 4] = ev.src[..4].try_into().ok()?;
            let d: [u8; 4] = ev.dst[..4].try_into().ok()?;
            (IpAddr::V4(Ipv4Addr::from(s)), IpAddr::V4(Ipv4Addr::from(d)))
        }
        6 => (
            IpAddr::V6(Ipv6Addr::from(ev.src)),
            IpAddr::V6(Ipv6Addr::from(ev.dst)),
        ),
        _ => return None,
    };
    let verdict_hop = Hop {
        stage: "xdp_verdict",
        label: format!(
            "{} ({})",
            if reason.action() == Action::Drop {
                "XDP_DROP"
            } else {
                "XDP_PASS"
            },
            reason.label()
        ),
        t_ns: ev.aux.saturating_sub(ev.ts_ns),
        cpu: ev.cpu,
    };
    Some(Journey {
        id: ev.id,
        start_ns: ev.ts_ns,
        family: ev.family,
        protocol: ev.protocol,
        src,
        dst,
        src_port: ev.src_port,
        dst_port: ev.dst_port,
        ifindex: ev.extra,
        reason,
        outcome: Outcome::XdpDrop,
        drop_reason: None,
        drop_function: None,
        entry: None,
        hops: vec![
            Hop {
                stage: "xdp",
                label: stage_hook(Stage::Xdp).to_string(),
                t_ns: 0,
                cpu: ev.cpu,
            },
            verdict_hop,
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xdp(id: u32, ts: u64, reason: Reason) -> JourneyEvent {
        let mut ev = JourneyEvent {
            ts_ns: ts,
            aux: ts + 300,
            id,
            extra: 7,
            stage: Stage::Xdp as u8,
            family: 4,
            protocol: 17,
            reason: reason as u8,
            src_port: 40000,
            dst_port: 7000,
            ..Default::default()
        };
        ev.src[..4].copy_from_slice(&[198, 18, 0, 10]);
        ev.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
        ev
    }

    fn at(id: u32, stage: Stage, ts: u64, extra: u32) -> JourneyEvent {
        JourneyEvent {
            ts_ns: ts,
            id,
            stage: stage as u8,
            extra,
            ..Default::default()
        }
    }

    #[test]
    fn delivered_journey_has_every_hop_in_order() {
        let mut a = Assembler::new(1_000_000_000);
        assert!(a.feed(&xdp(1, 1000, Reason::NoMatch)).is_none());
        for (stage, ts) in [
            (Stage::Stack, 5000),
            (Stage::Ip, 6000),
            (Stage::Transport, 7000),
            (Stage::Socket, 8000),
        ] {
            assert!(a.feed(&at(1, stage, ts, 0)).is_none());
        }
        let j = a.feed(&at(1, Stage::App, 50_000, 0)).expect("complete");
        assert_eq!(j.outcome, Outcome::Delivered);
        let stages: Vec<_> = j.hops.iter().map(|h| h.stage).collect();
        assert_eq!(
            stages,
            [
                "xdp",
                "xdp_verdict",
                "stack",
                "ip",
                "transport",
                "socket",
                "app"
            ]
        );
        let times: Vec<_> = j.hops.iter().map(|h| h.t_ns).collect();
        assert_eq!(times, [0, 300, 4000, 5000, 6000, 7000, 49_000]);
        assert_eq!(j.src.to_string(), "198.18.0.10");
        assert_eq!(j.ifindex, 7);
        assert_eq!(a.pending(), 0);
    }

    #[test]
    fn a_datagram_freed_by_its_reader_was_delivered() {
        let symbols =
            Kallsyms::parse("ffffffff81000000 T skb_consume_udp\nffffffff81000100 T tcp_v4_rcv\n");
        let mut a = Assembler::with_symbols(1_000_000_000, symbols);
        a.feed(&xdp(1, 0, Reason::NoMatch));
        let mut ev = at(1, Stage::Consumed, 900, 0);
        ev.aux = 0xffffffff81000010;
        let j = a.feed(&ev).unwrap();
        assert_eq!(j.outcome, Outcome::Delivered);
        assert_eq!(j.hops.last().unwrap().stage, "app");
        assert_eq!(
            j.hops.last().unwrap().label,
            "read by the application in skb_consume_udp"
        );
        a.feed(&xdp(2, 0, Reason::NoMatch));
        let mut ev = at(2, Stage::Consumed, 900, 0);
        ev.aux = 0xffffffff81000110;
        let j = a.feed(&ev).unwrap();
        assert_eq!(j.outcome, Outcome::Consumed);
        assert_eq!(j.hops.last().unwrap().label, "consume_skb in tcp_v4_rcv");
    }

    #[test]
    fn xdp_drop_ends_at_once_and_later_events_are_late_not_matched() {
        let mut a = Assembler::new(1_000_000_000);
        let j = a
            .feed(&xdp(2, 10, Reason::BlockedExact))
            .expect("drop ends");
        assert_eq!(j.outcome, Outcome::XdpDrop);
        assert_eq!(j.hops.len(), 2);
        assert!(a.feed(&at(2, Stage::Stack, 20, 0)).is_none());
        assert_eq!(a.counts.after_end, 1);
        assert!(a.feed(&at(99, Stage::Stack, 20, 0)).is_none());
        assert_eq!(a.counts.unknown_id, 1);
    }

    #[test]
    fn a_stage_counts_once_and_a_merged_segment_ends_merged() {
        let mut a = Assembler::new(1_000_000_000);
        a.feed(&xdp(6, 0, Reason::NoMatch));
        a.feed(&at(6, Stage::Stack, 100, 0));
        a.feed(&at(6, Stage::Transport, 200, 0));
        // tcp_probe after ip_protocol_deliver_rcu: the same stage again.
        a.feed(&at(6, Stage::Transport, 300, 0));
        assert_eq!(a.counts.repeated, 1);
        let mut merged = at(6, Stage::Merged, 400, 0);
        merged.cpu = 3;
        let j = a.feed(&merged).expect("a merge ends the journey");
        assert_eq!(j.outcome, Outcome::Merged);
        let stages: Vec<_> = j.hops.iter().map(|h| (h.stage, h.t_ns)).collect();
        assert_eq!(
            stages,
            [
                ("xdp", 0),
                ("xdp_verdict", 300),
                ("stack", 100),
                ("transport", 200),
                ("merged", 400)
            ]
        );
        assert_eq!(
            j.hops.last().unwrap().label,
            "merged into the previous segment in kfree_skb_partial"
        );
        assert_eq!(j.hops.last().unwrap().cpu, 3);
    }

    #[test]
    fn kernel_drop_keeps_reason_and_timeouts_are_counted() {
        let mut a = Assembler::new(1000);
        a.feed(&xdp(3, 0, Reason::NoMatch));
        a.feed(&at(3, Stage::Stack, 100, 0));
        let mut drop = at(3, Stage::KernelDrop, 200, 5);
        drop.aux = 0xdead;
        let j = a.feed(&drop).unwrap();
        assert_eq!((j.outcome, j.drop_reason), (Outcome::KernelDrop, Some(5)));
        assert_eq!(
            j.drop_function.as_deref(),
            Some("0xdead"),
            "no symbol: the address"
        );

        a.feed(&xdp(4, 0, Reason::NoMatch)); // never reaches the stack
        a.feed(&xdp(5, 0, Reason::NoMatch));
        a.feed(&at(5, Stage::Stack, 10, 0)); // reaches it, then nothing
        assert!(a.expire(500).is_empty(), "not yet timed out");
        let expired = a.expire(2000);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].outcome, Outcome::Incomplete);
        assert_eq!(a.counts.unseen_in_stack, 1);
    }
}
