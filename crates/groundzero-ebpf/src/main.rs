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

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    programs::XdpContext,
};
use groundzero_common::{
    decide,
    maps::{
        interface_slot, Config, Counter, EntryStats, InterfaceCounters, COUNTER_SLOTS,
        DEFAULT_ALLOW_ENTRIES, DEFAULT_CIDR_ENTRIES, DEFAULT_EXACT_ENTRIES, INTERFACE_SLOTS,
    },
    parse, Lists, PacketBytes,
};

// Map names must match groundzero_common::maps::*; sizes are defaults user space may override.
#[map(name = "allow_v4")]
static ALLOW_V4: LpmTrie<[u8; 4], EntryStats> = LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, 0);
#[map(name = "allow_v6")]
static ALLOW_V6: LpmTrie<[u8; 16], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, 0);
#[map(name = "block_v4")]
static BLOCK_V4: HashMap<[u8; 4], EntryStats> = HashMap::with_max_entries(DEFAULT_EXACT_ENTRIES, 0);
#[map(name = "block_v6")]
static BLOCK_V6: HashMap<[u8; 16], EntryStats> =
    HashMap::with_max_entries(DEFAULT_EXACT_ENTRIES, 0);
#[map(name = "block_net_v4")]
static BLOCK_NET_V4: LpmTrie<[u8; 4], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_CIDR_ENTRIES, 0);
#[map(name = "block_net_v6")]
static BLOCK_NET_V6: LpmTrie<[u8; 16], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_CIDR_ENTRIES, 0);
#[map(name = "counters")]
static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map(name = "iface_counters")]
static IFACE_COUNTERS: PerCpuArray<InterfaceCounters> =
    PerCpuArray::with_max_entries(INTERFACE_SLOTS, 0);
#[map(name = "config")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Bounds-checked packet reads. The `start + offset + N > end` comparison on packet pointers is
/// the shape the verifier understands.
struct XdpBytes {
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

/// Counts a hit on a list entry. Shared by all CPUs, hence atomic.
#[inline(always)]
fn hit(stats: *const EntryStats) {
    // SAFETY: `stats` points at a live map value (just returned by a lookup); map values are
    // 8-byte aligned; the kernel keeps the element alive for the rest of this program run (RCU).
    unsafe {
        let stats = stats as *mut EntryStats;
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*stats).hits),
            1,
        );
        (*stats).last_hit_ns = bpf_ktime_get_coarse_ns();
    }
}

struct KernelLists;

macro_rules! kernel_lists {
    ($addr:ty, $bits:expr, $allow:ident, $exact:ident, $cidr:ident) => {
        impl Lists<$addr> for KernelLists {
            #[inline(always)]
            fn allowed(&self, src: &$addr) -> bool {
                match $allow.get(Key::new($bits, *src)) {
                    Some(stats) => {
                        hit(stats);
                        true
                    }
                    None => false,
                }
            }
            #[inline(always)]
            fn blocked_exact(&self, src: &$addr) -> bool {
                match $exact.get_ptr(src) {
                    Some(stats) => {
                        hit(stats);
                        true
                    }
                    None => false,
                }
            }
            #[inline(always)]
            fn blocked_cidr(&self, src: &$addr) -> bool {
                match $cidr.get(Key::new($bits, *src)) {
                    Some(stats) => {
                        hit(stats);
                        true
                    }
                    None => false,
                }
            }
        }
    };
}
kernel_lists!([u8; 4], 32, ALLOW_V4, BLOCK_V4, BLOCK_NET_V4);
kernel_lists!([u8; 16], 128, ALLOW_V6, BLOCK_V6, BLOCK_NET_V6);

#[xdp]
pub fn groundzero_xdp(ctx: XdpContext) -> u32 {
    let pkt = XdpBytes {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let monitor = match CONFIG.get(0) {
        Some(config) => config.monitor(),
        None => false,
    };
    let reason = decide(&parse(&pkt), &KernelLists, monitor);
    let bytes = (pkt.end - pkt.start) as u64;
    // Totals and per-interface: two per-CPU slots, no atomics (only this CPU writes them).
    if let Some(counter) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: a live per-CPU map value; only this CPU writes it while this program runs.
        unsafe { count(counter, bytes) };
    }
    let slot = interface_slot(ctx.ingress_ifindex() as u32);
    if let Some(iface) = IFACE_COUNTERS.get_ptr_mut(slot) {
        // The mask proves the index in bounds to the verifier; reasons are < COUNTER_SLOTS.
        let index = (reason as usize) & (COUNTER_SLOTS as usize - 1);
        // SAFETY: as above.
        unsafe { count(core::ptr::addr_of_mut!((*iface).by_reason[index]), bytes) };
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
