//! Rate-based auto-ban: a token bucket per source address, kept by the XDP program.
//!
//! The bucket arithmetic is a pure function here so the host can test it; the kernel calls the
//! same code on a map value. Sources over the limit are dropped (reason `rate_limited`) and
//! reported to user space once per [`REPORT_EVERY_NS`], which bans them with a TTL; from then on
//! the exact blocklist drops them before the bucket is even looked at.

/// Map names. Buckets live in LRU hashes: a flood of spoofed sources evicts old buckets instead
/// of failing inserts. Not pinned: buckets are cheap to rebuild.
pub const RATE_V4: &str = "rate_v4";
pub const RATE_V6: &str = "rate_v6";
/// Prefixes never rate-limited (LPM tries).
pub const RATE_EXEMPT_V4: &str = "rate_exempt_v4";
pub const RATE_EXEMPT_V6: &str = "rate_exempt_v6";
/// Ring buffer of [`RateEvent`]s.
pub const RATE_EVENTS: &str = "rate_events";

pub const RATE_BUCKETS: u32 = 1 << 16;
pub const RATE_EXEMPT_ENTRIES: u32 = 1024;
pub const RATE_RING_BYTES: u32 = 1 << 16;

/// One token, in the bucket's fixed-point unit (tokens are counted in nanotokens so that
/// `rate × elapsed_ns` needs no division).
pub const TOKEN: u64 = 1_000_000_000;
/// A source over its limit is reported at most this often.
pub const REPORT_EVERY_NS: u64 = 1_000_000_000;

/// One source's bucket. Updated without locks: two CPUs racing on one bucket may each take a
/// token the other already took. That errs towards passing, never towards a false ban.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Nanotokens available.
    pub tokens: u64,
    /// Time of the last refill (CLOCK_MONOTONIC_COARSE ns).
    pub last_ns: u64,
    /// When this source was last reported over the limit (0 = never).
    pub reported_ns: u64,
    /// Packets dropped by this bucket.
    pub dropped: u64,
}

impl Bucket {
    /// A new source starts with a full bucket.
    pub const fn full(burst: u32, now_ns: u64) -> Bucket {
        Bucket {
            tokens: burst as u64 * TOKEN,
            last_ns: now_ns,
            reported_ns: 0,
            dropped: 0,
        }
    }

    /// Refills for the time since the last packet and takes one token. Returns false when the
    /// source is over its limit.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate_pps: u32, burst: u32) -> bool {
        let cap = burst as u64 * TOKEN;
        let elapsed = now_ns.saturating_sub(self.last_ns);
        // rate ≤ 2^32 pps and elapsed capped at 2^32 ns (4 s) keep the product within u64; any
        // longer gap refills the bucket completely anyway when burst ≤ 4 s × rate.
        let elapsed = if elapsed > u32::MAX as u64 {
            u32::MAX as u64
        } else {
            elapsed
        };
        let refill = elapsed * rate_pps as u64;
        let tokens = self.tokens.saturating_add(refill);
        self.tokens = if tokens > cap { cap } else { tokens };
        self.last_ns = now_ns;
        if self.tokens >= TOKEN {
            self.tokens -= TOKEN;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Whether this drop should be reported to user space now (and remember that it was).
    #[inline(always)]
    pub fn should_report(&mut self, now_ns: u64) -> bool {
        if self.reported_ns == 0 || now_ns.saturating_sub(self.reported_ns) >= REPORT_EVERY_NS {
            self.reported_ns = now_ns;
            true
        } else {
            false
        }
    }
}

/// "This source went over its limit", sent to user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEvent {
    pub ts_ns: u64,
    /// Packets this bucket has dropped so far.
    pub dropped: u64,
    /// 4 or 6.
    pub family: u32,
    pub ifindex: u32,
    /// Network order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Bucket::full(3, 0);
        // The burst passes at once, the next packet at the same instant does not.
        assert!(b.take(0, 10, 3) && b.take(0, 10, 3) && b.take(0, 10, 3));
        assert!(!b.take(0, 10, 3));
        assert_eq!(b.dropped, 1);
        // 10 pps: one token every 100 ms.
        assert!(!b.take(50_000_000, 10, 3));
        assert!(b.take(100_000_000, 10, 3));
        // A long pause refills to the burst, never more.
        let t = 100_000_000_000;
        assert!(b.take(t, 10, 3) && b.take(t, 10, 3) && b.take(t, 10, 3));
        assert!(!b.take(t, 10, 3));
    }

    #[test]
    fn reports_once_per_interval() {
        let mut b = Bucket::full(1, 5);
        assert!(b.should_report(10));
        assert!(!b.should_report(10 + REPORT_EVERY_NS - 1));
        assert!(b.should_report(10 + REPORT_EVERY_NS));
    }
}
