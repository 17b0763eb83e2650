//! The groundzero XDP verdict program.
//!
//! Thin on purpose: parsing and the decision rules live in `groundzero-common` (shared with the
//! host model); this file only binds them to XDP context and BPF maps, and counts.
//! There is no error path: every packet ends in XDP_PASS or XDP_DROP, never XDP_ABORTED.
#![no_std]
#![no_main]
// BPF has atomic add (BPF_ATOMIC), but core does not expose AtomicU64::fetch_add for this target.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod capture;
mod journey;
mod lists;

use aya_ebpf::{
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use groundzero_common::{
    decide,
    maps::{interface_slot, Config, Counter, InterfaceCounters, COUNTER_SLOTS, INTERFACE_SLOTS},
    parse, PacketBytes,
};

use lists::KernelLists;

#[map(name = "counters")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map(name = "iface_counters")]
static IFACE_COUNTERS: PerCpuArray<InterfaceCounters> =
    PerCpuArray::with_max_entries(INTERFACE_SLOTS, 0);
#[map(name = "config")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Bounds-checked packet reads. The `start + offset + N > end` comparison on packet pointers is
/// the shape the verifier understands.
pub struct XdpBytes {
    start: usize,
    end: usize,
}

impl PacketBytes for XdpBytes {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let ptr = self.start + offset;
        if ptr + N > self.end {
            return None;
        }
        // SAFETY: the check above keeps [ptr, ptr + N) inside the packet.
        Some(unsafe { core::ptr::read_unaligned(ptr as *const [u8; N]) })
    }
}

#[xdp]
pub fn groundzero_xdp(ctx: XdpContext) -> u32 {
    let pkt = XdpBytes {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let Some(config) = CONFIG.get(0) else {
        return groundzero_common::Action::Pass as u32; // index 0 of an array always exists
    };
    // One branch when tracing is off: no clock read, no map access. When on, the verdict's
    // span starts here, before parsing.
    // Read once: user space may switch tracing on between two reads, and a packet sampled
    // without its entry clock would be timed from 0.
    let sample_every = config.sample_every;
    let entry_ns = if sample_every != 0 {
        journey::now()
    } else {
        0
    };
    let parsed = parse(&pkt);
    let sampled = if sample_every != 0 {
        journey::sample(&pkt, &parsed, config, sample_every, entry_ns)
    } else {
        journey::Sampled::Outside
    };
    let ifindex = ctx.ingress_ifindex() as u32;
    // Read once: monitor mode and the rate bucket prefix lengths share this word.
    let flags = config.flags;
    let lists = KernelLists {
        rate_pps: config.rate_pps,
        rate_burst: config.rate_burst,
        flags,
        ifindex,
    };
    let reason = decide(&parsed, &lists, Config::monitor_in(flags));
    let bytes = (pkt.end - pkt.start) as u64;
    // Totals and per-interface: two per-CPU slots, no atomics (only this CPU writes them).
    if let Some(counter) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: a live per-CPU map value; only this CPU writes it while this program runs.
        unsafe { count(counter, bytes) };
    }
    let slot = interface_slot(ifindex);
    if let Some(iface) = IFACE_COUNTERS.get_ptr_mut(slot) {
        // The mask proves the index in bounds to the verifier; reasons are < COUNTER_SLOTS.
        let index = (reason as usize) & (COUNTER_SLOTS as usize - 1);
        // SAFETY: as above.
        unsafe { count(core::ptr::addr_of_mut!((*iface).by_reason[index]), bytes) };
    }
    journey::finish(&ctx, sampled, reason);
    // One bit test when no capture runs: the word was read above for the verdict.
    if Config::capture_in(flags) {
        capture::offer(&ctx, &parsed, reason, ifindex, pkt.end - pkt.start);
    }
    reason.action() as u32
}

#[inline(always)]
unsafe fn count(counter: *mut Counter, bytes: u64) {
    // SAFETY: the caller passes a live per-CPU map value.
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += bytes;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
