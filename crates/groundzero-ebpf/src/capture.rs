//! Packet capture, kernel side: called after the verdict only while a capture runs. Filters by
//! verdict, reason, interface and source; spends one CPU's share of the rate; sends the
//! metadata and the packet's first bytes to user space through the perf buffer of this CPU.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, PerCpuArray, PerfEventArray},
    programs::XdpContext,
};
use groundzero_common::{
    capture::{halves_v4, halves_v6, CaptureBucket, CaptureCtl, CaptureMeta, MAX_SNAPLEN},
    Action, Parsed, Reason,
};

// Names as in groundzero_common::capture.
#[map(name = "capture_ctl")]
static CAPTURE_CTL: Array<CaptureCtl> = Array::with_max_entries(1, 0);
#[map(name = "capture_bucket")]
static CAPTURE_BUCKET: PerCpuArray<CaptureBucket> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "capture_lost")]
static CAPTURE_LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
#[map(name = "capture_events")]
static CAPTURE_EVENTS: PerfEventArray<CaptureMeta> = PerfEventArray::new(0);

/// Captures this packet if the filter admits it and this CPU's budget allows.
#[inline(always)]
pub fn offer(ctx: &XdpContext, parsed: &Parsed, reason: Reason, ifindex: u32, len: usize) {
    let Some(ctl) = CAPTURE_CTL.get(0) else {
        return;
    };
    let pass = reason.action() == Action::Pass;
    if !ctl.admits(pass, reason as u32, ifindex) {
        return;
    }
    let (family, addr) = match parsed {
        Parsed::V4 { src, .. } => (4, halves_v4(*src)),
        Parsed::V6 { src, .. } => (6, halves_v6(*src)),
        _ => (0, [0, 0]),
    };
    if !ctl.admits_source(family, addr) {
        return;
    }
    let Some(bucket) = CAPTURE_BUCKET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a live per-CPU value; only this CPU touches it while this program runs.
    if !unsafe { (*bucket).take(now, ctl.cost_ns, ctl.budget_max_ns) } {
        if let Some(lost) = CAPTURE_LOST.get_ptr_mut(0) {
            // SAFETY: as above.
            unsafe { *lost += 1 };
        }
        return;
    }
    // The kernel copies `snaplen` bytes of the frame after the metadata; it must not exceed
    // the frame (the helper fails otherwise), and the mask keeps it inside the flag field.
    let snaplen = (ctl.snaplen.min(len as u32)) & MAX_SNAPLEN;
    let meta = CaptureMeta {
        ktime_ns: now,
        ifindex,
        packet_len: len as u32,
        captured_len: snaplen,
        // SAFETY: a helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        reason: reason as u32,
        _pad: 0,
    };
    // aya-ebpf's `output` puts its `flags` argument in the upper 32 bits of the helper's flags
    // (and BPF_F_CURRENT_CPU in the lower): exactly the context length field, so the helper
    // appends the first `snaplen` bytes of the packet. A full buffer loses the record; the
    // kernel reports that to the reader as a lost-samples record.
    CAPTURE_EVENTS.output(ctx, &meta, snaplen);
}
