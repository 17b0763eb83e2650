//! Attaching the observer programs and switching sampling on and off.
//!
//! Observers are attached only while tracing is on: with it off the stack runs without them and
//! the XDP program does one comparison more than before (`sample_every == 0`).
//!
//! Tracepoints (tp_btf) give the skeleton on any kernel with BTF: skb built, stack entry, TCP
//! receive, socket queue, application read, kernel drop with reason, consume. fentry hooks add
//! IP receive and the transport hand-off where the kernel allows BPF trampolines; where it does
//! not (ftrace locked down, a function inlined), each missing hook is reported with the
//! kernel's error and the other stages still work.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{fentry::FEntryLinkId, tp_btf::BtfTracePointLinkId, BtfTracePoint, FEntry},
    Btf,
};
use groundzero_common::journey::{
    FilteredCounts, FlowFilter, JourneyEvent, JourneyOffsets, Stage, JOURNEY_EVENTS,
    JOURNEY_FILTERED, JOURNEY_MAGIC, JOURNEY_OFFSETS,
};
use ipnet::IpNet;

use super::btf::KernelInfo;
use crate::{
    bpf::{config::ConfigMap, object::Object, ProgramStats},
    error::Error,
};

/// One observer: program name in the object, kernel hook, the stage it reports.
struct Observer {
    program: &'static str,
    hook: &'static str,
    kind: Kind,
    stage: Stage,
}

#[derive(Clone, Copy)]
enum Kind {
    TpBtf,
    FEntry,
}

const OBSERVERS: [Observer; 15] = [
    Observer {
        program: "gz_journey_socket",
        hook: "sk_data_ready",
        kind: Kind::TpBtf,
        stage: Stage::Socket,
    },
    Observer {
        program: "gz_journey_read",
        hook: "sock_recv_length",
        kind: Kind::TpBtf,
        stage: Stage::App,
    },
    Observer {
        program: "gz_journey_gro",
        hook: "napi_gro_receive_entry",
        kind: Kind::TpBtf,
        stage: Stage::Gro,
    },
    Observer {
        program: "gz_journey_stack",
        hook: "netif_receive_skb",
        kind: Kind::TpBtf,
        stage: Stage::Stack,
    },
    Observer {
        program: "gz_journey_tcp",
        hook: "tcp_probe",
        kind: Kind::TpBtf,
        stage: Stage::Transport,
    },
    Observer {
        program: "gz_journey_app",
        hook: "skb_copy_datagram_iovec",
        kind: Kind::TpBtf,
        stage: Stage::App,
    },
    Observer {
        program: "gz_journey_drop",
        hook: "kfree_skb",
        kind: Kind::TpBtf,
        stage: Stage::KernelDrop,
    },
    Observer {
        program: "gz_journey_consume",
        hook: "consume_skb",
        kind: Kind::TpBtf,
        stage: Stage::Consumed,
    },
    Observer {
        program: "gz_journey_ip4",
        hook: "ip_rcv_core",
        kind: Kind::FEntry,
        stage: Stage::Ip,
    },
    Observer {
        program: "gz_journey_ip6",
        hook: "ip6_rcv_core",
        kind: Kind::FEntry,
        stage: Stage::Ip,
    },
    Observer {
        program: "gz_journey_l4_v4",
        hook: "ip_protocol_deliver_rcu",
        kind: Kind::FEntry,
        stage: Stage::Transport,
    },
    Observer {
        program: "gz_journey_l4_v6",
        hook: "ip6_protocol_deliver_rcu",
        kind: Kind::FEntry,
        stage: Stage::Transport,
    },
    Observer {
        program: "gz_journey_coalesced",
        hook: "kfree_skb_partial",
        kind: Kind::FEntry,
        stage: Stage::Merged,
    },
    Observer {
        program: "gz_journey_gro_stolen",
        hook: "napi_skb_free_stolen_head",
        kind: Kind::FEntry,
        stage: Stage::Merged,
    },
    Observer {
        program: "gz_journey_gro_merged",
        hook: "__napi_kfree_skb",
        kind: Kind::FEntry,
        stage: Stage::Merged,
    },
];

/// The kernel hooks that observe `stage` (a stage is unobservable when all of them are missing).
pub fn observer_hooks(stage: Stage) -> impl Iterator<Item = &'static str> {
    OBSERVERS
        .iter()
        .filter(move |o| o.stage == stage)
        .map(|o| o.hook)
}

enum Link {
    Tp(&'static str, BtfTracePointLinkId),
    FEntry(&'static str, FEntryLinkId),
}

/// The tracer's state, kept inside a [`Shield`](crate::Shield): the observers' links, what
/// could not be observed, and the kernel offsets map once taken. It works on the object's
/// programs and the config map, handed in by the shield for each call.
#[derive(Default)]
pub(crate) struct Tracer {
    loaded: bool,
    links: Vec<Link>,
    missing: Vec<MissingStage>,
    offsets: Option<Array<MapData, groundzero_common::journey::JourneyOffsets>>,
    filtered: Option<PerCpuArray<MapData, FilteredCounts>>,
    /// The tag's salted magic, drawn on the first start and kept: a start while tracing runs
    /// (a new rate or filter) must not orphan the journeys already tagged.
    magic: u32,
}

/// A stage this kernel could not observe, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MissingStage {
    pub stage: &'static str,
    pub hook: &'static str,
    pub why: String,
}

/// What tracing is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TraceStatus {
    pub enabled: bool,
    pub sample_every: u32,
    /// The filter as text (`any` when everything may be sampled).
    pub filter: String,
    pub stages_missing: Vec<MissingStage>,
}

/// The ring buffer the kernel writes journey events into.
pub struct JourneyEvents {
    ring: RingBuf<MapData>,
}

impl JourneyEvents {
    /// Hands every event waiting in the ring to `f`; returns how many there were.
    pub fn drain(&mut self, mut f: impl FnMut(&JourneyEvent)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            if item.len() >= std::mem::size_of::<JourneyEvent>() {
                // SAFETY: the kernel wrote a whole JourneyEvent (#[repr(C)], any bit pattern
                // valid); read_unaligned because ring records are only 8-byte aligned.
                let ev = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const JourneyEvent) };
                f(&ev);
                n += 1;
            }
        }
        n
    }
}

impl AsRawFd for JourneyEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl AsFd for JourneyEvents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd lives as long as `self.ring`, which outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }
    }
}

impl Tracer {
    /// Starts journey tracing: writes the kernel offsets, attaches the observers (once) and
    /// turns sampling on (1 in `sample_every` of the packets `filter` admits). Called again while
    /// tracing runs, it only changes the sampling: journeys in flight keep being followed.
    pub(crate) fn start(
        &mut self,
        object: &mut Object,
        config: &mut ConfigMap,
        kernel: &KernelInfo,
        sample_every: u32,
        filter: FlowFilter,
    ) -> Result<Vec<MissingStage>, Error> {
        assert!(sample_every > 0, "sample_every must be at least 1");
        let offsets = match &mut self.offsets {
            Some(offsets) => offsets,
            None => {
                self.offsets
                    .insert(Array::try_from(object.take_map(JOURNEY_OFFSETS)?).map_err(
                        |source| Error::MapRead {
                            map: JOURNEY_OFFSETS,
                            source,
                        },
                    )?)
            }
        };
        if self.magic == 0 {
            self.magic = salted_magic();
        }
        let offsets_now = JourneyOffsets {
            magic: self.magic,
            ..kernel.offsets
        };
        offsets
            .set(0, offsets_now, 0)
            .map_err(|source| Error::MapWrite {
                map: JOURNEY_OFFSETS,
                source,
            })?;
        if self.filtered.is_none() {
            self.filtered = Some(
                PerCpuArray::try_from(object.take_map(JOURNEY_FILTERED)?).map_err(|source| {
                    Error::MapRead {
                        map: JOURNEY_FILTERED,
                        source,
                    }
                })?,
            );
        }
        self.attach_observers(object)?;
        set_sampling(config, sample_every, filter)?;
        Ok(self.missing.clone())
    }

    /// The packets the sample filter admitted since tracing first started, by verdict, summed
    /// over CPUs (counted by the XDP program; `None` before tracing started).
    pub(crate) fn filtered_counts(&self) -> Result<Option<FilteredCounts>, Error> {
        let Some(map) = &self.filtered else {
            return Ok(None);
        };
        let per_cpu = map.get(&0, 0).map_err(|source| Error::MapRead {
            map: JOURNEY_FILTERED,
            source,
        })?;
        let mut total = FilteredCounts::default();
        for c in per_cpu.iter() {
            total.seen += c.seen;
            total.passed += c.passed;
            total.dropped += c.dropped;
        }
        Ok(Some(total))
    }

    /// Stops sampling and detaches the observers. Journeys in flight end as incomplete.
    pub(crate) fn stop(
        &mut self,
        object: &mut Object,
        config: &mut ConfigMap,
    ) -> Result<(), Error> {
        config.update(|c| c.sample_every = 0)?;
        for link in std::mem::take(&mut self.links) {
            match link {
                Link::Tp(program, id) => {
                    let p: &mut BtfTracePoint = object.program_mut(program)?;
                    let _ = p.detach(id);
                }
                Link::FEntry(program, id) => {
                    let p: &mut FEntry = object.program_mut(program)?;
                    let _ = p.detach(id);
                }
            }
        }
        Ok(())
    }

    /// The kernel's run-time accounting summed over the attached observer programs (zero while
    /// tracing is off).
    pub(crate) fn observer_stats(&self, object: &Object) -> ProgramStats {
        let mut total = ProgramStats::default();
        if self.links.is_empty() {
            return total;
        }
        for o in &OBSERVERS {
            if let Some(s) = object.loaded_program_stats(o.program) {
                total.run_time_ns += s.run_time_ns;
                total.run_count += s.run_count;
            }
        }
        total
    }

    fn attach_observers(&mut self, object: &mut Object) -> Result<(), Error> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let btf = Btf::from_sys_fs().map_err(|e| Error::Journey(format!("kernel BTF: {e}")))?;
        let first_load = !self.loaded;
        let mut links = Vec::new();
        let mut missing = Vec::new();
        // BtfTracePoint and FEntry share `load(hook, btf)` and `attach()` but no trait.
        macro_rules! load_and_attach {
            ($ty:ty, $o:expr, $link:path) => {{
                let p: &mut $ty = object.program_mut($o.program)?;
                let loaded = if first_load {
                    p.load($o.hook, &btf)
                } else {
                    Ok(())
                };
                loaded
                    .and_then(|()| p.attach())
                    .map(|id| $link($o.program, id))
            }};
        }
        for o in &OBSERVERS {
            let result = match o.kind {
                Kind::TpBtf => load_and_attach!(BtfTracePoint, o, Link::Tp),
                Kind::FEntry => load_and_attach!(FEntry, o, Link::FEntry),
            };
            match result {
                Ok(link) => links.push(link),
                Err(e) => {
                    let mut why = crate::error::error_chain(&e);
                    if matches!(o.kind, Kind::FEntry) {
                        if let Some(hint) = ftrace_hint() {
                            why = format!("{why} ({hint})");
                        }
                    }
                    log::warn!(
                        "journey: cannot observe {} at {}: {why}",
                        o.stage.label(),
                        o.hook,
                    );
                    missing.push(MissingStage {
                        stage: o.stage.label(),
                        hook: o.hook,
                        why,
                    });
                }
            }
        }
        self.loaded = true;
        self.links = links;
        self.missing = missing;
        Ok(())
    }
}

/// [`JOURNEY_MAGIC`] with a random salt, never 0: tells this tracer's tags from those of any
/// other copy of the program loaded on the host (whose observers see our skbs, and ours theirs).
fn salted_magic() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (JOURNEY_MAGIC ^ h.finish() as u32) | 1
}

/// Changes sampling (1 in `sample_every` of the packets `filter` admits; 0 = off).
pub(crate) fn set_sampling(
    config: &mut ConfigMap,
    sample_every: u32,
    filter: FlowFilter,
) -> Result<(), Error> {
    config.update(|c| {
        c.sample_every = sample_every;
        c.sample_filter = filter;
    })
}

/// Takes the journey event ring buffer out of the object (once per shield).
pub(crate) fn take_events(object: &mut Object) -> Result<JourneyEvents, Error> {
    let ring =
        RingBuf::try_from(object.take_map(JOURNEY_EVENTS)?).map_err(|source| Error::MapRead {
            map: JOURNEY_EVENTS,
            source,
        })?;
    Ok(JourneyEvents { ring })
}

/// Why fentry may be refused, when the kernel says so elsewhere too: BPF trampolines sit on
/// ftrace, and a kernel that locks ftrace down also refuses to list the traceable functions.
fn ftrace_hint() -> Option<String> {
    const LIST: &str = "/sys/kernel/tracing/available_filter_functions";
    match std::fs::File::open(LIST) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(format!(
            "ftrace is locked down on this kernel: opening {LIST} gives '{e}' even to root"
        )),
        _ => None,
    }
}

/// Parses a sampling filter: words `tcp`, `udp`, `icmp`, `icmpv6`, `port N`, `src PREFIX`, or
/// `any`, in any order, e.g. `udp port 7000 src 198.18.0.0/24`.
pub fn parse_filter(text: &str) -> Result<FlowFilter, String> {
    let mut f = FlowFilter::default();
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        match word {
            "any" => {}
            "tcp" => f.protocol = 6,
            "udp" => f.protocol = 17,
            "icmp" => f.protocol = 1,
            "icmpv6" => f.protocol = 58,
            "port" => {
                let value = words.next().ok_or("`port` needs a number")?;
                f.port = value
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{value}` is not a port (1-65535)"))?;
            }
            "src" => {
                let value = words.next().ok_or("`src` needs an address or prefix")?;
                let net: IpNet = match value.parse() {
                    Ok(net) => net,
                    Err(_) => value
                        .parse::<std::net::IpAddr>()
                        .map(IpNet::from)
                        .map_err(|_| format!("`{value}` is not an address or prefix"))?,
                };
                f.prefix_len = net.prefix_len();
                match net.network() {
                    std::net::IpAddr::V4(a) => {
                        f.family = 4;
                        f.addr = [0; 16];
                        f.addr[..4].copy_from_slice(&a.octets());
                    }
                    std::net::IpAddr::V6(a) => {
                        f.family = 6;
                        f.addr = a.octets();
                    }
                }
            }
            other => {
                return Err(format!(
                    "unknown filter word `{other}` (expected tcp, udp, icmp, icmpv6, port N, src PREFIX or any)"
                ))
            }
        }
    }
    Ok(f)
}

/// The filter as text, the inverse of [`parse_filter`].
pub fn format_filter(f: &FlowFilter) -> String {
    let mut words = Vec::new();
    match f.protocol {
        0 => {}
        6 => words.push("tcp".to_string()),
        17 => words.push("udp".to_string()),
        1 => words.push("icmp".to_string()),
        58 => words.push("icmpv6".to_string()),
        n => words.push(format!("proto {n}")),
    }
    if f.port != 0 {
        words.push(format!("port {}", f.port));
    }
    if f.family == 4 {
        let a: [u8; 4] = f.addr[..4].try_into().expect("4 bytes");
        words.push(format!(
            "src {}/{}",
            std::net::Ipv4Addr::from(a),
            f.prefix_len
        ));
    } else if f.family == 6 {
        words.push(format!(
            "src {}/{}",
            std::net::Ipv6Addr::from(f.addr),
            f.prefix_len
        ));
    }
    if words.is_empty() {
        "any".into()
    } else {
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_round_trip_and_errors_name_the_word() {
        for text in [
            "any",
            "udp port 7000",
            "tcp src 198.18.0.0/24",
            "src 2001:2::/48",
        ] {
            let f = parse_filter(text).unwrap();
            assert_eq!(format_filter(&f), text);
        }
        assert_eq!(
            format_filter(&parse_filter("src 198.18.0.7").unwrap()),
            "src 198.18.0.7/32"
        );
        assert!(parse_filter("port").unwrap_err().contains("needs a number"));
        assert!(parse_filter("port 0")
            .unwrap_err()
            .contains("`0` is not a port"));
        assert!(parse_filter("src 300.1.1.1")
            .unwrap_err()
            .contains("`300.1.1.1`"));
        assert!(parse_filter("sctp")
            .unwrap_err()
            .contains("unknown filter word `sctp`"));
    }
}
