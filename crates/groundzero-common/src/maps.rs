//! Map names and the `#[repr(C)]` values stored in them.
//!
//! Keys are plain byte arrays in network byte order (`[u8; 4]`, `[u8; 16]`), which is also what
//! the LPM trie needs: its prefix is matched from the first byte on.

/// Allowlist prefixes, IPv4 (LPM trie; a single host is a /32).
pub const ALLOW_V4: &str = "allow_v4";
/// Allowlist prefixes, IPv6 (LPM trie; a single host is a /128).
pub const ALLOW_V6: &str = "allow_v6";
/// Blocked single IPv4 addresses (hash, O(1)).
pub const BLOCK_V4: &str = "block_v4";
/// Blocked single IPv6 addresses (hash, O(1)).
pub const BLOCK_V6: &str = "block_v6";
/// Blocked IPv4 prefixes (LPM trie).
pub const BLOCK_NET_V4: &str = "block_net_v4";
/// Blocked IPv6 prefixes (LPM trie).
pub const BLOCK_NET_V6: &str = "block_net_v6";
/// Per-CPU array of [`Counter`], indexed by [`crate::Reason`].
pub const COUNTERS: &str = "counters";
/// Per-CPU array of [`InterfaceCounters`], indexed by ingress ifindex (see [`interface_slot`]).
pub const INTERFACE_COUNTERS: &str = "iface_counters";
/// Array of one [`Config`] at index 0, written by user space at runtime.
pub const CONFIG: &str = "config";

/// Every map, for pinning.
pub const ALL_MAPS: [&str; 27] = [
    ALLOW_V4,
    ALLOW_V6,
    BLOCK_V4,
    BLOCK_V6,
    BLOCK_NET_V4,
    BLOCK_NET_V6,
    crate::summary::ALLOW_SUM_V4,
    crate::summary::ALLOW_SUM_V6,
    crate::summary::ALLOW_SUM_V6_LOW,
    crate::summary::BLOCK_NET_SUM_V4,
    crate::summary::BLOCK_NET_SUM_V6,
    crate::summary::BLOCK_NET_SUM_V6_LOW,
    crate::summary::BLOCK_SUM_V4,
    crate::summary::BLOCK_SUM_V6,
    crate::summary::BLOCK_BITS_V4,
    crate::summary::BLOCK_BITS_V6,
    crate::summary::ALLOW_BITS_V4,
    crate::summary::ALLOW_BITS_V6,
    crate::summary::ALLOW_BITS_V6_LOW,
    crate::summary::BLOCK_NET_BITS_V4,
    crate::summary::BLOCK_NET_BITS_V6,
    crate::summary::BLOCK_NET_BITS_V6_LOW,
    crate::slots::BLOCK_SLOTS_V4,
    crate::slots::BLOCK_SLOTS_V6,
    COUNTERS,
    INTERFACE_COUNTERS,
    CONFIG,
];

/// The XDP program's function name, as user space finds it in the object.
pub const XDP_PROGRAM: &str = "groundzero_xdp";

/// Room in the counters map. Larger than the number of reasons so that new reasons can be added
/// without changing the map's shape under a pinned, running program.
pub const COUNTER_SLOTS: u32 = 16;

/// Interfaces with an ifindex below this get their own counters; the rest share slot 0
/// (ifindex 0 is never a real device).
pub const INTERFACE_SLOTS: u32 = 256;

/// The [`INTERFACE_COUNTERS`] slot of an interface.
#[inline(always)]
pub const fn interface_slot(ifindex: u32) -> u32 {
    if ifindex < INTERFACE_SLOTS {
        ifindex
    } else {
        0
    }
}

/// Default capacities; user space may override them at load time.
pub const DEFAULT_EXACT_ENTRIES: u32 = 1 << 20;
pub const DEFAULT_CIDR_ENTRIES: u32 = 1 << 18;
pub const DEFAULT_ALLOW_ENTRIES: u32 = 1 << 14;

/// Packets and bytes counted under one reason on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Bytes of the whole frame as XDP sees it (Ethernet header included).
    pub bytes: u64,
}

/// One interface's counters, one [`Counter`] per reason slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub by_reason: [Counter; COUNTER_SLOTS as usize],
}

/// The value of every list entry: how often the kernel matched it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryStats {
    pub hits: u64,
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) of the last hit, 0 if never hit.
    pub last_hit_ns: u64,
}

/// Runtime switches. A `u32` of flags rather than `bool`s: no implicit padding, stable layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub flags: u32,
    /// Journey tracing: sample one packet in this many (of those the filter admits); 0 = off,
    /// and then the verdict path does no tracing work at all.
    pub sample_every: u32,
    /// Journey tracing: which packets may be sampled.
    pub sample_filter: crate::journey::FlowFilter,
    /// Rate-based auto-ban: packets per second allowed per source; 0 = off.
    pub rate_pps: u32,
    /// Rate-based auto-ban: bucket size (packets a source may send at once).
    pub rate_burst: u32,
}

impl Config {
    /// Dry run: every packet passes; matches are counted as `monitor_*`.
    pub const MONITOR: u32 = 1 << 0;
    /// A capture runs: the program checks [`crate::capture::CaptureCtl`] after the verdict.
    /// Clear, capture costs the verdict path this one bit test.
    pub const CAPTURE: u32 = 1 << 1;
    /// The exact slot tables may be read (map layout 6, see [`crate::slots`]). Set by the pins'
    /// owner once it has rebuilt them, and only on x86-64, whose loads are not reordered with
    /// one another: the program's check of a slot's tag around its key is a sequence lock with
    /// no read barrier, which BPF does not have. Clear, every exact lookup asks the hash.
    pub const EXACT_SLOTS: u32 = 1 << 2;
    /// Bits 8..15: how many low bits of an IPv4 source the rate limit ignores (32 minus the
    /// prefix length of a bucket). Bits 16..23: the same for IPv6 (128 minus the prefix length).
    /// Host bits rather than prefix lengths so that 0, what a config written before these
    /// fields existed holds, means "one bucket per address" as it did then; the `Config` value
    /// itself keeps its size and layout, so a pinned map from an older build is still adopted.
    pub const RATE_HOST_BITS_V4_SHIFT: u32 = 8;
    pub const RATE_HOST_BITS_V6_SHIFT: u32 = 16;
    const RATE_HOST_BITS: u32 = 0xff;

    pub const fn monitor(&self) -> bool {
        Self::monitor_in(self.flags)
    }

    /// [`Self::monitor`] of a `flags` value already read (the kernel reads the map value once).
    #[inline(always)]
    pub const fn monitor_in(flags: u32) -> bool {
        flags & Self::MONITOR != 0
    }

    /// [`Self::EXACT_SLOTS`] of a `flags` value already read.
    #[inline(always)]
    pub const fn exact_slots_in(flags: u32) -> bool {
        flags & Self::EXACT_SLOTS != 0
    }

    /// [`Self::CAPTURE`] of a `flags` value already read.
    #[inline(always)]
    pub const fn capture_in(flags: u32) -> bool {
        flags & Self::CAPTURE != 0
    }

    /// The prefix length of IPv4 rate buckets, 0..=32 (32 = one bucket per address).
    pub const fn rate_prefix_v4(&self) -> u32 {
        Self::rate_prefix_v4_in(self.flags)
    }

    /// The prefix length of IPv6 rate buckets, 0..=128 (128 = one bucket per address).
    pub const fn rate_prefix_v6(&self) -> u32 {
        Self::rate_prefix_v6_in(self.flags)
    }

    /// [`Self::rate_prefix_v4`] of a `flags` value already read. More host bits than the
    /// address has (only a foreign writer could set them) mean prefix 0, not a wrapped length.
    #[inline(always)]
    pub const fn rate_prefix_v4_in(flags: u32) -> u32 {
        32u32.saturating_sub((flags >> Self::RATE_HOST_BITS_V4_SHIFT) & Self::RATE_HOST_BITS)
    }

    /// [`Self::rate_prefix_v6`] of a `flags` value already read.
    #[inline(always)]
    pub const fn rate_prefix_v6_in(flags: u32) -> u32 {
        128u32.saturating_sub((flags >> Self::RATE_HOST_BITS_V6_SHIFT) & Self::RATE_HOST_BITS)
    }

    /// Sets both bucket prefix lengths, leaving every other flag alone. Lengths over the
    /// address width count as the full width.
    pub fn set_rate_prefixes(&mut self, prefix_v4: u32, prefix_v6: u32) {
        let host_v4 = 32 - prefix_v4.min(32);
        let host_v6 = 128 - prefix_v6.min(128);
        let fields = (Self::RATE_HOST_BITS << Self::RATE_HOST_BITS_V4_SHIFT)
            | (Self::RATE_HOST_BITS << Self::RATE_HOST_BITS_V6_SHIFT);
        self.flags = (self.flags & !fields)
            | (host_v4 << Self::RATE_HOST_BITS_V4_SHIFT)
            | (host_v6 << Self::RATE_HOST_BITS_V6_SHIFT);
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn a_config_without_prefix_bits_keys_buckets_by_full_address() {
        let old = Config {
            flags: Config::MONITOR,
            ..Default::default()
        };
        assert_eq!((old.rate_prefix_v4(), old.rate_prefix_v6()), (32, 128));
    }

    #[test]
    fn rate_prefixes_round_trip_and_leave_other_flags_alone() {
        let mut c = Config {
            flags: Config::MONITOR | (1 << 31),
            ..Default::default()
        };
        for (v4, v6) in [(0, 0), (1, 1), (24, 64), (31, 127), (32, 128), (16, 48)] {
            c.set_rate_prefixes(v4, v6);
            assert_eq!((c.rate_prefix_v4(), c.rate_prefix_v6()), (v4, v6));
            assert!(c.monitor());
            assert_ne!(c.flags & (1 << 31), 0);
        }
        c.set_rate_prefixes(24, 64);
        assert_eq!(c.flags & 0xff00, 8 << 8);
        assert_eq!(c.flags & 0xff_0000, 64 << 16);
        // Beyond the width: the full address.
        c.set_rate_prefixes(40, 200);
        assert_eq!((c.rate_prefix_v4(), c.rate_prefix_v6()), (32, 128));
        // Host bits beyond the width (a foreign writer): prefix 0, never a wrapped length.
        c.flags = (0xff << 8) | (0xff << 16);
        assert_eq!((c.rate_prefix_v4(), c.rate_prefix_v6()), (0, 0));
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], made only of u64/u32 fields (or arrays of them) with no padding, and every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::EntryStats {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::InterfaceCounters {}
    // SAFETY: as above; explicit padding fields, no implicit padding.
    unsafe impl aya::Pod for crate::journey::JourneyEvent {}
    unsafe impl aya::Pod for crate::journey::JourneyOffsets {}
    unsafe impl aya::Pod for crate::journey::FilteredCounts {}
    unsafe impl aya::Pod for crate::journey::FlowFilter {}
    unsafe impl aya::Pod for crate::ratelimit::Bucket {}
    unsafe impl aya::Pod for crate::ratelimit::RateEvent {}
    unsafe impl aya::Pod for crate::capture::CaptureCtl {}
    unsafe impl aya::Pod for crate::capture::CaptureBucket {}
    unsafe impl aya::Pod for crate::capture::CaptureMeta {}
    // SAFETY: an array of bytes.
    unsafe impl aya::Pod for crate::summary::SummarySlot {}
    // SAFETY: #[repr(C)], u32/u64 fields and byte arrays, explicit padding.
    unsafe impl aya::Pod for crate::slots::SlotV4 {}
    unsafe impl aya::Pod for crate::slots::SlotV6 {}
}
