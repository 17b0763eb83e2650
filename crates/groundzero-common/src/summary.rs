//! Prefix summaries: a cheap "could any prefix in this trie match?" in front of each LPM trie.
//!
//! An LPM trie lookup is a helper call that walks the trie: 8 ns even when the trie is empty,
//! more when it is not, and the verdict does two of them (allowlist, blocked prefixes) for every
//! packet that no exact entry decides. Most packets come from addresses that no prefix is near,
//! so each trie gets a summary: an array of 2^[`SUMMARY_KEY_BITS`] one-byte counts, indexed by a
//! key taken from the address's leading bits, counting the prefixes that cover some address with
//! that key. A zero count proves the trie has no match; the XDP program then skips the walk.
//! The program reads a bitmap beside the counts (map layout 5: bit k set while count k is not
//! zero), an eighth of their size, so that a flood from many sources finds it in the caches;
//! user space keeps the counts and the bits (groundzero's `bpf/summary.rs`). The array lookup is
//! inlined by the verifier (a few instructions, no call).
//!
//! Keys: IPv4, the first 20 bits (a /20). IPv6 has two summaries per trie, and the walk is
//! skipped when either says zero: one keyed by bits 0..20 XOR 20..40 (one key per /40; a /32
//! counts on 256 keys), one by bits 24..44 XOR 44..64 (one key per /64, so prefixes inside one
//! site's /48 still tell apart; anything shorter than a /44 counts on every key of this one).
//!
//! The summary may over-approximate, never under: writers count a prefix *before* inserting it
//! into the trie and uncount it only *after* removing it; a count that reaches 255 stays there.
//! So a crash between the two steps, or 255 prefixes on one key, only costs a trie walk.

/// Bits of the summary key.
pub const SUMMARY_KEY_BITS: u32 = 20;
/// Counts per array slot: one slot is one cache line.
pub const SUMMARY_SLOT_KEYS: u32 = 64;
/// Slots per summary map (1 MiB of counts).
pub const SUMMARY_SLOTS: u32 = (1 << SUMMARY_KEY_BITS) / SUMMARY_SLOT_KEYS;
/// A count that has reached this stays: too many prefixes share the key to keep counting.
pub const SUMMARY_STICKY: u8 = u8::MAX;

/// Bits of the exact summary's key (see [`exact_key_v4`]): 4 Mi one-byte counts per family.
/// A million exact entries leave about four keys in five at zero.
pub const EXACT_KEY_BITS: u32 = 22;
/// Slots per exact summary map (4 MiB of counts).
pub const EXACT_SUMMARY_SLOTS: u32 = (1 << EXACT_KEY_BITS) / SUMMARY_SLOT_KEYS;
/// The exact summaries' counts (`block_v4`'s and `block_v6`'s): user space's bookkeeping,
/// which the XDP program does not read (map layout 5; it read them in layout 4).
pub const BLOCK_SUM_V4: &str = "block_sum_v4";
pub const BLOCK_SUM_V6: &str = "block_sum_v6";
/// What the XDP program reads in front of the exact hashes: one bit per exact summary key, set
/// while the key's count is not zero. 512 KiB per family instead of the counts' 4 MiB: under a
/// flood from a million sources, the counts' random line was a cache miss and a TLB miss (its
/// 1,024 pages of 4 KiB) per packet; the bits' 128 pages stay in the TLB and their lines in the
/// CPU's caches (groundzero-bench part 2 measures both).
pub const BLOCK_BITS_V4: &str = "block_bits_v4";
pub const BLOCK_BITS_V6: &str = "block_bits_v6";
/// 64-bit words per exact bitmap: one bit per exact summary key.
pub const EXACT_BIT_WORDS: u32 = (1 << EXACT_KEY_BITS) / 64;
/// 64-bit words per prefix summary's bitmap (128 KiB): one bit per key.
pub const SUMMARY_BIT_WORDS: u32 = (1 << SUMMARY_KEY_BITS) / 64;

/// The word and the bit of a summary key in its bitmap.
#[inline(always)]
pub fn key_bit(key: u32) -> (u32, u64) {
    (key >> 6, 1u64 << (key & 63))
}

/// The exact summary key of an IPv4 address (network byte order): a multiplicative hash
/// (Fibonacci hashing: the top bits of the address times 2^32/φ), so that neighbouring
/// addresses, which lists hold in runs, spread over the whole array.
///
/// The exact hash lookup is a helper call (`__htab_map_lookup_elem`), the one call left on the
/// pass path; a zero count here proves the address is in no exact list and skips it.
#[inline(always)]
pub fn exact_key_v4(addr: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*addr).wrapping_mul(0x9E37_79B1) >> (32 - EXACT_KEY_BITS)
}

/// The exact summary key of an IPv6 address: both halves folded, then hashed as for IPv4.
#[inline(always)]
pub fn exact_key_v6(addr: &[u8; 16]) -> u32 {
    let mut lo = [0u8; 8];
    lo.copy_from_slice(&addr[8..]);
    let folded = top64(addr) ^ u64::from_be_bytes(lo).rotate_left(32);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - EXACT_KEY_BITS)) as u32
}

/// Every summary map's name.
pub const ALL_SUMMARIES: [&str; 16] = [
    ALLOW_SUM_V4,
    ALLOW_SUM_V6,
    ALLOW_SUM_V6_LOW,
    BLOCK_NET_SUM_V4,
    BLOCK_NET_SUM_V6,
    BLOCK_NET_SUM_V6_LOW,
    BLOCK_SUM_V4,
    BLOCK_SUM_V6,
    ALLOW_BITS_V4,
    ALLOW_BITS_V6,
    ALLOW_BITS_V6_LOW,
    BLOCK_NET_BITS_V4,
    BLOCK_NET_BITS_V6,
    BLOCK_NET_BITS_V6_LOW,
    BLOCK_BITS_V4,
    BLOCK_BITS_V6,
];

// The array holds exactly one count per key, and each bitmap one bit per key.
const _: () = assert!(EXACT_SUMMARY_SLOTS * SUMMARY_SLOT_KEYS == 1 << EXACT_KEY_BITS);
const _: () = assert!(EXACT_BIT_WORDS * 64 == 1 << EXACT_KEY_BITS);
const _: () = assert!(SUMMARY_BIT_WORDS * 64 == 1 << SUMMARY_KEY_BITS);

/// Map names: one summary per LPM trie of the verdict, two for the IPv6 tries (`_low`: keyed
/// by [`key_v6_low`]).
pub const ALLOW_SUM_V4: &str = "allow_sum_v4";
pub const ALLOW_SUM_V6: &str = "allow_sum_v6";
pub const ALLOW_SUM_V6_LOW: &str = "allow_sum_v6_low";
pub const BLOCK_NET_SUM_V4: &str = "block_net_sum_v4";
pub const BLOCK_NET_SUM_V6: &str = "block_net_sum_v6";
pub const BLOCK_NET_SUM_V6_LOW: &str = "block_net_sum_v6_low";
/// Each prefix summary's bitmap, which the XDP program reads (map layout 5): a bit per key,
/// set while the key's count is not zero. 128 KiB (32 pages) instead of the counts' 1 MiB (256
/// pages): under a flood from many sources it stays in the CPU's caches and TLB.
pub const ALLOW_BITS_V4: &str = "allow_bits_v4";
pub const ALLOW_BITS_V6: &str = "allow_bits_v6";
pub const ALLOW_BITS_V6_LOW: &str = "allow_bits_v6_low";
pub const BLOCK_NET_BITS_V4: &str = "block_net_bits_v4";
pub const BLOCK_NET_BITS_V6: &str = "block_net_bits_v6";
pub const BLOCK_NET_BITS_V6_LOW: &str = "block_net_bits_v6_low";

/// One array slot: the counts of [`SUMMARY_SLOT_KEYS`] consecutive keys.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummarySlot {
    pub counts: [u8; SUMMARY_SLOT_KEYS as usize],
}

const MASK: u32 = (1 << SUMMARY_KEY_BITS) - 1;

/// The summary key of an IPv4 address (network byte order).
#[inline(always)]
pub fn key_v4(addr: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*addr) >> (32 - SUMMARY_KEY_BITS)
}

/// The first 64 bits of an IPv6 address (network byte order) as a number: one 8-byte load,
/// where assembling the keys' 40-bit windows byte by byte cost the XDP program ~20 instructions
/// per key.
#[inline(always)]
fn top64(addr: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&addr[..8]);
    u64::from_be_bytes(b)
}

/// The summary key of an IPv6 address (network byte order): bits 0..20 XOR bits 20..40.
#[inline(always)]
pub fn key_v6(addr: &[u8; 16]) -> u32 {
    let first40 = top64(addr) >> 24;
    ((first40 >> SUMMARY_KEY_BITS) as u32 ^ first40 as u32) & MASK
}

/// The second summary key of an IPv6 address: bits 24..44 XOR bits 44..64.
#[inline(always)]
pub fn key_v6_low(addr: &[u8; 16]) -> u32 {
    let bits24_64 = top64(addr) & ((1 << 40) - 1);
    ((bits24_64 >> SUMMARY_KEY_BITS) as u32 ^ bits24_64 as u32) & MASK
}

/// The keys of every address a prefix covers: `start..start + len`, always one aligned block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBlock {
    pub start: u32,
    pub len: u32,
}

impl KeyBlock {
    pub fn contains(&self, key: u32) -> bool {
        key >= self.start && key - self.start < self.len
    }

    fn aligned(key: u32, free_bits: u32) -> KeyBlock {
        let len = 1u32 << free_bits;
        KeyBlock {
            start: key & !(len - 1) & MASK,
            len,
        }
    }
}

/// The keys an IPv4 prefix (`addr`/`prefix_len`, host bits may be set) covers.
pub fn keys_v4(addr: &[u8; 4], prefix_len: u8) -> KeyBlock {
    let free = SUMMARY_KEY_BITS.saturating_sub(u32::from(prefix_len.min(32)));
    KeyBlock::aligned(key_v4(addr), free)
}

/// The keys an IPv6 prefix (`addr`/`prefix_len`, host bits may be set) covers.
pub fn keys_v6(addr: &[u8; 16], prefix_len: u8) -> KeyBlock {
    let len = u32::from(prefix_len.min(128));
    if len < SUMMARY_KEY_BITS {
        // The first half of the key varies too: every key is possible.
        return KeyBlock {
            start: 0,
            len: 1 << SUMMARY_KEY_BITS,
        };
    }
    // The first 20 bits are fixed; of the second 20, the first `len - 20` are. XOR with a fixed
    // value maps the free low bits onto themselves, so the keys form one aligned block.
    let free = (2 * SUMMARY_KEY_BITS).saturating_sub(len);
    KeyBlock::aligned(key_v6(addr), free)
}

/// The [`key_v6_low`] keys an IPv6 prefix covers.
pub fn keys_v6_low(addr: &[u8; 16], prefix_len: u8) -> KeyBlock {
    let len = u32::from(prefix_len.min(128));
    if len < 24 + SUMMARY_KEY_BITS {
        // Bits 24..44 are not all fixed and bits 44..64 vary: every key is possible.
        return KeyBlock {
            start: 0,
            len: 1 << SUMMARY_KEY_BITS,
        };
    }
    let free = 64u32.saturating_sub(len);
    KeyBlock::aligned(key_v6_low(addr), free)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// A small deterministic generator (no dependency in a no_std crate).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }
    }

    fn inside_v4(net: [u8; 4], len: u8, r: &mut Lcg) -> [u8; 4] {
        let host_mask = if len >= 32 { 0 } else { u32::MAX >> len };
        let a = (u32::from_be_bytes(net) & !host_mask) | (r.next() as u32 & host_mask);
        a.to_be_bytes()
    }

    fn inside_v6(net: [u8; 16], len: u8, r: &mut Lcg) -> [u8; 16] {
        let host_mask = if len >= 128 { 0 } else { u128::MAX >> len };
        let rnd = (u128::from(r.next()) << 64) | u128::from(r.next());
        ((u128::from_be_bytes(net) & !host_mask) | (rnd & host_mask)).to_be_bytes()
    }

    /// The keys as pinned summaries hold them: a change here (bits, multipliers, folding) makes
    /// two builds count different keys on the same pins, so it needs a new map layout
    /// (crates/groundzero/src/bpf/layout.rs) along with new values here.
    #[test]
    fn exact_keys_are_those_of_map_layout_4() {
        assert_eq!(EXACT_KEY_BITS, 22);
        assert_eq!(exact_key_v4(&[198, 18, 0, 10]), 2_664_240);
        assert_eq!(
            exact_key_v6(&0x2001_0002_0000_0000_0000_0000_0000_0010u128.to_be_bytes()),
            250_990
        );
    }

    /// Exact keys stay in range and spread a run of neighbouring addresses (what lists hold)
    /// over many keys: 65,536 consecutive addresses fill most of 65,536 slots' worth of keys.
    #[test]
    fn exact_keys_are_in_range_and_spread_runs() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..65_536u32 {
            let a = (0xC612_0000u32 + i).to_be_bytes();
            let k = exact_key_v4(&a);
            assert!(k < 1 << EXACT_KEY_BITS);
            seen.insert(k);
        }
        assert!(seen.len() > 60_000, "IPv4 run on {} keys", seen.len());
        seen.clear();
        for i in 0..65_536u128 {
            let a = (0x2001_0002_0000_0000_0000_0000_0000_0000u128 + i).to_be_bytes();
            let k = exact_key_v6(&a);
            assert!(k < 1 << EXACT_KEY_BITS);
            seen.insert(k);
        }
        assert!(seen.len() > 60_000, "IPv6 run on {} keys", seen.len());
        // Two /64s with the same interface id differ in key too.
        let a: [u8; 16] = 0x2001_0002_0000_0001_0000_0000_0000_0001u128.to_be_bytes();
        let b: [u8; 16] = 0x2001_0002_0000_0002_0000_0000_0000_0001u128.to_be_bytes();
        assert_ne!(exact_key_v6(&a), exact_key_v6(&b));
    }

    #[test]
    fn every_address_of_a_prefix_has_a_key_of_its_block() {
        let mut r = Lcg(7);
        for len in 0..=32u8 {
            for _ in 0..200 {
                let net = (r.next() as u32).to_be_bytes();
                let block = keys_v4(&net, len);
                assert!(block.start + block.len <= 1 << SUMMARY_KEY_BITS);
                for _ in 0..20 {
                    let a = inside_v4(net, len, &mut r);
                    assert!(block.contains(key_v4(&a)), "{net:?}/{len} {a:?} {block:?}");
                }
            }
        }
        for len in 0..=128u8 {
            for _ in 0..100 {
                let net = ((u128::from(r.next()) << 64) | u128::from(r.next())).to_be_bytes();
                let block = keys_v6(&net, len);
                assert!(block.start + block.len <= 1 << SUMMARY_KEY_BITS);
                let low = keys_v6_low(&net, len);
                assert!(low.start + low.len <= 1 << SUMMARY_KEY_BITS);
                for _ in 0..20 {
                    let a = inside_v6(net, len, &mut r);
                    assert!(block.contains(key_v6(&a)), "{net:?}/{len} {a:?} {block:?}");
                    assert!(low.contains(key_v6_low(&a)), "{net:?}/{len} {a:?} {low:?}");
                }
            }
        }
    }

    #[test]
    fn ipv6_keys_are_the_bit_windows_they_are_documented_as() {
        let mut r = Lcg(11);
        for _ in 0..10_000 {
            let a = ((u128::from(r.next()) << 64) | u128::from(r.next())).to_be_bytes();
            let first40 = u64::from_be_bytes([0, 0, 0, a[0], a[1], a[2], a[3], a[4]]);
            let bits24_64 = u64::from_be_bytes([0, 0, 0, a[3], a[4], a[5], a[6], a[7]]);
            assert_eq!(key_v6(&a), ((first40 >> 20) as u32 ^ first40 as u32) & MASK);
            assert_eq!(
                key_v6_low(&a),
                ((bits24_64 >> 20) as u32 ^ bits24_64 as u32) & MASK
            );
        }
    }

    #[test]
    fn blocks_are_as_small_as_the_prefix_allows() {
        let net = [198, 18, 128, 0];
        assert_eq!(keys_v4(&net, 24).len, 1);
        assert_eq!(keys_v4(&net, 20).len, 1);
        assert_eq!(keys_v4(&net, 16).len, 16);
        assert_eq!(keys_v4(&net, 0).len, 1 << 20);
        let net6 = [0x20, 0x01, 0, 2, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(keys_v6(&net6, 64).len, 1);
        assert_eq!(keys_v6(&net6, 40).len, 1);
        assert_eq!(keys_v6(&net6, 32).len, 256);
        assert_eq!(keys_v6(&net6, 19).len, 1 << 20);
        assert_eq!(keys_v6_low(&net6, 128).len, 1);
        assert_eq!(keys_v6_low(&net6, 64).len, 1);
        assert_eq!(keys_v6_low(&net6, 48).len, 1 << 16);
        assert_eq!(keys_v6_low(&net6, 43).len, 1 << 20);
        // Inside one /48, /64s have different second keys.
        let other = [0x20, 0x01, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(key_v6(&other), key_v6(&net6));
        assert_ne!(key_v6_low(&other), key_v6_low(&net6));
        // Addresses a /24 does not cover and that sit in another /20 have another key.
        assert_ne!(key_v4(&[198, 18, 0, 10]), key_v4(&[198, 18, 128, 5]));
        assert_ne!(key_v4(&[198, 19, 0, 1]), key_v4(&[198, 18, 128, 5]));
    }
}
