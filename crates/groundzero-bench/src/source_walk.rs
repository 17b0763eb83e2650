//! A flood from many sources inside one `BPF_PROG_TEST_RUN`: a hand-assembled XDP program that
//! writes the next source of a list into the frame, then tail-calls the program under test.
//!
//! Part 2's *distinct sources* samples run each packet in a syscall of its own (`repeat = 1`):
//! between two packets the syscall path and the benchmark's own work run, so everything the
//! program under test reads is cold, its code, configuration and counters included. A flood
//! does not look like that: NAPI runs the program on packet after packet, and only what
//! depends on the source (a summary's line, the hash bucket and element, their pages) is new
//! each time. `BPF_PROG_TEST_RUN` without live frames runs the program `repeat` times on one
//! buffer and does not restore the data between runs, so the walker keeps its position in the
//! frame's payload: run *i* sends source *i* of the list. Each run's cost is the walker's, the
//! tail call's and the target's; the walker before the floor program, measured the same way,
//! is subtracted.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use groundzero::sys::{self, MapCreateAttr, TestRunAttr};

use crate::{
    handmade::{
        insn, load_xdp, ADD_K, AND_K, BPF_PSEUDO_MAP_FD, CALL, EXIT, HELPER_MAP_LOOKUP_ELEM, JEQ_K,
        JGT_X, LDX_DW, LDX_W, LD_IMM64, MOV_K, MOV_X, STX_DW, STX_W,
    },
    per_packet::Family,
};

const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
const HELPER_TAIL_CALL: i32 = 12;
/// `enum bpf_cmd`: BPF_MAP_UPDATE_ELEM, BPF_PROG_GET_FD_BY_ID.
const CMD_MAP_UPDATE_ELEM: libc::c_long = 2;
const CMD_PROG_GET_FD_BY_ID: libc::c_long = 13;

/// Where the walker keeps its position: the first payload bytes of an untagged UDP frame
/// (Ethernet 14 + IPv4 20 + UDP 8; IPv6's header is 40).
fn index_offset(family: Family) -> usize {
    match family {
        Family::V4 => 42,
        Family::V6 => 62,
    }
}

/// The source address's offset in an untagged frame, and its length.
fn source_field(family: Family) -> (usize, usize) {
    match family {
        Family::V4 => (26, 4),
        Family::V6 => (22, 16),
    }
}

/// The walker of one family: its list of sources and the one-slot program array it jumps
/// through.
pub struct SourceWalk {
    family: Family,
    /// Held for the program's life (the program holds its own reference too).
    _sources: OwnedFd,
    target: OwnedFd,
    prog: OwnedFd,
    len: u32,
}

/// `union bpf_attr`'s BPF_MAP_*_ELEM member.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr`'s BPF_*_GET_FD_BY_ID member.
#[repr(C)]
struct GetFdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

fn create_map(map_type: u32, value_size: u32, max_entries: u32, what: &str) -> Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size: 4,
        value_size,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: a valid BPF_MAP_CREATE attribute; on success, a new fd nothing else owns.
    unsafe { sys::bpf(sys::cmd::MAP_CREATE, &mut attr).map(|fd| sys::owned_fd(fd)) }
        .with_context(|| format!("BPF_MAP_CREATE for the source walk's {what}"))
}

/// An fd of the loaded program whose kernel id is `id` (a `Shield`'s, say).
pub fn program_fd_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = GetFdAttr {
        id,
        next_id: 0,
        open_flags: 0,
    };
    // SAFETY: a valid BPF_PROG_GET_FD_BY_ID attribute; on success, a new fd nothing else owns.
    unsafe { sys::bpf(CMD_PROG_GET_FD_BY_ID, &mut attr).map(|fd| sys::owned_fd(fd)) }
        .with_context(|| format!("BPF_PROG_GET_FD_BY_ID {id}"))
}

impl SourceWalk {
    /// A walker over `sources` (network-order addresses of `family`); their count must be a
    /// power of two (the position wraps with a mask).
    pub fn load(family: Family, sources: &[Vec<u8>]) -> Result<Self> {
        let len = u32::try_from(sources.len()).context("too many sources")?;
        ensure!(len.is_power_of_two(), "{len} sources: not a power of two");
        let (src_at, src_len) = source_field(family);
        ensure!(
            sources.iter().all(|s| s.len() == src_len),
            "a source of the wrong length for {family:?}"
        );
        let sources_map = create_map(BPF_MAP_TYPE_ARRAY, 16, len, "sources")?;
        let keys: Vec<u8> = (0..len).flat_map(u32::to_ne_bytes).collect();
        let values: Vec<u8> = sources
            .iter()
            .flat_map(|s| {
                let mut v = [0u8; 16];
                v[..s.len()].copy_from_slice(s);
                v
            })
            .collect();
        const CHUNK: usize = 1 << 16;
        for first in (0..len as usize).step_by(CHUNK) {
            let count = CHUNK.min(len as usize - first);
            let (_, result) = sys::map_update_batch(
                sources_map.as_fd(),
                &keys[first * 4..(first + count) * 4],
                &values[first * 16..(first + count) * 16],
                count,
                0,
            );
            result.context("BPF_MAP_UPDATE_BATCH of the source walk's sources")?;
        }
        let target = create_map(BPF_MAP_TYPE_PROG_ARRAY, 4, 1, "program array")?;

        let at = index_offset(family) as i16;
        let src_at = src_at as i16;
        let mut insns = vec![
            insn(MOV_X, 6, 1, 0, 0),                 // r6 = ctx
            insn(LDX_W, 7, 1, 0, 0),                 // r7 = data
            insn(LDX_W, 8, 1, 4, 0),                 // r8 = data_end
            insn(MOV_X, 2, 7, 0, 0),                 // r2 = data
            insn(ADD_K, 2, 0, 0, i32::from(at) + 4), // past the position
            insn(JGT_X, 2, 8, 0, 0),                 // short frame: abort (patched)
            insn(LDX_W, 9, 7, at, 0),                // r9 = position
            insn(AND_K, 9, 0, 0, (len - 1) as i32),  // wrapped
            insn(STX_W, 10, 9, -4, 0),               // the key, on the stack
            insn(MOV_X, 2, 10, 0, 0),                //
            insn(ADD_K, 2, 0, 0, -4),                // r2 = &key
            insn(LD_IMM64, 1, BPF_PSEUDO_MAP_FD, 0, sources_map.as_raw_fd()),
            0,                                           // (second half of LD_IMM64)
            insn(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM), // inlined for an array
            insn(JEQ_K, 0, 0, 0, 0),                     // no slot: abort (patched)
        ];
        let copy: &[(i16, u8, u8)] = match family {
            Family::V4 => &[(0, LDX_W, STX_W)],
            Family::V6 => &[(0, LDX_DW, STX_DW), (8, LDX_DW, STX_DW)],
        };
        for &(off, load, store) in copy {
            insns.push(insn(load, 3, 0, off, 0)); // r3 = the source's bytes
            insns.push(insn(store, 7, 3, src_at + off, 0)); // into the frame
        }
        insns.extend([
            insn(ADD_K, 9, 0, 0, 1),  // the next position
            insn(STX_W, 7, 9, at, 0), // kept in the frame
            insn(MOV_X, 1, 6, 0, 0),  // r1 = ctx
            insn(LD_IMM64, 2, BPF_PSEUDO_MAP_FD, 0, target.as_raw_fd()),
            0,
            insn(MOV_K, 3, 0, 0, 0), // slot 0
            insn(CALL, 0, 0, 0, HELPER_TAIL_CALL),
        ]);
        // Reached only if the tail call failed (an empty slot): XDP_ABORTED.
        let abort = insns.len();
        insns.extend([insn(MOV_K, 0, 0, 0, 0), insn(EXIT, 0, 0, 0, 0)]);
        // Patch the two forward jumps to the abort.
        for (at_insn, code) in [(5usize, JGT_X), (14, JEQ_K)] {
            let old = insns[at_insn].to_le_bytes();
            let off = (abort - at_insn - 1) as i16;
            let regs = old[1];
            let imm = i32::from_le_bytes([old[4], old[5], old[6], old[7]]);
            insns[at_insn] = insn(code, regs & 0xf, regs >> 4, off, imm);
        }
        let prog = load_xdp(&insns, "source walk")?;
        Ok(Self {
            family,
            _sources: sources_map,
            target,
            prog,
            len,
        })
    }

    /// Points the walker's tail call at `program` (an XDP program fd).
    pub fn aim(&self, program: BorrowedFd<'_>) -> Result<()> {
        let key = 0u32;
        let value = program.as_raw_fd() as u32;
        let mut attr = ElemAttr {
            map_fd: self.target.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        // SAFETY: a valid BPF_MAP_UPDATE_ELEM attribute whose key and value outlive the call.
        unsafe { sys::bpf(CMD_MAP_UPDATE_ELEM, &mut attr) }
            .context("BPF_MAP_UPDATE_ELEM of the source walk's program array")?;
        Ok(())
    }

    /// Runs `repeat` packets from the walker's sources, starting at the first, through the
    /// program it is aimed at: the last verdict and the kernel's mean time per packet. Checks
    /// that the position really moved `repeat` times (the kernel kept the frame's data from
    /// run to run), so that each packet had its own source.
    pub fn run(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let at = index_offset(self.family);
        ensure!(frame.len() >= at + 4, "a frame too short for the walk");
        let mut input = frame.to_vec();
        input[at..at + 4].fill(0);
        let mut out = vec![0u8; input.len()];
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: input.len() as u32,
            data_in: input.as_ptr() as u64,
            data_size_out: out.len() as u32,
            data_out: out.as_mut_ptr() as u64,
            repeat,
            ..Default::default()
        };
        // SAFETY: a valid bpf_attr.test; the kernel reads data_size_in bytes and writes at most
        // data_size_out.
        unsafe { sys::bpf(sys::cmd::PROG_TEST_RUN, &mut attr) }
            .context("BPF_PROG_TEST_RUN of the source walk")?;
        // Each run stores its wrapped position plus one.
        let position = u32::from_ne_bytes(out[at..at + 4].try_into().unwrap());
        let expected = ((repeat.max(1) - 1) & (self.len - 1)) + 1;
        ensure!(
            position == expected,
            "the walk's position is {position} after {repeat} runs, not {expected}: the kernel \
             did not keep the frame from run to run"
        );
        Ok((attr.retval, Duration::from_nanos(attr.duration.into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handmade::{tests::root, BareLookup};
    use groundzero_lab::craft;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Four sources, the third blocked: the verdict of a run of n packets is the n-th source's
    /// (wrapping after four), which only happens if every packet had the next source.
    #[test]
    fn each_run_takes_the_next_source() {
        if !root() {
            return;
        }
        for family in [Family::V4, Family::V6] {
            let sources: Vec<Vec<u8>> = match family {
                Family::V4 => (1..=4u8).map(|i| vec![198, 18, 7, i]).collect(),
                Family::V6 => (1..=4u16)
                    .map(|i| Ipv6Addr::new(0x2001, 2, 0, 7, 0, 0, 0, i).octets().to_vec())
                    .collect(),
            };
            let walk = SourceWalk::load(family, &sources).unwrap();
            let bare = BareLookup::load(family, 64, true).unwrap();
            bare.insert(&sources[2]).unwrap();
            walk.aim(bare.prog_fd()).unwrap();
            let frame = match family {
                Family::V4 => craft::udp4(Ipv4Addr::new(198, 18, 9, 9), &[0u8; 18]),
                Family::V6 => craft::udp6("2001:2:0:9::9".parse().unwrap(), &[0u8; 18]),
            };
            // Run 3 has source 3 (index 2): dropped; runs 1, 2 and 4 pass.
            assert_eq!(
                walk.run(&frame, 3).unwrap().0,
                1,
                "{family:?}: third source"
            );
            assert_eq!(
                walk.run(&frame, 4).unwrap().0,
                2,
                "{family:?}: fourth source"
            );
            assert_eq!(walk.run(&frame, 7).unwrap().0, 1, "{family:?}: wrapped");
        }
    }
}
