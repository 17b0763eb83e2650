//! Journey tracing, kernel side: the XDP program's sampling, and the observer programs that
//! follow a sampled packet through the stack. Observers never change a packet; user space
//! attaches them only while tracing is on, so with tracing off the stack runs untouched.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, fentry, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, FEntryContext, XdpContext},
    EbpfContext,
};
use groundzero_common::{
    journey::{
        FilteredCounts, JourneyEvent, JourneyMeta, JourneyOffsets, Stage, JOURNEY_RING_BYTES,
    },
    maps::Config,
    Action, PacketBytes, Parsed, Reason,
};

use crate::XdpBytes;

// Names as in groundzero_common::journey.
#[map(name = "journey_events")]
static JOURNEY_EVENTS: RingBuf = RingBuf::with_byte_size(JOURNEY_RING_BYTES, 0);
/// UDP sockets with a sampled datagram queued → reads counted since we started watching.
#[map(name = "journey_udp_reads")]
static JOURNEY_UDP_READS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);
/// (socket, the read count at which a sampled datagram is read) → sample id. UDP sockets are
/// FIFO, so the datagram is read by exactly that recvmsg.
#[map(name = "journey_udp_pending")]
static JOURNEY_UDP_PENDING: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(8192, 0);
#[map(name = "journey_offsets")]
static JOURNEY_OFFSETS: Array<JourneyOffsets> = Array::with_max_entries(1, 0);
/// Per CPU: [packets seen by the filter since the last sample, samples taken].
#[map(name = "journey_ticks")]
static JOURNEY_TICKS: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);
/// Per CPU: the packets the sample filter admits, by verdict.
#[map(name = "journey_filtered")]
static JOURNEY_FILTERED: PerCpuArray<FilteredCounts> = PerCpuArray::with_max_entries(1, 0);
/// Sample id → the first skb a stack-path hook saw carrying its tag. A clone (an AF_PACKET
/// reader's copy) shares the data and so the tag, but not the skb: observers ignore any other
/// skb with the same tag. The free hooks remove the journey's entry, so the table holds only
/// journeys in flight (at most a few thousand even at 1 in 1 on a busy link); LRU eviction
/// covers journeys whose free no hook saw.
#[map(name = "journey_skbs")]
static JOURNEY_SKBS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(8192, 0);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What sampling made of a packet.
pub enum Sampled {
    /// Outside the sample filter (or tracing off).
    Outside,
    /// In the filter, not taken.
    Matched,
    /// Taken: the start of its XDP event (flow filled in, entry clock).
    Taken(JourneyEvent),
}

/// The clock, read at program entry when tracing is on: the verdict's span starts here.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The entry clock, read only when the next packet the filter admits on this CPU is the one
/// to sample (otherwise 0). A clock read costs tens of ns here: read on every packet while
/// tracing was on, it was most of what sampling 1 in 64 cost (BENCHMARKS.md part 4). Packets
/// the filter refuses still read it while this CPU waits for its sample, so with a narrow
/// filter the saving is smaller.
#[inline(always)]
pub fn entry_clock(sample_every: u32) -> u64 {
    match JOURNEY_TICKS.get(0) {
        Some(ticks) if ticks[0].saturating_add(1) < sample_every => 0,
        _ => now(),
    }
}

/// Decides whether to follow this packet. Called only when sampling is on, with the clock read
/// at program entry (`entry_ns`) and the rate read once with it (`sample_every`).
///
/// The decision works on locals; the event is built only for the packet that is taken
/// (building it first, for every packet, cost ~40 ns per packet at 1 in 64, measured).
#[inline(always)]
pub fn sample(
    pkt: &XdpBytes,
    parsed: &Parsed,
    config: &Config,
    sample_every: u32,
    entry_ns: u64,
) -> Sampled {
    match taken(pkt, parsed, config, sample_every, entry_ns) {
        Some(Some(ev)) => Sampled::Taken(ev),
        Some(None) => Sampled::Matched,
        None => Sampled::Outside,
    }
}

/// `None`: outside the filter; `Some(None)`: in it, not taken.
#[inline(always)]
fn taken(
    pkt: &XdpBytes,
    parsed: &Parsed,
    config: &Config,
    sample_every: u32,
    entry_ns: u64,
) -> Option<Option<JourneyEvent>> {
    let (family, protocol, src, l3, l4): (u8, u8, &[u8], usize, usize) = match parsed {
        Parsed::V4 {
            src,
            protocol,
            l3_offset,
            l4_offset,
        } => (4, *protocol, src, *l3_offset, *l4_offset),
        Parsed::V6 {
            src,
            next_header,
            l3_offset,
            l4_offset,
        } => (6, *next_header, src, *l3_offset, *l4_offset),
        // Non-IP and malformed packets have no flow to follow.
        _ => return None,
    };
    let (mut src_port, mut dst_port) = (0, 0);
    if protocol == IPPROTO_TCP || protocol == IPPROTO_UDP {
        if let Some(ports) = pkt.load::<4>(l4) {
            src_port = u16::from_be_bytes([ports[0], ports[1]]);
            dst_port = u16::from_be_bytes([ports[2], ports[3]]);
        }
    }
    if !config
        .sample_filter
        .matches(protocol, src, src_port, dst_port)
    {
        return None;
    }
    let Some(ticks) = JOURNEY_TICKS.get_ptr_mut(0) else {
        return Some(None);
    };
    // SAFETY: a live per-CPU value; only this CPU touches it while this program runs.
    let ticks = unsafe { &mut *ticks };
    ticks[0] += 1;
    if ticks[0] < sample_every {
        return Some(None);
    }
    ticks[0] = 0;
    ticks[1] = ticks[1].wrapping_add(1);

    let mut ev = JourneyEvent::default();
    ev.family = family;
    ev.protocol = protocol;
    ev.src_port = src_port;
    ev.dst_port = dst_port;
    // Typed arrays, not the `src` slice: a slice copy carries a bounds check whose panic path
    // the verifier refuses.
    match parsed {
        Parsed::V4 { src, .. } => {
            let Some(dst) = pkt.load::<4>(l3 + 16) else {
                return Some(None);
            };
            ev.src[..4].copy_from_slice(src);
            ev.dst[..4].copy_from_slice(&dst);
        }
        Parsed::V6 { src, .. } => {
            // Halves: a 16-byte packet read becomes a byte-wise memmove call in BPF.
            let (Some(hi), Some(lo)) = (pkt.load::<8>(l3 + 24), pkt.load::<8>(l3 + 32)) else {
                return Some(None);
            };
            ev.src = *src;
            ev.dst[..8].copy_from_slice(&hi);
            ev.dst[8..].copy_from_slice(&lo);
        }
        _ => return Some(None),
    }
    // Unique without a shared counter: the CPU in the top byte, a per-CPU sequence below.
    // SAFETY: a helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    ev.id = (cpu << 24) | (ticks[1] & 0x00ff_ffff);
    ev.cpu = cpu;
    ev.stage = Stage::Xdp as u8;
    // `entry_clock` read the clock for exactly this case (same CPU, same rate, ticks untouched
    // in between); the fallback only guards against a journey ever timed from 0.
    ev.ts_ns = if entry_ns != 0 { entry_ns } else { now() };
    Some(Some(ev))
}

/// After the verdict: counts a packet in the filter, and for a sampled one tags it (when it
/// passes) and reports its verdict, stamping the end as late as the program can.
#[inline(always)]
pub fn finish(ctx: &XdpContext, sampled: Sampled, reason: Reason) {
    let ev = match sampled {
        Sampled::Outside => return,
        Sampled::Matched => {
            count_filtered(reason);
            return;
        }
        Sampled::Taken(ev) => ev,
    };
    count_filtered(reason);
    let mut ev = ev;
    ev.reason = reason as u8;
    ev.extra = ctx.ingress_ifindex() as u32;
    if reason.action() == Action::Pass {
        if let Some(off) = JOURNEY_OFFSETS.get(0) {
            tag(ctx, off.magic, ev.id);
        }
    }
    // After the tag: the span covers bpf_xdp_adjust_meta too. Outside it: the ring write, and
    // after this function the capture offer and the program's return.
    ev.aux = now();
    // A full ring loses this journey; user space counts ids it never saw start as unmatched.
    let _ = JOURNEY_EVENTS.output::<JourneyEvent>(&ev, 0);
}

#[inline(always)]
fn count_filtered(reason: Reason) {
    let Some(c) = JOURNEY_FILTERED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a live per-CPU value; only this CPU touches it while this program runs.
    unsafe {
        (*c).seen += 1;
        if reason.action() == Action::Pass {
            (*c).passed += 1;
        } else {
            (*c).dropped += 1;
        }
    }
}

/// Puts [`JourneyMeta`] in the XDP metadata area, which the kernel carries into the skb.
#[inline(always)]
fn tag(ctx: &XdpContext, magic: u32, id: u32) {
    if magic == 0 {
        return; // offsets not written yet
    }
    let md = ctx.as_ptr() as *mut xdp_md;
    let len = core::mem::size_of::<JourneyMeta>() as i32;
    // SAFETY: `md` is this program's context; the helper checks the room itself.
    if unsafe { aya_ebpf::helpers::generated::bpf_xdp_adjust_meta(md, -len) } != 0 {
        return; // no headroom or no metadata support: the journey ends at XDP, unmatched
    }
    // Packet pointers must be re-read after adjusting the metadata.
    let meta = ctx.metadata();
    if meta + core::mem::size_of::<JourneyMeta>() > ctx.data() {
        return;
    }
    // SAFETY: the check above proves [meta, meta + 8) lies inside the metadata area.
    unsafe { core::ptr::write_unaligned(meta as *mut JourneyMeta, JourneyMeta { magic, id }) };
}

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a fault returns an error, not a crash.
    unsafe { bpf_probe_read_kernel(addr as *const T).ok() }
}

/// The sample id an skb carries, if the XDP program tagged it.
///
/// Every observer reads the tag from the skb itself: the kernel zeroes `meta_len` whenever it
/// allocates an skb, and only a packet that passed through our XDP tagging has exactly our
/// length and this tracer's magic in front of its MAC header. The one table, id → the first skb
/// a stack-path hook saw with that tag, is keyed by the tag, so a freed and reused skb address cannot join
/// another journey; it only tells the journey's skb from a clone sharing its data (an
/// AF_PACKET reader's copy). A packet the stack copies into a new skb (`skb_share_check` on a
/// shared skb) is lost from view there and ends incomplete rather than followed twice.
#[inline(always)]
fn sample_id(skb: u64, hook: Hook) -> Option<u32> {
    let off = JOURNEY_OFFSETS.get(0)?;
    let head: u64 = read(skb + off.skb_head as u64)?;
    let end: u32 = read(skb + off.skb_end as u64)?;
    let meta_len: u8 = read(head + end as u64 + off.shinfo_meta_len as u64)?;
    let ours = core::mem::size_of::<JourneyMeta>();
    if meta_len as usize != ours {
        return None;
    }
    let mac: u16 = read(skb + off.skb_mac_header as u64)?;
    // 0xffff means "no MAC header set".
    if (mac as usize) < ours || mac == 0xffff {
        return None;
    }
    let meta: JourneyMeta = read(head + mac as u64 - ours as u64)?;
    if meta.magic != off.magic || off.magic == 0 {
        return None;
    }
    // Only the first skb a stack-path hook sees with this tag is the journey's; a clone shares
    // the tag.
    // SAFETY: copied at once.
    match (unsafe { JOURNEY_SKBS.get(&meta.id) }.copied(), hook) {
        (Some(first), _) if first != skb => return None,
        (Some(_), Hook::Free) => {
            // The journey's skb is gone: its address may be reused, and the entry is no
            // longer needed to tell a clone.
            let _ = JOURNEY_SKBS.remove(&meta.id);
        }
        (Some(_), _) => {}
        (None, Hook::Claim) => {
            let _ = JOURNEY_SKBS.insert(&meta.id, &skb, 0);
        }
        // A packet socket's clone is queued, read and freed before (in generic mode) or
        // without the original reaching a stack-path hook: it must never claim the journey.
        (None, _) => return None,
    }
    Some(meta.id)
}

/// Where an observer sits, which decides what it may do with the id → first-skb table.
#[derive(Clone, Copy)]
enum Hook {
    /// The stack's receive path (GRO, netif_receive_skb, IP, L4, tcp_probe) and the queueing on
    /// an IP socket: a packet socket's clone never passes here, so the first skb seen here is
    /// the journey's.
    Claim,
    /// Reads, and queueing on any other socket: a packet socket's clone is queued and read too
    /// (in generic mode before the original reaches IP), so these only compare.
    Compare,
    /// Frees: compare, and for the journey's skb remove its entry.
    Free,
}

/// Reports `stage` for `skb` if it is a sampled packet.
#[inline(always)]
fn seen(skb: u64, hook: Hook, stage: Stage, extra: u32, aux: u64) {
    if let Some(id) = sample_id(skb, hook) {
        emit_stage(id, stage, extra, aux);
    }
}

#[inline(always)]
fn emit_stage(id: u32, stage: Stage, extra: u32, aux: u64) {
    let ev = JourneyEvent {
        ts_ns: now(),
        // SAFETY: a helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        id,
        stage: stage as u8,
        extra,
        aux,
        ..JourneyEvent::default()
    };
    let _ = JOURNEY_EVENTS.output::<JourneyEvent>(&ev, 0);
}

// Tracepoints (tp_btf): available wherever BTF is.

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn gz_journey_gro(ctx: BtfTracePointContext) -> i32 {
    seen(ctx.arg(0), Hook::Claim, Stage::Gro, 0, 0);
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn gz_journey_stack(ctx: BtfTracePointContext) -> i32 {
    seen(ctx.arg(0), Hook::Claim, Stage::Stack, 0, 0);
    0
}

/// TCP segments on an established connection (`tcp_rcv_established`).
#[btf_tracepoint(function = "tcp_probe")]
pub fn gz_journey_tcp(ctx: BtfTracePointContext) -> i32 {
    seen(ctx.arg(1), Hook::Claim, Stage::Transport, 0, 0);
    0
}

#[btf_tracepoint(function = "skb_copy_datagram_iovec")]
pub fn gz_journey_app(ctx: BtfTracePointContext) -> i32 {
    seen(ctx.arg(0), Hook::Compare, Stage::App, 0, 0);
    0
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn gz_journey_drop(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    seen(
        ctx.arg(0),
        Hook::Free,
        Stage::KernelDrop,
        reason as u32,
        ctx.arg(1),
    );
    0
}

#[btf_tracepoint(function = "consume_skb")]
pub fn gz_journey_consume(ctx: BtfTracePointContext) -> i32 {
    seen(ctx.arg(0), Hook::Free, Stage::Consumed, 0, ctx.arg(1));
    0
}

const IPPROTO_UDP_SK: u16 = 17;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const MSG_PEEK: i32 = 2;

/// Data was queued on a socket and its reader woken. The skb is the tail of the receive queue.
#[inline(always)]
fn socket_ready(sk: u64) -> Option<()> {
    let off = JOURNEY_OFFSETS.get(0)?;
    let queue = sk + off.sock_receive_queue as u64;
    let tail: u64 = read(queue + off.list_prev as u64)?;
    if tail == queue {
        return None; // empty: the list head points at itself
    }
    let family: u16 = read(sk + off.sock_family as u64)?;
    let hook = if family == AF_INET || family == AF_INET6 {
        Hook::Claim
    } else {
        Hook::Compare
    };
    let id = sample_id(tail, hook)?;
    emit_stage(id, Stage::Socket, 0, 0);
    let protocol: u16 = read(sk + off.sock_protocol as u64)?;
    if protocol == IPPROTO_UDP_SK {
        // Ours is the last of `queued + in the reader's queue`: that many reads reach it.
        let queued: u32 = read(queue + off.list_qlen as u64)?;
        let reader: u32 = read(sk + off.udp_reader_queue as u64 + off.list_qlen as u64)?;
        let reads = match JOURNEY_UDP_READS.get_ptr(&sk) {
            // SAFETY: a live map value, copied at once.
            Some(reads) => unsafe { *reads },
            None => {
                let _ = JOURNEY_UDP_READS.insert(&sk, &0, 0);
                0
            }
        };
        let target = reads + queued as u64 + reader as u64;
        let _ = JOURNEY_UDP_PENDING.insert(&[sk, target], &id, 0);
    }
    Some(())
}

#[inline(always)]
fn udp_read(sk: u64, ret: i32, flags: i32) -> Option<()> {
    if ret < 0 || flags & MSG_PEEK != 0 {
        return None;
    }
    let reads = JOURNEY_UDP_READS.get_ptr_mut(&sk)?;
    // SAFETY: a live map value; reads of one socket are serialised by its socket lock.
    let n = unsafe {
        *reads += 1;
        *reads
    };
    // SAFETY: copied at once.
    let id = unsafe { JOURNEY_UDP_PENDING.get(&[sk, n]) }.copied()?;
    let _ = JOURNEY_UDP_PENDING.remove(&[sk, n]);
    emit_stage(id, Stage::App, 0, 0);
    Some(())
}

#[btf_tracepoint(function = "sk_data_ready")]
pub fn gz_journey_socket(ctx: BtfTracePointContext) -> i32 {
    let _ = socket_ready(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn gz_journey_read(ctx: BtfTracePointContext) -> i32 {
    let ret: i64 = ctx.arg(1);
    let flags: i64 = ctx.arg(2);
    let _ = udp_read(ctx.arg(0), ret as i32, flags as i32);
    0
}

// fentry: finer stages where the kernel allows trampolines (not where ftrace is locked down).

#[fentry(function = "ip_rcv_core")]
pub fn gz_journey_ip4(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(0), Hook::Claim, Stage::Ip, 0, 0);
    0
}

#[fentry(function = "ip6_rcv_core")]
pub fn gz_journey_ip6(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(0), Hook::Claim, Stage::Ip, 0, 0);
    0
}

#[fentry(function = "ip_protocol_deliver_rcu")]
pub fn gz_journey_l4_v4(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(1), Hook::Claim, Stage::Transport, 0, 0);
    0
}

#[fentry(function = "ip6_protocol_deliver_rcu")]
pub fn gz_journey_l4_v6(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(1), Hook::Claim, Stage::Transport, 0, 0);
    0
}

/// The segment's data was appended to another skb (TCP coalescing), this one is freed.
#[fentry(function = "kfree_skb_partial")]
pub fn gz_journey_coalesced(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(0), Hook::Free, Stage::Merged, 0, 0);
    0
}

/// GRO merged the segment into the packet it holds and freed the stolen head.
#[fentry(function = "napi_skb_free_stolen_head")]
pub fn gz_journey_gro_stolen(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(0), Hook::Free, Stage::Merged, 1, 0);
    0
}

/// GRO merged the segment and freed the rest of it (GRO_MERGED_FREE).
#[fentry(function = "__napi_kfree_skb")]
pub fn gz_journey_gro_merged(ctx: FEntryContext) -> i32 {
    seen(ctx.arg(0), Hook::Free, Stage::Merged, 2, 0);
    0
}
