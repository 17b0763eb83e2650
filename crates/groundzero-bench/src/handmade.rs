//! Two XDP programs assembled here instruction by instruction and loaded with the raw
//! `bpf(BPF_PROG_LOAD)` syscall (like [`crate::progs::RawXdp`]):
//!
//! - [`BareLookup`]: check the EtherType, look the source address up in one BPF hash map, drop
//!   if found. It is the least any source blocklist can do per packet, so with the same keys in
//!   a map of the same capacity it shows which cache misses the map itself costs and which ones
//!   groundzero adds.
//! - [`SourceSpray`]: an `XDP_TX` flood generator (run in live-frames mode, as part 3's) that
//!   rewrites the low 16 bits of each frame's IPv4 source to a random value in a range, fixing
//!   the header checksum through the IP ID field, so a flood can come from one source or from
//!   thousands.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use anyhow::{ensure, Context, Result};
use groundzero::sys::{self, MapCreateAttr, ProgLoadAttr};

use crate::per_packet::Family;

const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_MAP_TYPE_HASH: u32 = 1;
pub(crate) const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_F_NO_PREALLOC: u32 = 1;
pub(crate) const HELPER_MAP_LOOKUP_ELEM: i32 = 1;
const HELPER_GET_PRANDOM_U32: i32 = 7;

/// One `struct bpf_insn`.
pub(crate) fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let off = off.to_le_bytes();
    let imm = imm.to_le_bytes();
    u64::from_le_bytes([
        code,
        dst | (src << 4),
        off[0],
        off[1],
        imm[0],
        imm[1],
        imm[2],
        imm[3],
    ])
}

// Opcodes (include/uapi/linux/bpf.h): class | size/op | source. Shared with the source walk.
pub(crate) const LDX_W: u8 = 0x61;
const LDX_H: u8 = 0x69;
pub(crate) const LDX_DW: u8 = 0x79;
const STX_B: u8 = 0x73;
pub(crate) const STX_W: u8 = 0x63;
pub(crate) const STX_DW: u8 = 0x7b;
pub(crate) const MOV_K: u8 = 0xb7;
pub(crate) const MOV_X: u8 = 0xbf;
pub(crate) const ADD_K: u8 = 0x07;
const SUB_X: u8 = 0x1f;
pub(crate) const AND_K: u8 = 0x57;
const RSH_K: u8 = 0x77;
pub(crate) const JGT_X: u8 = 0x2d;
const JNE_K: u8 = 0x55;
pub(crate) const JEQ_K: u8 = 0x15;
const JSGE_K: u8 = 0x75;
pub(crate) const CALL: u8 = 0x85;
pub(crate) const EXIT: u8 = 0x95;
pub(crate) const LD_IMM64: u8 = 0x18;

pub(crate) fn load_xdp(insns: &[u64], what: &str) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        // As aya loads groundzero's: the source walk (part 2) tail-calls into either.
        expected_attach_type: sys::BPF_XDP,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: a valid BPF_PROG_LOAD attribute whose pointers outlive the call; on success the
    // kernel returns a new fd that nothing else owns.
    unsafe { sys::bpf(sys::cmd::PROG_LOAD, &mut attr).map(|fd| sys::owned_fd(fd)) }.with_context(
        || {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            format!(
                "loading the hand-assembled {what}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        },
    )
}

/// A preallocated BPF hash map of source addresses with 8-byte values, and the program that
/// drops what it holds.
pub struct BareLookup {
    map: OwnedFd,
    prog: OwnedFd,
    key_size: usize,
}

impl BareLookup {
    /// `capacity` slots keyed by `family`'s source address; `preallocated` as groundzero's
    /// maps are (every element allocated up front, in one vmalloc'd area of 4 KiB pages), or
    /// not (`BPF_F_NO_PREALLOC`: each element allocated on insert from the kernel's slab, in
    /// its directly mapped memory, which the kernel maps with huge pages).
    pub fn load(family: Family, capacity: u32, preallocated: bool) -> Result<Self> {
        let (key_size, key_offset, ethertype) = match family {
            // 14-byte Ethernet header; the source is at 12 in IPv4's header, 8 in IPv6's.
            Family::V4 => (4usize, 26i32, 0x0800u16),
            Family::V6 => (16, 22, 0x86dd),
        };
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: key_size as u32,
            value_size: 8,
            max_entries: capacity,
            map_flags: if preallocated { 0 } else { BPF_F_NO_PREALLOC },
        };
        // SAFETY: a valid BPF_MAP_CREATE attribute; on success, a new fd nothing else owns.
        let map = unsafe { sys::bpf(sys::cmd::MAP_CREATE, &mut attr).map(|fd| sys::owned_fd(fd)) }
            .context("BPF_MAP_CREATE for the bare lookup")?;
        // The EtherType as a little-endian load of the two network-order bytes sees it.
        let ethertype_le = i32::from(u16::from_le_bytes(ethertype.to_be_bytes()));
        let fd = map.as_raw_fd();
        let insns = [
            insn(LDX_W, 6, 1, 0, 0),                            // 0: r6 = ctx->data
            insn(LDX_W, 7, 1, 4, 0),                            // 1: r7 = ctx->data_end
            insn(MOV_X, 2, 6, 0, 0),                            // 2: r2 = r6
            insn(ADD_K, 2, 0, 0, key_offset + key_size as i32), // 3
            insn(JGT_X, 2, 7, 10, 0),                           // 4: short frame: pass (15)
            insn(LDX_H, 3, 6, 12, 0),                           // 5: r3 = EtherType
            insn(JNE_K, 3, 0, 8, ethertype_le),                 // 6: other family: pass (15)
            insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, fd),        // 7-8: r1 = map
            0,
            insn(MOV_X, 2, 6, 0, 0),                     // 9: r2 = r6
            insn(ADD_K, 2, 0, 0, key_offset),            // 10: r2 = &source
            insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM), // 11
            insn(JEQ_K, 0, 0, 2, 0),                     // 12: not found: pass (15)
            insn(MOV_K, 0, 0, 0, 1),                     // 13: XDP_DROP
            insn(EXIT, 0, 0, 0, 0),                      // 14
            insn(MOV_K, 0, 0, 0, 2),                     // 15: XDP_PASS
            insn(EXIT, 0, 0, 0, 0),                      // 16
        ];
        let prog = load_xdp(&insns, "bare lookup")?;
        Ok(Self {
            map,
            prog,
            key_size,
        })
    }

    /// Adds `keys` (network-order addresses, `key_size` bytes each) with `BPF_MAP_UPDATE_BATCH`.
    pub fn insert(&self, keys: &[u8]) -> Result<()> {
        ensure!(
            keys.len().is_multiple_of(self.key_size),
            "keys of the wrong size"
        );
        let n = keys.len() / self.key_size;
        const CHUNK: usize = 1 << 16;
        let values = vec![0u8; 8 * CHUNK.min(n.max(1))];
        for first in (0..n).step_by(CHUNK) {
            let count = CHUNK.min(n - first);
            let (_, result) = sys::map_update_batch(
                self.map.as_fd(),
                &keys[first * self.key_size..(first + count) * self.key_size],
                &values[..count * 8],
                count,
                0,
            );
            result.context("BPF_MAP_UPDATE_BATCH into the bare lookup's map")?;
        }
        Ok(())
    }

    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<(u32, std::time::Duration)> {
        crate::progs::test_run_fd(self.prog.as_raw_fd(), packet, repeat)
    }

    pub fn prog_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }
}

/// The flood generator that varies the source.
pub struct SourceSpray {
    pub prog: crate::progs::RawXdp,
}

/// Offsets in an untagged IPv4 frame.
const IP_ID: i16 = 18;
const IP_SOURCE_LOW: i16 = 28;
const UDP_CHECKSUM: usize = 40;

impl SourceSpray {
    /// Prepares `frame` (untagged IPv4/UDP, at least 60 bytes) for spraying: no UDP checksum
    /// (optional in IPv4, and it would cover the source). Returns the program that sets the
    /// source's low 16 bits to `low_base + (random & mask)` on every frame, keeping the IPv4
    /// header checksum right by changing the IP ID by the opposite amount.
    pub fn new(frame: &mut [u8], low_base: u16, mask: u16) -> Result<Self> {
        Ok(Self {
            prog: crate::progs::RawXdp::from_fd(spray_program(frame, low_base, mask)?),
        })
    }
}

/// [`SourceSpray`]'s program.
fn spray_program(frame: &mut [u8], low_base: u16, mask: u16) -> Result<OwnedFd> {
    ensure!(frame.len() >= 60, "a spray frame is at least 60 bytes");
    ensure!(
        u32::from(low_base) + u32::from(mask) <= 0xffff,
        "the source range leaves its /16"
    );
    frame[UDP_CHECKSUM..UDP_CHECKSUM + 2].fill(0);
    let word = |at: usize| u32::from(u16::from_be_bytes([frame[at], frame[at + 1]]));
    // One's-complement sums are modulo 0xffff: keeping source-low + ID constant keeps the
    // header's checksum valid.
    let k = (word(IP_SOURCE_LOW as usize) + word(IP_ID as usize)) % 0xffff;
    let insns = [
        insn(LDX_W, 6, 1, 0, 0),                     // 0: r6 = data
        insn(LDX_W, 7, 1, 4, 0),                     // 1: r7 = data_end
        insn(MOV_X, 2, 6, 0, 0),                     // 2
        insn(ADD_K, 2, 0, 0, 60),                    // 3
        insn(JGT_X, 2, 7, 15, 0),                    // 4: short: transmit as is (20)
        insn(CALL, 0, 0, 0, HELPER_GET_PRANDOM_U32), // 5
        insn(AND_K, 0, 0, 0, i32::from(mask)),       // 6
        insn(ADD_K, 0, 0, 0, i32::from(low_base)),   // 7: r0 = new source low half
        insn(MOV_X, 3, 0, 0, 0),                     // 8
        insn(RSH_K, 3, 0, 0, 8),                     // 9
        insn(STX_B, 6, 3, IP_SOURCE_LOW, 0),         // 10
        insn(STX_B, 6, 0, IP_SOURCE_LOW + 1, 0),     // 11
        insn(MOV_K, 4, 0, 0, k as i32),              // 12: r4 = K
        insn(SUB_X, 4, 0, 0, 0),                     // 13: r4 = K - low
        insn(JSGE_K, 4, 0, 1, 0),                    // 14
        insn(ADD_K, 4, 0, 0, 0xffff),                // 15
        insn(MOV_X, 5, 4, 0, 0),                     // 16
        insn(RSH_K, 5, 0, 0, 8),                     // 17
        insn(STX_B, 6, 5, IP_ID, 0),                 // 18
        insn(STX_B, 6, 4, IP_ID + 1, 0),             // 19
        insn(MOV_K, 0, 0, 0, 3),                     // 20: XDP_TX
        insn(EXIT, 0, 0, 0, 0),                      // 21
    ];
    load_xdp(&insns, "source spray")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use groundzero_lab::craft;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Whether the test may load BPF programs; says why not when it may not.
    pub(crate) fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("skipped: loading BPF programs needs root");
        }
        root
    }

    #[test]
    fn bare_lookup_drops_exactly_what_its_map_holds() {
        if !root() {
            return;
        }
        let v4 = BareLookup::load(Family::V4, 1024, true).unwrap();
        v4.insert(&[198, 18, 0, 10]).unwrap();
        let udp4 = |a: [u8; 4]| craft::udp4(Ipv4Addr::from(a), &[0u8; 18]);
        assert_eq!(v4.test_run(&udp4([198, 18, 0, 10]), 1).unwrap().0, 1);
        assert_eq!(v4.test_run(&udp4([198, 18, 0, 11]), 1).unwrap().0, 2);
        let v6 = BareLookup::load(Family::V6, 1024, false).unwrap();
        let blocked: Ipv6Addr = "2001:2::10".parse().unwrap();
        v6.insert(&blocked.octets()).unwrap();
        let udp6 = |a: Ipv6Addr| craft::udp6(a, &[0u8; 18]);
        assert_eq!(v6.test_run(&udp6(blocked), 1).unwrap().0, 1);
        assert_eq!(
            v6.test_run(&udp6("2001:2::11".parse().unwrap()), 1)
                .unwrap()
                .0,
            2
        );
        // An IPv4 frame never matches the IPv6 program's map.
        assert_eq!(v6.test_run(&udp4([198, 18, 0, 10]), 1).unwrap().0, 2);
    }

    #[test]
    fn source_spray_varies_the_source_and_keeps_the_checksum_valid() {
        if !root() {
            return;
        }
        let mut frame = craft::udp4(Ipv4Addr::new(198, 19, 0, 0), &[0x5a; 18]);
        let fd = spray_program(&mut frame, 0x0100, 0x00ff).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut out = vec![0u8; 256];
            let mut attr = sys::TestRunAttr {
                prog_fd: fd.as_raw_fd() as u32,
                data_size_in: frame.len() as u32,
                data_in: frame.as_ptr() as u64,
                data_size_out: out.len() as u32,
                data_out: out.as_mut_ptr() as u64,
                repeat: 1,
                ..Default::default()
            };
            // SAFETY: a valid bpf_attr.test; the kernel writes at most data_size_out bytes.
            unsafe { sys::bpf(sys::cmd::PROG_TEST_RUN, &mut attr) }.unwrap();
            assert_eq!(attr.retval, 3, "XDP_TX");
            let ip = &out[14..34];
            assert_eq!(&ip[12..14], &[198, 19], "the /16 is kept");
            let low = u16::from_be_bytes([ip[14], ip[15]]);
            assert!((0x0100..=0x01ff).contains(&low), "source low half {low:#x}");
            seen.insert(low);
            let sum = (0..10)
                .map(|i| u32::from(u16::from_be_bytes([ip[2 * i], ip[2 * i + 1]])))
                .sum::<u32>();
            let folded = (sum & 0xffff) + (sum >> 16);
            assert_eq!(
                (folded & 0xffff) + (folded >> 16),
                0xffff,
                "header checksum"
            );
            assert_eq!(&out[40..42], &[0, 0], "no UDP checksum");
        }
        assert!(
            seen.len() > 50,
            "only {} distinct sources in 200",
            seen.len()
        );
    }

    #[test]
    fn instruction_encoding_matches_the_kernel_layout() {
        // r2 = *(u16 *)(r6 + 12): opcode, dst 2 | src 6 << 4, offset 12 little-endian.
        assert_eq!(
            insn(LDX_H, 2, 6, 12, 0).to_le_bytes(),
            [0x69, 0x62, 12, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            insn(MOV_K, 0, 0, 0, -1).to_le_bytes(),
            [0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
