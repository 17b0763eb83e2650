//! The verdict taken apart, for groundzero-bench part 6: one XDP program per piece of the
//! verdict, each running the real parser and then that one piece, built from the same modules
//! as the groundzero program (the maps here are this object's own, filled by the bench).
//! A piece's cost is its program's time minus `piece_parse`'s, measured in the same round.
//! Each program's verdict depends on its piece's result, so the compiler cannot drop the piece;
//! with the bench's lists every packet passes except where a hit is expected.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features, dead_code)]

#[path = "../counting.rs"]
mod counting;
#[path = "../lists.rs"]
mod lists;
#[path = "../xdp_bytes.rs"]
mod xdp_bytes;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use groundzero_common::{maps::Config, parse, Parsed, Reason};
use lists::*;
use xdp_bytes::XdpBytes;

#[map(name = "config")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[inline(always)]
fn parsed(ctx: &XdpContext) -> (Parsed, u64) {
    let pkt = XdpBytes {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    (parse(&pkt), (pkt.end - pkt.start) as u64)
}

#[inline(always)]
fn verdict(hit: bool) -> u32 {
    if hit {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// The parser alone: passes IP, drops anything else.
#[xdp]
pub fn piece_parse(ctx: XdpContext) -> u32 {
    match parsed(&ctx).0 {
        Parsed::V4 { .. } | Parsed::V6 { .. } => XDP_PASS,
        _ => XDP_DROP,
    }
}

/// Parse, then read the config word (an inlined array lookup).
#[xdp]
pub fn piece_config(ctx: XdpContext) -> u32 {
    let (p, _) = parsed(&ctx);
    let monitor = CONFIG.get(0).is_some_and(|c| Config::monitor_in(c.flags));
    verdict(monitor || !matches!(p, Parsed::V4 { .. } | Parsed::V6 { .. }))
}

// One program per family for every piece that reads a map: a call site shared by two maps
// (LLVM merges the tails of the two branches) makes the verifier give up inlining the lookup,
// and it becomes the generic helper with an indirect call.
macro_rules! per_family {
    ($v4:ident, $v6:ident, |$src:ident| $e4:expr, $e6:expr) => {
        #[xdp]
        pub fn $v4(ctx: XdpContext) -> u32 {
            match parsed(&ctx).0 {
                Parsed::V4 { src: $src, .. } => $e4,
                _ => XDP_DROP,
            }
        }
        #[xdp]
        pub fn $v6(ctx: XdpContext) -> u32 {
            match parsed(&ctx).0 {
                Parsed::V6 { src: $src, .. } => $e6,
                _ => XDP_DROP,
            }
        }
    };
}

// Parse, then the allowlist's prefix summary (one array read for IPv4, two for IPv6).
per_family!(
    piece_allow_summary_v4,
    piece_allow_summary_v6,
    |src| verdict(may_match_v4(&ALLOW_BITS_V4, &ALLOW_BITS_V4, &src)),
    verdict(may_match_v6(&ALLOW_BITS_V6, &ALLOW_BITS_V6_LOW, &src))
);

// Parse, then the exact blocklist's hash lookup (no hit counted).
per_family!(
    piece_exact_v4,
    piece_exact_v6,
    |src| verdict(BLOCK_V4.get_ptr(&src).is_some()),
    verdict(BLOCK_V6.get_ptr(&src).is_some())
);

#[inline(always)]
fn counted(found: Option<*const groundzero_common::maps::EntryStats>) -> u32 {
    match found {
        Some(stats) => {
            hit(stats);
            XDP_DROP
        }
        None => XDP_PASS,
    }
}

// Parse, then the exact slot table's probe (no hit counted): what the verdict asks before the
// hash (map layout 6), an inlined array read.
per_family!(
    piece_exact_slot_v4,
    piece_exact_slot_v6,
    |src| verdict(matches!(find_v4(&src), Found::Slot(_))),
    verdict(matches!(find_v6(&src), Found::Slot(_)))
);

#[inline(always)]
fn slot(found: Found) -> Option<*const groundzero_common::maps::EntryStats> {
    match found {
        Found::Slot(stats) => Some(stats),
        _ => None,
    }
}

// Parse, then the exact lookup as the verdict makes it (the slot table) and, on a hit, the
// entry's hit counter and clock.
per_family!(
    piece_exact_hit_v4,
    piece_exact_hit_v6,
    |src| counted(slot(find_v4(&src))),
    counted(slot(find_v6(&src)))
);

// Parse, then the blocked prefixes' summary.
per_family!(
    piece_prefix_summary_v4,
    piece_prefix_summary_v6,
    |src| verdict(may_match_v4(&BLOCK_NET_BITS_V4, &BLOCK_NET_BITS_V4, &src)),
    verdict(may_match_v6(
        &BLOCK_NET_BITS_V6,
        &BLOCK_NET_BITS_V6_LOW,
        &src
    ))
);

/// Parse, then the program-wide counter write.
#[xdp]
pub fn piece_count_total(ctx: XdpContext) -> u32 {
    let (p, bytes) = parsed(&ctx);
    counting::count_total(Reason::NoMatch, bytes);
    verdict(!matches!(p, Parsed::V4 { .. } | Parsed::V6 { .. }))
}

/// Parse, then the per-interface counter write.
#[xdp]
pub fn piece_count_interface(ctx: XdpContext) -> u32 {
    let (p, bytes) = parsed(&ctx);
    counting::count_interface(Reason::NoMatch, ctx.ingress_ifindex() as u32, bytes);
    verdict(!matches!(p, Parsed::V4 { .. } | Parsed::V6 { .. }))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
