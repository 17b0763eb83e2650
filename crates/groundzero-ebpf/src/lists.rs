//! The verdict's lookups bound to BPF maps: allowlist, exact and prefix blocklists, and the
//! per-prefix token buckets of the rate limit.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use groundzero_common::{
    maps::{
        Config, EntryStats, DEFAULT_ALLOW_ENTRIES, DEFAULT_CIDR_ENTRIES, DEFAULT_EXACT_ENTRIES,
    },
    ratelimit::{
        rate_key_v4, rate_key_v6, Bucket, RateEvent, RATE_BUCKETS, RATE_EXEMPT_ENTRIES,
        RATE_RING_BYTES,
    },
    slots::{
        home_v4, home_v6, probe, SlotV4, SlotV6, EXACT_SLOTS, SLOT_EMPTY, SLOT_LIVE, SLOT_PROBES,
        SLOT_STATE, SLOT_TOMB,
    },
    summary::{
        exact_key_v4, exact_key_v6, key_bit, key_v4, key_v6, key_v6_low, SummarySlot,
        EXACT_BIT_WORDS, EXACT_SUMMARY_SLOTS, SUMMARY_BIT_WORDS, SUMMARY_SLOTS,
    },
    Lists,
};

// Map names must match groundzero_common::maps::*; sizes are defaults user space may override.
#[map(name = "allow_v4")]
pub static ALLOW_V4: LpmTrie<[u8; 4], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, 0);
#[map(name = "allow_v6")]
pub static ALLOW_V6: LpmTrie<[u8; 16], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_ALLOW_ENTRIES, 0);
#[map(name = "block_v4")]
pub static BLOCK_V4: HashMap<[u8; 4], EntryStats> =
    HashMap::with_max_entries(DEFAULT_EXACT_ENTRIES, 0);
#[map(name = "block_v6")]
pub static BLOCK_V6: HashMap<[u8; 16], EntryStats> =
    HashMap::with_max_entries(DEFAULT_EXACT_ENTRIES, 0);
#[map(name = "block_net_v4")]
pub static BLOCK_NET_V4: LpmTrie<[u8; 4], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_CIDR_ENTRIES, 0);
#[map(name = "block_net_v6")]
pub static BLOCK_NET_V6: LpmTrie<[u8; 16], EntryStats> =
    LpmTrie::with_max_entries(DEFAULT_CIDR_ENTRIES, 0);

// Names as in groundzero_common::summary; user space maps them into memory to count atomically.
#[map(name = "allow_sum_v4")]
pub static ALLOW_SUM_V4: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "allow_sum_v6")]
pub static ALLOW_SUM_V6: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_net_sum_v4")]
pub static BLOCK_NET_SUM_V4: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_net_sum_v6")]
pub static BLOCK_NET_SUM_V6: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "allow_sum_v6_low")]
pub static ALLOW_SUM_V6_LOW: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_net_sum_v6_low")]
pub static BLOCK_NET_SUM_V6_LOW: Array<SummarySlot> =
    Array::with_max_entries(SUMMARY_SLOTS, BPF_F_MMAPABLE);

// What the program reads of the prefix summaries: a bit per key, set by user space while the
// key's count (above, user space's bookkeeping) is not zero. An eighth of the counts' size, so
// a flood from many sources finds them in the caches.
#[map(name = "allow_bits_v4")]
pub static ALLOW_BITS_V4: Array<u64> = Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "allow_bits_v6")]
pub static ALLOW_BITS_V6: Array<u64> = Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "allow_bits_v6_low")]
pub static ALLOW_BITS_V6_LOW: Array<u64> =
    Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "block_net_bits_v4")]
pub static BLOCK_NET_BITS_V4: Array<u64> =
    Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "block_net_bits_v6")]
pub static BLOCK_NET_BITS_V6: Array<u64> =
    Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "block_net_bits_v6_low")]
pub static BLOCK_NET_BITS_V6_LOW: Array<u64> =
    Array::with_max_entries(SUMMARY_BIT_WORDS, BPF_F_MMAPABLE);

// The exact lists' summaries (groundzero_common::summary::exact_key_v4): user space counts the
// entries per key in `block_sum_*` and keeps a bit per key in `block_bits_*`, set while the
// count is not zero. The program reads the bits: a clear bit skips the hash lookup, the one
// helper call a passing packet would otherwise make. The counts stay declared so that they
// are pinned with the rest.
#[map(name = "block_sum_v4")]
pub static BLOCK_SUM_V4: Array<SummarySlot> =
    Array::with_max_entries(EXACT_SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_sum_v6")]
pub static BLOCK_SUM_V6: Array<SummarySlot> =
    Array::with_max_entries(EXACT_SUMMARY_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_bits_v4")]
pub static BLOCK_BITS_V4: Array<u64> = Array::with_max_entries(EXACT_BIT_WORDS, BPF_F_MMAPABLE);
#[map(name = "block_bits_v6")]
pub static BLOCK_BITS_V6: Array<u64> = Array::with_max_entries(EXACT_BIT_WORDS, BPF_F_MMAPABLE);

// The exact lists' slot tables (groundzero_common::slots): an index of the exact hashes that
// the verifier inlines, so that a blocked address is found without a helper call.
#[map(name = "block_slots_v4")]
pub static BLOCK_SLOTS_V4: Array<SlotV4> = Array::with_max_entries(EXACT_SLOTS, BPF_F_MMAPABLE);
#[map(name = "block_slots_v6")]
pub static BLOCK_SLOTS_V6: Array<SlotV6> = Array::with_max_entries(EXACT_SLOTS, BPF_F_MMAPABLE);

/// What a slot table says of an address.
pub enum Found {
    /// Listed: its slot, whose stats take the hit.
    Slot(*const EntryStats),
    /// Not listed: the probe met an empty slot first.
    Absent,
    /// Ask the hash: the window was full, or a slot changed under the probe.
    Hash,
}

/// Reads a slot's field as it is now (user space writes it at any time).
#[inline(always)]
unsafe fn now<T: Copy>(field: *const T) -> T {
    // SAFETY: the caller passes a field of a live array value.
    unsafe { core::ptr::read_volatile(field) }
}

/// What the probe needs of a slot type: where its tag and its stats are.
trait Slot {
    fn tag(slot: *const Self) -> *const u32;
    fn stats(slot: *const Self) -> *const EntryStats;
}

// Both slot types have their tag and stats under the same field names.
macro_rules! impl_slot {
    ($($ty:ty),*) => {$(
        impl Slot for $ty {
            #[inline(always)]
            fn tag(slot: *const Self) -> *const u32 {
                // SAFETY: a field address of a live array value, no read.
                unsafe { core::ptr::addr_of!((*slot).tag) }
            }
            #[inline(always)]
            fn stats(slot: *const Self) -> *const EntryStats {
                // SAFETY: as above.
                unsafe { core::ptr::addr_of!((*slot).stats) }
            }
        }
    )*};
}
impl_slot!(SlotV4, SlotV6);

/// The probe of a slot table from `home` (see groundzero_common::slots); `key_is` reads a live
/// slot's key and compares it with the source's.
#[inline(always)]
fn find<S: Slot>(table: &Array<S>, home: u32, key_is: impl Fn(*const S) -> bool) -> Found {
    let mut i = 0;
    while i < SLOT_PROBES {
        let Some(slot) = table.get_ptr(probe(home, i)) else {
            return Found::Hash;
        };
        // SAFETY: a live array value; the tag is read around the key.
        let tag = unsafe { now(S::tag(slot)) };
        match tag & SLOT_STATE {
            SLOT_EMPTY => return Found::Absent,
            SLOT_TOMB => {}
            SLOT_LIVE => {
                if key_is(slot) {
                    // SAFETY: as above.
                    if unsafe { now(S::tag(slot)) } != tag {
                        return Found::Hash;
                    }
                    return Found::Slot(S::stats(slot));
                }
            }
            _ => return Found::Hash,
        }
        i += 1;
    }
    Found::Hash
}

/// The probe of the IPv4 slot table for `src`.
#[inline(always)]
pub fn find_v4(src: &[u8; 4]) -> Found {
    let want = u32::from_ne_bytes(*src);
    find(&BLOCK_SLOTS_V4, home_v4(src), |slot| {
        // SAFETY: the key of a live array value, read as one word.
        unsafe { now(core::ptr::addr_of!((*slot).key) as *const u32) == want }
    })
}

/// The probe of the IPv6 slot table for `src`.
#[inline(always)]
pub fn find_v6(src: &[u8; 16]) -> Found {
    // SAFETY: [u8; 16] read as two unaligned native words.
    let (want_hi, want_lo) = unsafe {
        (
            core::ptr::read_unaligned(src.as_ptr() as *const u64),
            core::ptr::read_unaligned(src.as_ptr().add(8) as *const u64),
        )
    };
    find(&BLOCK_SLOTS_V6, home_v6(src), |slot| {
        // SAFETY: the key of a live array value, 8-byte aligned in the slot.
        unsafe {
            let key = core::ptr::addr_of!((*slot).key) as *const u64;
            now(key) == want_hi && now(key.add(1)) == want_lo
        }
    })
}

/// Whether the IPv4 exact hash may hold `src`.
#[inline(always)]
pub fn may_hold_v4(bits: &Array<u64>, src: &[u8; 4]) -> bool {
    bit_set(bits, exact_key_v4(src))
}

/// Whether the IPv6 exact hash may hold `src`.
#[inline(always)]
pub fn may_hold_v6(bits: &Array<u64>, src: &[u8; 16]) -> bool {
    bit_set(bits, exact_key_v6(src))
}

/// False only when the summary's count at `key` is zero (its bit is clear): no entry behind
/// it can match, and the lookup is skipped.
#[inline(always)]
fn bit_set(bits: &Array<u64>, key: u32) -> bool {
    let (word, bit) = key_bit(key);
    match bits.get(word) {
        Some(w) => *w & bit != 0,
        None => true,
    }
}

/// Whether the IPv4 prefix trie behind `summary` (its bitmap) may hold a match for `src`.
#[inline(always)]
pub fn may_match_v4(summary: &Array<u64>, _low: &Array<u64>, src: &[u8; 4]) -> bool {
    bit_set(summary, key_v4(src))
}

/// Whether the IPv6 prefix trie behind the two summaries (their bitmaps) may hold a match for
/// `src`.
#[inline(always)]
pub fn may_match_v6(summary: &Array<u64>, low: &Array<u64>, src: &[u8; 16]) -> bool {
    bit_set(summary, key_v6(src)) && bit_set(low, key_v6_low(src))
}

const BPF_F_MMAPABLE: u32 = aya_ebpf::bindings::BPF_F_MMAPABLE as u32;

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

/// This CPU's last reading of the coarse clock and the jiffy it was taken in.
#[repr(C)]
pub struct ClockCache {
    jiffies: u64,
    coarse_ns: u64,
}

#[map(name = "clock_cache")]
static CLOCK_CACHE: PerCpuArray<ClockCache> = PerCpuArray::with_max_entries(1, 0);

/// `bpf_ktime_get_coarse_ns()`, read at most once per jiffy per CPU. The coarse clock only
/// moves on the tick anyway, but reading it costs ~16 ns here (measured with groundzero-bench,
/// a quarter of the whole verdict), while `bpf_jiffies64()` and a per-CPU slot cost ~2 ns.
#[inline(always)]
pub fn coarse_now() -> u64 {
    // SAFETY: helpers without preconditions.
    let jiffies = unsafe { bpf_jiffies64() };
    match CLOCK_CACHE.get_ptr_mut(0) {
        // SAFETY: a live per-CPU value; only this CPU touches it while this program runs.
        Some(cache) => unsafe {
            if (*cache).jiffies != jiffies {
                (*cache).jiffies = jiffies;
                (*cache).coarse_ns = bpf_ktime_get_coarse_ns();
            }
            (*cache).coarse_ns
        },
        // SAFETY: as above.
        None => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

/// Counts a hit on a list entry. Shared by all CPUs, hence atomic.
#[inline(always)]
pub fn hit(stats: *const EntryStats) {
    let now = coarse_now();
    // SAFETY: `stats` points at a live map value (just returned by a lookup); map values are
    // 8-byte aligned; the kernel keeps the element alive for the rest of this program run (RCU).
    unsafe {
        let stats = stats as *mut EntryStats;
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(
            core::ptr::addr_of_mut!((*stats).hits),
            1,
        );
        (*stats).last_hit_ns = now;
    }
}

/// The lists for one packet; carries the rate limit settings read from the config map.
pub struct KernelLists {
    pub rate_pps: u32,
    pub rate_burst: u32,
    /// `Config.flags` as read once for this packet; the bucket prefix lengths are decoded from
    /// it only when a packet reaches the rate limit.
    pub flags: u32,
    pub ifindex: u32,
}

/// Takes a token from an existing bucket and reports a bucket that went over its limit.
/// Returns true when the packet is over the limit. `key` is the bucket's prefix.
#[inline(always)]
fn over_limit(
    bucket: *mut Bucket,
    lists: &KernelLists,
    now: u64,
    family: u32,
    prefix_len: u32,
    key: &[u8],
) -> bool {
    // SAFETY: a live LRU value; concurrent updates from other CPUs are tolerated by design (see
    // Bucket).
    let bucket = unsafe { &mut *bucket };
    if bucket.take(now, lists.rate_pps, lists.rate_burst) {
        return false;
    }
    if bucket.should_report(now) {
        report(lists, now, family, prefix_len, key, bucket.dropped);
    }
    true
}

#[inline(always)]
fn report(lists: &KernelLists, now: u64, family: u32, prefix_len: u32, addr: &[u8], dropped: u64) {
    let mut event = RateEvent {
        ts_ns: now,
        dropped,
        family,
        ifindex: lists.ifindex,
        addr: [0; 16],
        prefix_len,
        _pad: 0,
    };
    // Byte by byte, and volatile so that it stays so: the key was stored as two u64 halves,
    // and LLVM otherwise merges this copy into 8-byte loads at odd stack offsets, which the
    // verifier refuses ("misaligned stack access"). Only runs on a report, once a second per
    // bucket at most.
    let mut i = 0;
    while i < addr.len() && i < 16 {
        // SAFETY: `i` is within `addr`.
        event.addr[i] = unsafe { core::ptr::read_volatile(addr.as_ptr().add(i)) };
        i += 1;
    }
    // A full ring only delays the ban: the bucket reports again a second later.
    let _ = RATE_EVENTS.output::<RateEvent>(&event, 0);
}

macro_rules! kernel_lists {
    ($addr:ty, $bits:expr, $family:expr, $may_match:ident, $allow:ident, $allow_sum:ident, $allow_low:ident, $exact:ident, $find:ident, $may_hold:ident, $exact_sum:ident, $cidr:ident, $cidr_sum:ident, $cidr_low:ident, $rate:ident, $exempt:ident, $rate_prefix:path, $rate_key:ident) => {
        impl Lists<$addr> for KernelLists {
            #[inline(always)]
            fn allowed(&self, src: &$addr) -> bool {
                if !$may_match(&$allow_sum, &$allow_low, src) {
                    return false;
                }
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
                if !$may_hold(&$exact_sum, src) {
                    return false;
                }
                if Config::exact_slots_in(self.flags) {
                    match $find(src) {
                        Found::Slot(stats) => {
                            hit(stats);
                            return true;
                        }
                        Found::Absent => return false,
                        Found::Hash => {}
                    }
                }
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
                if !$may_match(&$cidr_sum, &$cidr_low, src) {
                    return false;
                }
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
                // Exemption is by the full source: an exempt host inside a bucket's prefix is
                // never limited and spends none of that bucket's tokens.
                if $exempt.get(Key::new($bits, *src)).is_some() {
                    return false;
                }
                // One bucket per prefix: a host that owns a whole /64 cannot get a fresh
                // bucket per address.
                let prefix_len = $rate_prefix(self.flags);
                let key = $rate_key(src, prefix_len);
                let now = coarse_now();
                match $rate.get_ptr_mut(&key) {
                    Some(bucket) => over_limit(bucket, self, now, $family, prefix_len, &key),
                    None => {
                        // A new source starts with a full bucket. LRU: a flood of new sources
                        // evicts the oldest buckets, the insert never fails for lack of room.
                        let mut fresh = Bucket::full(self.rate_burst, now);
                        let over = !fresh.take(now, self.rate_pps, self.rate_burst);
                        let _ = $rate.insert(&key, &fresh, 0);
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
    may_match_v4,
    ALLOW_V4,
    ALLOW_BITS_V4,
    ALLOW_BITS_V4,
    BLOCK_V4,
    find_v4,
    may_hold_v4,
    BLOCK_BITS_V4,
    BLOCK_NET_V4,
    BLOCK_NET_BITS_V4,
    BLOCK_NET_BITS_V4,
    RATE_V4,
    RATE_EXEMPT_V4,
    Config::rate_prefix_v4_in,
    rate_key_v4
);
kernel_lists!(
    [u8; 16],
    128,
    6,
    may_match_v6,
    ALLOW_V6,
    ALLOW_BITS_V6,
    ALLOW_BITS_V6_LOW,
    BLOCK_V6,
    find_v6,
    may_hold_v6,
    BLOCK_BITS_V6,
    BLOCK_NET_V6,
    BLOCK_NET_BITS_V6,
    BLOCK_NET_BITS_V6_LOW,
    RATE_V6,
    RATE_EXEMPT_V6,
    Config::rate_prefix_v6_in,
    rate_key_v6
);
