//! The verdict's lookups bound to BPF maps: allowlist, exact and prefix blocklists, and the
//! per-source token buckets of the rate limit.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{lpm_trie::Key, HashMap, LpmTrie, LruHashMap, RingBuf},
};
use groundzero_common::{
    maps::{EntryStats, DEFAULT_ALLOW_ENTRIES, DEFAULT_CIDR_ENTRIES, DEFAULT_EXACT_ENTRIES},
    ratelimit::{Bucket, RateEvent, RATE_BUCKETS, RATE_EXEMPT_ENTRIES, RATE_RING_BYTES},
    Lists,
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

// Names as in groundzero_common::ratelimit.
#[map(name = "rate_v4")]
static RATE_V4: LruHashMap<[u8; 4], Bucket> = LruHashMap::with_max_entries(RATE_BUCKETS, 0);
#[map(name = "rate_v6")]
static RATE_V6: LruHashMap<[u8; 16], Bucket> = LruHashMap::with_max_entries(RATE_BUCKETS, 0);
#[map(name = "rate_exempt_v4")]
static RATE_EXEMPT_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(RATE_EXEMPT_ENTRIES, 0);
#[map(name = "rate_exempt_v6")]
static RATE_EXEMPT_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(RATE_EXEMPT_ENTRIES, 0);
#[map(name = "rate_events")]
static RATE_EVENTS: RingBuf = RingBuf::with_byte_size(RATE_RING_BYTES, 0);

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

/// The lists for one packet; carries the rate limit settings read from the config map.
pub struct KernelLists {
    pub rate_pps: u32,
    pub rate_burst: u32,
    pub ifindex: u32,
}

/// Takes a token from an existing bucket and reports a source that went over its limit.
/// Returns true when the packet is over the limit.
#[inline(always)]
fn over_limit(
    bucket: *mut Bucket,
    lists: &KernelLists,
    now: u64,
    family: u32,
    addr: &[u8],
) -> bool {
    // SAFETY: a live LRU value; concurrent updates from other CPUs are tolerated by design (see
    // Bucket).
    let bucket = unsafe { &mut *bucket };
    if bucket.take(now, lists.rate_pps, lists.rate_burst) {
        return false;
    }
    if bucket.should_report(now) {
        report(lists, now, family, addr, bucket.dropped);
    }
    true
}

#[inline(always)]
fn report(lists: &KernelLists, now: u64, family: u32, addr: &[u8], dropped: u64) {
    let mut event = RateEvent {
        ts_ns: now,
        dropped,
        family,
        ifindex: lists.ifindex,
        addr: [0; 16],
    };
    let mut i = 0;
    while i < addr.len() && i < 16 {
        event.addr[i] = addr[i];
        i += 1;
    }
    // A full ring only delays the ban: the bucket reports again a second later.
    let _ = RATE_EVENTS.output::<RateEvent>(&event, 0);
}

macro_rules! kernel_lists {
    ($addr:ty, $bits:expr, $family:expr, $allow:ident, $exact:ident, $cidr:ident, $rate:ident, $exempt:ident) => {
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
            #[inline(always)]
            fn over_rate(&self, src: &$addr) -> bool {
                if self.rate_pps == 0 {
                    return false;
                }
                if $exempt.get(Key::new($bits, *src)).is_some() {
                    return false;
                }
                // SAFETY: a helper without preconditions.
                let now = unsafe { bpf_ktime_get_coarse_ns() };
                match $rate.get_ptr_mut(src) {
                    Some(bucket) => over_limit(bucket, self, now, $family, src),
                    None => {
                        // A new source starts with a full bucket. LRU: a flood of new sources
                        // evicts the oldest buckets, the insert never fails for lack of room.
                        let mut fresh = Bucket::full(self.rate_burst, now);
                        let over = !fresh.take(now, self.rate_pps, self.rate_burst);
                        let _ = $rate.insert(src, &fresh, 0);
                        over
                    }
                }
            }
        }
    };
}
kernel_lists!(
    [u8; 4],
    32,
    4,
    ALLOW_V4,
    BLOCK_V4,
    BLOCK_NET_V4,
    RATE_V4,
    RATE_EXEMPT_V4
);
kernel_lists!(
    [u8; 16],
    128,
    6,
    ALLOW_V6,
    BLOCK_V6,
    BLOCK_NET_V6,
    RATE_V6,
    RATE_EXEMPT_V6
);
