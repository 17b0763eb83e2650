//! The exact blocklist's slot tables (map layout 6): an open-addressed copy of the exact hashes'
//! keys in an array map, which the XDP program reads without a helper call.
//!
//! Why: a lookup in the kernel's hash (`__htab_map_lookup_elem`, which calls `memcmp`) is two
//! calls and two returns, and on CPUs whose mitigations route every return through a thunk
//! (SRSO "Safe RET", retbleed's return thunk) those cost more than the rest of the verdict. An
//! array lookup is inlined by the verifier: a bounds check and an address.
//!
//! - **The hash stays the list.** Every exact entry is in `block_v4`/`block_v6`; listing,
//!   capacities, adds that must not overwrite (EEXIST) and removals are the hash's. A slot
//!   table is an index of it, written by user space (groundzero's `bpf/slots.rs`) through a
//!   shared mapping, and rebuilt from the hash when a shield loads.
//! - **Hits live where the program finds the entry**: in the slot for an entry that has one,
//!   in the hash's value otherwise (an entry whose probe window was full, or a packet that met
//!   its slot mid-write). User space reports their sum.
//! - **Probing.** An entry's home is [`home_v4`]/[`home_v6`]; it goes in the first slot of the
//!   [`SLOT_PROBES`] from there that is empty or a tombstone, or in no slot when all are live
//!   (it is then in the hash only). A removal leaves a tombstone, never an empty slot. So a
//!   probe that meets an empty slot has proof that the address is not listed; one that meets
//!   only live slots and tombstones asks the hash. The owner's load, holding the writers' lock
//!   and every key of the hash, turns tombstones back into empty slots where no probe needs
//!   them (a tombstone before an empty slot, outside the window of an entry in the hash only).
//! - **Torn reads.** A slot's `tag` holds its state in its low two bits and a generation above,
//!   bumped on every change. The program reads the tag, then the key, then the tag again, and
//!   trusts the key only if the tag did not change (a sequence lock): a slot being rewritten
//!   for another address can never match a third one. A slot mid-write sends the packet to the
//!   hash. The reads are volatile so that the compiler keeps their order, and the CPU must
//!   too: BPF has no read barrier, so the program reads the slots only when user space set
//!   `Config::EXACT_SLOTS`, which it does on x86-64 alone (loads are not reordered with loads
//!   there); elsewhere every exact lookup asks the hash, as up to layout 5.
//! - **A hit may land on the wrong entry** when a slot is withdrawn and reused between a
//!   packet's check and its hit: one hit, on an entry that was being removed and re-added.

use crate::maps::EntryStats;

/// Slots per family: twice the default exact capacity, so that the tables are at most half
/// full and probes stay short. Beyond 1,048,576 entries per family (a larger `exact_capacity`)
/// the extra entries are still blocked, from the hash.
pub const EXACT_SLOT_BITS: u32 = 21;
pub const EXACT_SLOTS: u32 = 1 << EXACT_SLOT_BITS;
/// Slots a probe looks at, from the home slot on (wrapping at the end of the table).
pub const SLOT_PROBES: u32 = 8;

/// Map names.
pub const BLOCK_SLOTS_V4: &str = "block_slots_v4";
pub const BLOCK_SLOTS_V6: &str = "block_slots_v6";

/// A slot's state, in the low bits of its tag.
pub const SLOT_EMPTY: u32 = 0;
pub const SLOT_LIVE: u32 = 1;
pub const SLOT_TOMB: u32 = 2;
pub const SLOT_WRITING: u32 = 3;
pub const SLOT_STATE: u32 = 3;

/// The tag after `tag` for a slot going to `state`: the next generation.
#[inline(always)]
pub fn next_tag(tag: u32, state: u32) -> u32 {
    ((tag >> 2).wrapping_add(1) << 2) | state
}

/// An IPv4 slot: 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV4 {
    pub tag: u32,
    /// Network byte order.
    pub key: [u8; 4],
    pub stats: EntryStats,
}

/// An IPv6 slot: 40 bytes, the key 8-byte aligned (read as two words).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotV6 {
    pub tag: u32,
    pub _pad: u32,
    pub key: [u8; 16],
    pub stats: EntryStats,
}

/// The home slot of an IPv4 address: a multiplicative hash (2^32/φ, as the exact summary's
/// key, with another odd constant so that the two are not the same bits).
#[inline(always)]
pub fn home_v4(addr: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*addr).wrapping_mul(0x85EB_CA6B) >> (32 - EXACT_SLOT_BITS)
}

/// The home slot of an IPv6 address: both halves folded, then hashed.
#[inline(always)]
pub fn home_v6(addr: &[u8; 16]) -> u32 {
    let mut hi = [0u8; 8];
    let mut lo = [0u8; 8];
    hi.copy_from_slice(&addr[..8]);
    lo.copy_from_slice(&addr[8..]);
    let folded = u64::from_be_bytes(hi) ^ u64::from_be_bytes(lo).rotate_left(29);
    (folded.wrapping_mul(0xC2B2_AE3D_27D4_EB4F) >> (64 - EXACT_SLOT_BITS)) as u32
}

/// The `i`th slot of a probe from `home`.
#[inline(always)]
pub fn probe(home: u32, i: u32) -> u32 {
    home.wrapping_add(i) & (EXACT_SLOTS - 1)
}

// The tables are indexed by masking: their size must be a power of two.
const _: () = assert!(EXACT_SLOTS.is_power_of_two());
const _: () = assert!(core::mem::size_of::<SlotV4>() == 24);
const _: () = assert!(core::mem::size_of::<SlotV6>() == 40);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn homes_are_in_the_table_and_spread_neighbours() {
        let mut homes = std::collections::HashSet::new();
        for i in 0..4096u32 {
            let v4 = (0xC612_0000u32 + i).to_be_bytes();
            let h = home_v4(&v4);
            assert!(h < EXACT_SLOTS);
            homes.insert(h);
            let mut v6 = [0u8; 16];
            v6[..4].copy_from_slice(&[0x20, 0x01, 0, 2]);
            v6[12..].copy_from_slice(&i.to_be_bytes());
            assert!(home_v6(&v6) < EXACT_SLOTS);
        }
        // 4096 neighbours in 2^21 slots: a run of addresses must not share homes.
        assert!(homes.len() > 4000, "{} distinct homes", homes.len());
    }

    #[test]
    fn a_probe_wraps_at_the_end_of_the_table() {
        assert_eq!(probe(EXACT_SLOTS - 1, 1), 0);
        assert_eq!(probe(5, 2), 7);
    }

    #[test]
    fn every_change_of_a_tag_is_a_new_generation() {
        let t = next_tag(SLOT_EMPTY, SLOT_WRITING);
        assert_eq!(t & SLOT_STATE, SLOT_WRITING);
        let live = next_tag(t, SLOT_LIVE);
        assert_ne!(live, t);
        let tomb = next_tag(live, SLOT_TOMB);
        let again = next_tag(next_tag(tomb, SLOT_WRITING), SLOT_LIVE);
        assert_eq!(again & SLOT_STATE, SLOT_LIVE);
        assert_ne!(again, live, "a reused slot never shows its old tag");
        assert_eq!(next_tag(u32::MAX, SLOT_LIVE) & SLOT_STATE, SLOT_LIVE);
    }
}
