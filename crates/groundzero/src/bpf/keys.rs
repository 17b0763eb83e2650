//! Map keys per address family: the address bytes in network order (`[u8; 4]`, `[u8; 16]`),
//! which is also what an LPM trie matches from its first byte on.

use groundzero_common::lists::Family;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family's map key.
pub(crate) trait Addr: aya::Pod + Default + Ord + std::hash::Hash {
    /// The family whose addresses these are.
    const FAMILY: Family;

    /// The address as a prefix of `prefix_len` bits, or None for a length no prefix has.
    fn net(self, prefix_len: u32) -> Option<IpNet>;
}

impl Addr for [u8; 4] {
    const FAMILY: Family = Family::V4;
    fn net(self, prefix_len: u32) -> Option<IpNet> {
        Ipv4Net::new(self.into(), u8::try_from(prefix_len).ok()?)
            .ok()
            .map(IpNet::V4)
    }
}

impl Addr for [u8; 16] {
    const FAMILY: Family = Family::V6;
    fn net(self, prefix_len: u32) -> Option<IpNet> {
        Ipv6Net::new(self.into(), u8::try_from(prefix_len).ok()?)
            .ok()
            .map(IpNet::V6)
    }
}

/// Picks `$v4` or `$v6` by `$net`'s family and hands it to `$body` as `$map`, with `$net`'s
/// address as that family's key (`$addr`) and its prefix length (`$len`): the one place where
/// an entry's family picks its map and key type.
macro_rules! by_family {
    ($net:expr, $v4:expr, $v6:expr, |$map:ident, $addr:ident, $len:ident| $body:expr) => {
        match $net {
            ::ipnet::IpNet::V4(n) => {
                let ($map, $addr, $len) = ($v4, n.addr().octets(), n.prefix_len());
                $body
            }
            ::ipnet::IpNet::V6(n) => {
                let ($map, $addr, $len) = ($v6, n.addr().octets(), n.prefix_len());
                $body
            }
        }
    };
}
pub(crate) use by_family;
