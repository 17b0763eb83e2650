//! Rate-based auto-ban: a token bucket per source prefix, kept by the XDP program.
//!
//! Buckets are keyed by the source with its host bits cleared ([`rate_key_v4`], [`rate_key_v6`];
//! the prefix lengths come from `Config.flags`, see [`crate::maps::Config::rate_prefix_v4`]):
//! one host owns a whole IPv6 /64 and could otherwise send from 2^64 addresses, each with a
//! fresh bucket. The bucket arithmetic and the keying are pure functions here so the host can
//! test them; the kernel calls the same code on a map value. Sources over the limit are dropped (reason `rate_limited`) and
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

/// `addr` with all but its first `prefix_len` bits cleared: the key of its rate bucket.
/// A `prefix_len` over 32 counts as 32 (the full address).
///
/// Written for the verifier: no loop, and no shift by the full width of the type (the shift
/// amount is at most 31).
#[inline(always)]
pub const fn rate_key_v4(addr: &[u8; 4], prefix_len: u32) -> [u8; 4] {
    let mask = if prefix_len >= 32 {
        u32::MAX
    } else {
        !(u32::MAX >> prefix_len)
    };
    (u32::from_be_bytes(*addr) & mask).to_be_bytes()
}

/// `addr` with all but its first `prefix_len` bits cleared: the key of its rate bucket.
/// A `prefix_len` over 128 counts as 128 (the full address).
///
/// Two `u64` halves rather than a `u128`: BPF has no 128-bit shifts (LLVM would call a
/// library routine the kernel does not have). Every shift amount is at most 63.
#[inline(always)]
pub const fn rate_key_v6(addr: &[u8; 16], prefix_len: u32) -> [u8; 16] {
    let a = addr;
    let hi = u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let lo = u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    let (hi, lo) = if prefix_len >= 64 {
        (hi, lo & mask64(prefix_len - 64))
    } else {
        (hi & mask64(prefix_len), 0)
    };
    let h = hi.to_be_bytes();
    let l = lo.to_be_bytes();
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// The first `bits` bits set (all of them from 64 on).
#[inline(always)]
const fn mask64(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        !(u64::MAX >> bits)
    }
}

/// "This bucket went over its limit", sent to user space.
///
/// Not pinned (a ring buffer), but both sides read it as raw bytes: `#[repr(C)]` with explicit
/// padding, so no byte of it is left uninitialised by the kernel or undefined for user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateEvent {
    pub ts_ns: u64,
    /// Packets this bucket has dropped so far.
    pub dropped: u64,
    /// 4 or 6.
    pub family: u32,
    pub ifindex: u32,
    /// The bucket's prefix (the source with its host bits cleared), network order; IPv4 in the
    /// first four bytes.
    pub addr: [u8; 16],
    /// The bucket's prefix length: 32 or 128 when buckets are per address.
    pub prefix_len: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<RateEvent>() == 48);

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

    /// The same masking, the slow and obvious way.
    fn reference_v6(addr: &[u8; 16], prefix_len: u32) -> [u8; 16] {
        let keep = prefix_len.min(128);
        let mut out = [0u8; 16];
        for bit in 0..keep as usize {
            out[bit / 8] |= addr[bit / 8] & (0x80 >> (bit % 8));
        }
        out
    }

    #[test]
    fn v4_keys_keep_exactly_the_prefix_bits() {
        let a = [198, 18, 0xab, 0xff];
        let cases: [(u32, [u8; 4]); 9] = [
            (0, [0, 0, 0, 0]),
            (1, [128, 0, 0, 0]),
            (8, [198, 0, 0, 0]),
            (15, [198, 18, 0, 0]),
            (24, [198, 18, 0xab, 0]),
            (31, [198, 18, 0xab, 0xfe]),
            (32, a),
            (33, a),
            (u32::MAX, a),
        ];
        for (len, want) in cases {
            assert_eq!(rate_key_v4(&a, len), want, "/{len}");
        }
        // A host bit set or clear makes no difference below the prefix, all the difference in it.
        assert_eq!(
            rate_key_v4(&[10, 0, 0, 1], 24),
            rate_key_v4(&[10, 0, 0, 254], 24)
        );
        assert_ne!(
            rate_key_v4(&[10, 0, 0, 1], 24),
            rate_key_v4(&[10, 0, 1, 1], 24)
        );
    }

    #[test]
    fn v6_keys_keep_exactly_the_prefix_bits() {
        let ones = [0xff; 16];
        let mixed: [u8; 16] = [
            0x20, 0x01, 0x00, 0x02, 0xde, 0xad, 0xbe, 0xef, 0x80, 0x01, 0x7f, 0xfe, 0x55, 0xaa,
            0x0f, 0xf1,
        ];
        for len in [
            0,
            1,
            7,
            8,
            31,
            32,
            48,
            63,
            64,
            65,
            96,
            127,
            128,
            129,
            u32::MAX,
        ] {
            for addr in [&ones, &mixed] {
                assert_eq!(
                    rate_key_v6(addr, len),
                    reference_v6(addr, len),
                    "/{len} of {addr:02x?}"
                );
            }
        }
        // Spot checks that do not lean on the reference.
        assert_eq!(rate_key_v6(&ones, 0), [0; 16]);
        assert_eq!(rate_key_v6(&ones, 1)[0], 0x80);
        assert_eq!(rate_key_v6(&ones, 1)[1..], [0; 15]);
        assert_eq!(
            rate_key_v6(&ones, 63)[..8],
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]
        );
        assert_eq!(rate_key_v6(&ones, 63)[8..], [0; 8]);
        assert_eq!(rate_key_v6(&ones, 64)[..8], [0xff; 8]);
        assert_eq!(rate_key_v6(&ones, 64)[8..], [0; 8]);
        assert_eq!(rate_key_v6(&ones, 65)[8], 0x80);
        assert_eq!(rate_key_v6(&ones, 65)[9..], [0; 7]);
        assert_eq!(rate_key_v6(&ones, 127)[15], 0xfe);
        assert_eq!(rate_key_v6(&ones, 128), ones);
        assert_eq!(rate_key_v6(&mixed, 48)[..6], mixed[..6]);
        assert_eq!(rate_key_v6(&mixed, 48)[6..], [0; 10]);
    }

    #[test]
    fn reports_once_per_interval() {
        let mut b = Bucket::full(1, 5);
        assert!(b.should_report(10));
        assert!(!b.should_report(10 + REPORT_EVERY_NS - 1));
        assert!(b.should_report(10 + REPORT_EVERY_NS));
    }
}
