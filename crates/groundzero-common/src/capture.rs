//! Packet capture from the XDP program: the filter user space writes, the per-CPU rate bucket,
//! and the metadata the program puts in front of each captured packet's bytes.
//!
//! The program does capture work only while [`crate::maps::Config::CAPTURE`] is set in the
//! config word it already reads for every packet; with the bit clear, capture costs one bit test.

/// Array of one [`CaptureCtl`] at index 0: what to capture.
pub const CAPTURE_CTL: &str = "capture_ctl";
/// Per-CPU array of one [`CaptureBucket`]: the rate limit of captured packets, per CPU.
pub const CAPTURE_BUCKET: &str = "capture_bucket";
/// Per-CPU array of one `u64`: packets the filter admitted but the rate limit skipped.
pub const CAPTURE_LOST: &str = "capture_lost";
/// Perf event array (one buffer per CPU): [`CaptureMeta`] followed by the packet's first bytes.
pub const CAPTURE_EVENTS: &str = "capture_events";

/// The most packet bytes one record carries. A bound the verifier can see, and the size of
/// the snap length field (`BPF_F_CTXLEN_MASK` has 20 bits; far more than a frame needs).
pub const MAX_SNAPLEN: u32 = 0xffff;

/// [`CaptureCtl::verdicts`] bit: packets the program drops.
pub const VERDICT_DROP: u32 = 1 << 0;
/// [`CaptureCtl::verdicts`] bit: packets the program passes.
pub const VERDICT_PASS: u32 = 1 << 1;

/// What to capture. Every field must admit a packet for it to be captured; a zeroed value
/// admits nothing (no verdict bit), which is what a fresh map holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureCtl {
    /// [`VERDICT_DROP`] and/or [`VERDICT_PASS`].
    pub verdicts: u32,
    /// Bit `r` admits [`crate::Reason`] value `r`.
    pub reasons: u32,
    /// Only packets arriving on this interface; 0 = any.
    pub ifindex: u32,
    /// Bytes of each packet to copy (at most [`MAX_SNAPLEN`], and never more than the packet).
    pub snaplen: u32,
    /// 0 = any source; 4 or 6: only sources of that family inside `src`/`mask`.
    pub src_family: u32,
    pub _pad: u32,
    /// Source prefix, big-endian halves of the 16-byte address (IPv4 in the top 32 bits of
    /// `src[0]`), already masked.
    pub src: [u64; 2],
    /// Prefix mask in the same layout.
    pub mask: [u64; 2],
    /// Nanoseconds of budget one captured packet costs on one CPU (1e9 × CPUs / rate).
    pub cost_ns: u64,
    /// Most budget a CPU may save up: the burst, in nanoseconds.
    pub budget_max_ns: u64,
}

impl CaptureCtl {
    /// Whether a packet with this verdict, reason and ingress interface is admitted (the source
    /// is checked by [`Self::admits_source`]).
    #[inline(always)]
    pub const fn admits(&self, pass: bool, reason: u32, ifindex: u32) -> bool {
        let verdict = if pass { VERDICT_PASS } else { VERDICT_DROP };
        self.verdicts & verdict != 0
            && reason < 32
            && self.reasons & (1 << reason) != 0
            && (self.ifindex == 0 || self.ifindex == ifindex)
    }

    /// Whether a source address (family 4 or 6, in [`CaptureCtl::src`]'s layout) is admitted.
    /// Non-IP packets have family 0: admitted only when no source filter is set.
    #[inline(always)]
    pub const fn admits_source(&self, family: u32, addr: [u64; 2]) -> bool {
        self.src_family == 0
            || (self.src_family == family
                && addr[0] & self.mask[0] == self.src[0]
                && addr[1] & self.mask[1] == self.src[1])
    }
}

/// The halves of an IPv4 address in [`CaptureCtl::src`]'s layout.
#[inline(always)]
pub const fn halves_v4(a: [u8; 4]) -> [u64; 2] {
    [(u32::from_be_bytes(a) as u64) << 32, 0]
}

/// The halves of an IPv6 address in [`CaptureCtl::src`]'s layout.
#[inline(always)]
pub const fn halves_v6(a: [u8; 16]) -> [u64; 2] {
    let hi = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
    let lo = [a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]];
    [u64::from_be_bytes(hi), u64::from_be_bytes(lo)]
}

/// The mask of a prefix length in [`CaptureCtl::src`]'s layout (lengths over 128 count as 128).
pub const fn mask_halves(prefix_len: u32) -> [u64; 2] {
    let len = if prefix_len > 128 { 128 } else { prefix_len };
    let hi = if len == 0 {
        0
    } else if len >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - len)
    };
    let lo = if len <= 64 {
        0
    } else if len == 128 {
        u64::MAX
    } else {
        u64::MAX << (128 - len)
    };
    [hi, lo]
}

/// One CPU's capture budget (a token bucket counted in nanoseconds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureBucket {
    /// Budget saved, in nanoseconds; a capture spends [`CaptureCtl::cost_ns`].
    pub budget_ns: u64,
    /// `bpf_ktime_get_ns()` of the last refill; 0 = never (the first packet finds a full bucket).
    pub last_ns: u64,
}

impl CaptureBucket {
    /// Refills for the time since the last packet and spends one capture if the budget allows.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, cost_ns: u64, max_ns: u64) -> bool {
        let earned = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        let budget = self.budget_ns.saturating_add(earned);
        let budget = if budget > max_ns { max_ns } else { budget };
        if budget >= cost_ns {
            self.budget_ns = budget - cost_ns;
            true
        } else {
            self.budget_ns = budget;
            false
        }
    }
}

/// What the program sends in front of a captured packet's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureMeta {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the verdict was made.
    pub ktime_ns: u64,
    /// Ingress interface.
    pub ifindex: u32,
    /// The whole frame's length.
    pub packet_len: u32,
    /// Bytes of the frame that follow this header.
    pub captured_len: u32,
    /// The CPU that ran the program.
    pub cpu: u32,
    /// The [`crate::Reason`] value (it implies the verdict).
    pub reason: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl_for(family: u32, addr: [u64; 2], len: u32) -> CaptureCtl {
        let mask = mask_halves(len);
        CaptureCtl {
            src_family: family,
            src: [addr[0] & mask[0], addr[1] & mask[1]],
            mask,
            ..Default::default()
        }
    }

    #[test]
    fn source_prefixes_admit_what_they_cover() {
        let net = ctl_for(4, halves_v4([198, 18, 0, 0]), 24);
        assert!(net.admits_source(4, halves_v4([198, 18, 0, 77])));
        assert!(!net.admits_source(4, halves_v4([198, 18, 1, 1])));
        assert!(!net.admits_source(6, halves_v6([0; 16])));
        assert!(!net.admits_source(0, [0, 0]));
        let mut v6 = [0u8; 16];
        v6[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
        let net6 = ctl_for(6, halves_v6(v6), 100);
        let mut inside = v6;
        inside[15] = 9;
        assert!(net6.admits_source(6, halves_v6(inside)));
        inside[8] = 1;
        assert!(!net6.admits_source(6, halves_v6(inside)));
        assert!(CaptureCtl::default().admits_source(0, [0, 0]));
    }

    #[test]
    fn masks_cover_every_length() {
        assert_eq!(mask_halves(0), [0, 0]);
        assert_eq!(mask_halves(32), [0xffff_ffff_0000_0000, 0]);
        assert_eq!(mask_halves(64), [u64::MAX, 0]);
        assert_eq!(mask_halves(65), [u64::MAX, 1 << 63]);
        assert_eq!(mask_halves(128), [u64::MAX, u64::MAX]);
        assert_eq!(mask_halves(200), [u64::MAX, u64::MAX]);
    }

    #[test]
    fn a_zeroed_filter_admits_nothing_and_verdicts_reasons_interfaces_filter() {
        assert!(!CaptureCtl::default().admits(false, 4, 3));
        let ctl = CaptureCtl {
            verdicts: VERDICT_DROP,
            reasons: 1 << 4,
            ifindex: 3,
            ..Default::default()
        };
        assert!(ctl.admits(false, 4, 3));
        assert!(!ctl.admits(true, 4, 3));
        assert!(!ctl.admits(false, 5, 3));
        assert!(!ctl.admits(false, 4, 2));
        assert!(!ctl.admits(false, 40, 3));
    }

    #[test]
    fn the_bucket_allows_its_rate_and_burst() {
        let mut b = CaptureBucket::default();
        // First packet: a full bucket (burst of 3 at 1 ms each).
        let (cost, max) = (1_000_000, 3_000_000);
        let now = 5_000_000_000;
        let taken = (0..10).filter(|_| b.take(now, cost, max)).count();
        assert_eq!(taken, 3);
        // 2.5 ms later: two more.
        let taken = (0..10)
            .filter(|_| b.take(now + 2_500_000, cost, max))
            .count();
        assert_eq!(taken, 2);
    }
}
