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
mod counting;
mod journey;
mod lists;
mod xdp_bytes;

use aya_ebpf::{
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use groundzero_common::{decide, maps::Config, parse};

use lists::KernelLists;
pub use xdp_bytes::XdpBytes;
#[map(name = "config")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[xdp]
pub fn groundzero_xdp(ctx: XdpContext) -> u32 {
    let pkt = XdpBytes {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let Some(config) = CONFIG.get(0) else {
        return groundzero_common::Action::Pass as u32; // index 0 of an array always exists
    };
    // One branch when tracing is off: no clock read, no map access. When on, a sampled
    // packet's span starts here, before parsing (the clock is read only for it).
    // Read once: user space may switch tracing on between two reads, and a packet sampled
    // without its entry clock would be timed from 0.
    let sample_every = config.sample_every;
    let entry_ns = if sample_every != 0 {
        journey::entry_clock(sample_every)
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
    // One per-CPU slot per packet, no atomics (only this CPU writes it): the interface's.
    // User space sums the interfaces for the totals (the `counters` map stays for programs
    // of older builds that may share these pins).
    counting::count_interface(reason, ifindex, bytes);
    journey::finish(&ctx, sampled, reason);
    // One bit test when no capture runs: the word was read above for the verdict.
    if Config::capture_in(flags) {
        capture::offer(&ctx, &parsed, reason, ifindex, pkt.end - pkt.start);
    }
    reason.action() as u32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
