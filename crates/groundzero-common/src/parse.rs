//! The packet parser, written once for both sides.
//!
//! It is generic over [`PacketBytes`]: the XDP program implements it with bounds-checked reads
//! between `data` and `data_end` (the check the verifier wants to see), the host implements it
//! for `[u8]`. So the differential test compares the kernel and the model on the *same* parsing
//! code, compiled twice, and any disagreement points at maps or the BPF toolchain, not at two
//! parsers drifting apart.
//!
//! Only what the verdict needs is parsed: Ethernet, up to two VLAN tags (802.1Q, 802.1ad), and the
//! IPv4 or IPv6 header with its source address. IPv4 options are allowed (IHL 5..=15); every
//! fragment carries the source address, so fragments get the same verdict as whole packets.

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
pub const IPV4_MIN_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;

/// How many VLAN tags we look through. A third tag is treated as non-IP, like xdp-filter does.
pub const MAX_VLAN_TAGS: usize = 2;

/// Read access to a packet. `load` returns `None` when `offset + N` runs past the end;
/// `head` returns the first `N` bytes in place, or `None` when the packet is shorter.
pub trait PacketBytes {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
    fn head<const N: usize>(&self) -> Option<&[u8; N]>;
}

impl PacketBytes for [u8] {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }

    #[inline(always)]
    fn head<const N: usize>(&self) -> Option<&[u8; N]> {
        self.get(..N)?.try_into().ok()
    }
}

/// Ethernet + an IPv4 header without options.
const V4_HEAD: usize = ETH_HLEN + IPV4_MIN_HLEN;
/// Ethernet + the IPv6 header.
const V6_HEAD: usize = ETH_HLEN + IPV6_HLEN;

/// What the parser learned about a packet.
///
/// `repr(C)`: the addresses then sit at 8-byte aligned offsets of the value. The XDP build
/// allows misaligned memory access (see crates/groundzero/build.rs) and LLVM would otherwise
/// merge byte stores of `src` into a misaligned stack store, which the verifier refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub enum Parsed {
    /// Not IP (ARP, LLDP, 802.3 length frames, a third VLAN tag, ...).
    NonIp { ethertype: u16 },
    /// A header was cut short or is inconsistent; `at` names which.
    Malformed { at: MalformedAt },
    V4 {
        src: [u8; 4],
        protocol: u8,
        l3_offset: usize,
        l4_offset: usize,
    },
    V6 {
        src: [u8; 16],
        next_header: u8,
        l3_offset: usize,
        l4_offset: usize,
    },
}

/// Where parsing stopped, for diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MalformedAt {
    /// Shorter than an Ethernet header.
    Ethernet,
    /// A VLAN tag was announced but is cut short.
    Vlan,
    /// IPv4: cut short, wrong version, IHL < 5, or total length shorter than the header.
    Ipv4,
    /// IPv6: cut short or wrong version.
    Ipv6,
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses the headers the verdict needs. Never panics, whatever the input.
///
/// Untagged IPv4 without options and untagged IPv6, nearly all traffic, take a fast path with
/// one bounds check for every field read; everything else, and whatever the fast path does not
/// accept, goes through [`parse_tagged`], which gives the same answer for those packets too
/// (the differential and unit tests compare both on the same frames).
#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(pkt: &P) -> Parsed {
    if let Some(h) = pkt.head::<V4_HEAD>() {
        let ethertype = be16([h[12], h[13]]);
        // Version 4, IHL 5: the whole header is inside `h`.
        if ethertype == ETH_P_IP && h[14] == 0x45 && be16([h[16], h[17]]) >= IPV4_MIN_HLEN as u16 {
            // A slice copy, not [h[26], h[27], ...]: one 4-byte load instead of four.
            let mut src = [0u8; 4];
            src.copy_from_slice(&h[26..30]);
            return Parsed::V4 {
                src,
                protocol: h[23],
                l3_offset: ETH_HLEN,
                l4_offset: V4_HEAD,
            };
        }
        if ethertype == ETH_P_IPV6 {
            if let Some(h) = pkt.head::<V6_HEAD>() {
                if h[14] >> 4 == 6 {
                    let mut hi = [0u8; 8];
                    let mut lo = [0u8; 8];
                    hi.copy_from_slice(&h[22..30]);
                    lo.copy_from_slice(&h[30..38]);
                    return Parsed::V6 {
                        src: join16(hi, lo),
                        next_header: h[20],
                        l3_offset: ETH_HLEN,
                        l4_offset: V6_HEAD,
                    };
                }
            }
        }
    }
    parse_tagged(pkt)
}

/// The general parser: up to two VLAN tags, IPv4 options, and every malformed case.
#[inline(always)]
pub fn parse_tagged<P: PacketBytes + ?Sized>(pkt: &P) -> Parsed {
    let Some(eth_type) = pkt.load::<2>(12) else {
        return Parsed::Malformed {
            at: MalformedAt::Ethernet,
        };
    };
    let mut ethertype = be16(eth_type);
    let mut l3 = ETH_HLEN;

    // Unrolled on purpose: a bounded, constant number of steps keeps the verifier's work small.
    if is_vlan(ethertype) {
        let Some(tag) = pkt.load::<VLAN_HLEN>(l3) else {
            return Parsed::Malformed {
                at: MalformedAt::Vlan,
            };
        };
        ethertype = be16([tag[2], tag[3]]);
        l3 += VLAN_HLEN;
        if is_vlan(ethertype) {
            let Some(tag) = pkt.load::<VLAN_HLEN>(l3) else {
                return Parsed::Malformed {
                    at: MalformedAt::Vlan,
                };
            };
            ethertype = be16([tag[2], tag[3]]);
            l3 += VLAN_HLEN;
        }
    }

    match ethertype {
        ETH_P_IP => parse_ipv4(pkt, l3),
        ETH_P_IPV6 => parse_ipv6(pkt, l3),
        other => Parsed::NonIp { ethertype: other },
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(pkt: &P, l3: usize) -> Parsed {
    const MALFORMED: Parsed = Parsed::Malformed {
        at: MalformedAt::Ipv4,
    };
    // Read only the fields we use: fewer, smaller loads are cheaper in the kernel.
    // One early return per load, not a tuple of Options: LLVM evaluates a tuple eagerly and may
    // carry an undefined register into a path the verifier then rejects (`R9 !read_ok`).
    let Some(first) = pkt.load::<4>(l3) else {
        return MALFORMED;
    };
    let Some(proto) = pkt.load::<1>(l3 + 9) else {
        return MALFORMED;
    };
    let Some(src) = pkt.load::<4>(l3 + 12) else {
        return MALFORMED;
    };
    let version = first[0] >> 4;
    let header_len = ((first[0] & 0x0f) as usize) * 4;
    let total_len = be16([first[2], first[3]]) as usize;
    if version != 4 || header_len < IPV4_MIN_HLEN || total_len < header_len {
        return MALFORMED;
    }
    // The whole header, options included, must be present: reading its last byte proves it.
    if pkt.load::<1>(l3 + header_len - 1).is_none() {
        return MALFORMED;
    }
    Parsed::V4 {
        src,
        protocol: proto[0],
        l3_offset: l3,
        l4_offset: l3 + header_len,
    }
}

#[inline(always)]
fn join16(hi: [u8; 8], lo: [u8; 8]) -> [u8; 16] {
    let words = [u64::from_ne_bytes(hi), u64::from_ne_bytes(lo)];
    // SAFETY: [u64; 2] and [u8; 16] have the same size and every bit pattern is valid for both.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(pkt: &P, l3: usize) -> Parsed {
    const MALFORMED: Parsed = Parsed::Malformed {
        at: MalformedAt::Ipv6,
    };
    let Some(first) = pkt.load::<8>(l3) else {
        return MALFORMED;
    };
    // Two 8-byte halves, not one 16-byte read: a 16-byte copy becomes a call to a byte-wise
    // memmove in BPF, the halves become two loads.
    let Some(hi) = pkt.load::<8>(l3 + 8) else {
        return MALFORMED;
    };
    let Some(lo) = pkt.load::<8>(l3 + 16) else {
        return MALFORMED;
    };
    let src = join16(hi, lo);
    if pkt.load::<1>(l3 + IPV6_HLEN - 1).is_none() {
        return MALFORMED;
    }
    if first[0] >> 4 != 6 {
        return MALFORMED;
    }
    Parsed::V6 {
        src,
        next_header: first[6],
        l3_offset: l3,
        l4_offset: l3 + IPV6_HLEN,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    fn udp4(ihl: u8) -> Vec<u8> {
        let mut f = std::vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
        let hlen = usize::from(ihl) * 4;
        let mut ip = std::vec![0u8; hlen + 8];
        ip[0] = 0x40 | ihl;
        ip[2..4].copy_from_slice(&((hlen + 8) as u16).to_be_bytes());
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[198, 18, 0, 10]);
        f.extend(ip);
        f
    }

    fn udp6() -> Vec<u8> {
        let mut f = std::vec![0u8; 14];
        f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let mut ip = std::vec![0u8; 48];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&8u16.to_be_bytes());
        ip[6] = 17;
        for (i, b) in ip[8..24].iter_mut().enumerate() {
            *b = 0x20 + i as u8;
        }
        f.extend(ip);
        f
    }

    /// The fast path never changes an answer: every truncation of the frames, and every frame
    /// with one header byte changed to one of a few telling values, parses the same with and
    /// without it.
    #[test]
    fn the_fast_path_agrees_with_the_general_parser() {
        let mut frames = std::vec![udp4(5), udp4(6), udp6()];
        let mut tagged = udp4(5);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
        frames.push(tagged);
        let mut fast = 0;
        for base in &frames {
            for len in 0..=base.len() {
                let f = &base[..len];
                assert_eq!(parse(f), parse_tagged(f), "{f:02x?}");
            }
            for at in 0..base.len().min(V6_HEAD) {
                for value in [
                    0x00, 0x06, 0x08, 0x14, 0x45, 0x46, 0x4f, 0x60, 0x86, 0xdd, 0xff,
                ] {
                    let mut f = base.clone();
                    f[at] = value;
                    assert_eq!(parse(&f[..]), parse_tagged(&f[..]), "{f:02x?}");
                    fast += usize::from(matches!(
                        parse(&f[..]),
                        Parsed::V4 { .. } | Parsed::V6 { .. }
                    ));
                }
            }
        }
        assert!(fast > 100, "the mutations should mostly stay IP: {fast}");
        assert!(matches!(
            parse(&udp4(5)[..]),
            Parsed::V4 {
                src: [198, 18, 0, 10],
                protocol: 17,
                l3_offset: 14,
                l4_offset: 34
            }
        ));
        assert!(matches!(
            parse(&udp6()[..]),
            Parsed::V6 {
                next_header: 17,
                l3_offset: 14,
                l4_offset: 54,
                ..
            }
        ));
    }
}
