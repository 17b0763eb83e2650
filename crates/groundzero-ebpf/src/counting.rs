//! The per-reason counters the verdict writes: the whole program's and each interface's, per CPU.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use groundzero_common::{
    maps::{interface_slot, Counter, InterfaceCounters, COUNTER_SLOTS, INTERFACE_SLOTS},
    Reason,
};

#[map(name = "counters")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);
#[map(name = "iface_counters")]
pub static IFACE_COUNTERS: PerCpuArray<InterfaceCounters> =
    PerCpuArray::with_max_entries(INTERFACE_SLOTS, 0);

/// Adds one packet of `bytes` to the program's counter of `reason`. The verdict no longer
/// writes it (see main.rs); the benchmark's pieces program measures what it cost.
#[allow(dead_code)]
#[inline(always)]
pub fn count_total(reason: Reason, bytes: u64) {
    if let Some(counter) = COUNTERS.get_ptr_mut(reason as u32) {
        // SAFETY: a live per-CPU map value; only this CPU writes it while this program runs.
        unsafe { add(counter, bytes) };
    }
}

/// Adds one packet of `bytes` to `ifindex`'s counter of `reason`.
#[inline(always)]
pub fn count_interface(reason: Reason, ifindex: u32, bytes: u64) {
    if let Some(iface) = IFACE_COUNTERS.get_ptr_mut(interface_slot(ifindex)) {
        // The mask proves the index in bounds to the verifier; reasons are < COUNTER_SLOTS.
        let index = (reason as usize) & (COUNTER_SLOTS as usize - 1);
        // SAFETY: as above.
        unsafe { add(core::ptr::addr_of_mut!((*iface).by_reason[index]), bytes) };
    }
}

#[inline(always)]
unsafe fn add(counter: *mut Counter, bytes: u64) {
    // SAFETY: the caller passes a live per-CPU map value.
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += bytes;
    }
}
