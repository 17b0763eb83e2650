//! A reference program for the benchmarks, not part of the firewall: parse Ethernet + IPv4,
//! one hash lookup on the source, no counters, no VLAN, no IPv6. It is the floor a verdict
//! written in Rust/Aya can reach (issue #18 measures groundzero against it).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::HashMap,
    programs::XdpContext,
};

/// Blocked IPv4 sources (network byte order) -> hits (never written here: no counters).
#[map(name = "minimal_block")]
static MINIMAL_BLOCK: HashMap<[u8; 4], u64> = HashMap::with_max_entries(1 << 20, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

#[xdp]
pub fn minimal(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    let end = ctx.data_end();
    // One bounds check covers the Ethernet header and the IPv4 source address.
    if start + ETH_HLEN + 16 > end {
        return XDP_PASS;
    }
    // SAFETY: the check above keeps bytes [start, start + 30) inside the packet.
    let (ethertype, src) = unsafe {
        (
            core::ptr::read_unaligned((start + 12) as *const u16),
            core::ptr::read_unaligned((start + ETH_HLEN + 12) as *const [u8; 4]),
        )
    };
    if ethertype != ETH_P_IP_BE {
        return XDP_PASS;
    }
    // SAFETY: the value is only tested for presence.
    match unsafe { MINIMAL_BLOCK.get(&src) } {
        Some(_) => XDP_DROP,
        None => XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
