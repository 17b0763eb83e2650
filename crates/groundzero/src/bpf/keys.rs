//! Map keys per address family: the address bytes in network order (`[u8; 4]`, `[u8; 16]`),
//! which is also what an LPM trie matches from its first byte on.

use groundzero_common::lists::Family;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family's map key.
pub(crate) trait Addr: aya::Pod + Default + Ord + std::hash::Hash + AsRef<[u8]> {
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

#[cfg(test)]
mod tests {
    use groundzero_common::lists::{is_exact_net, ListKind, Side};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_turn_back_into_the_prefixes_they_came_from() {
        for s in [
            "198.18.0.0/15",
            "198.18.0.7/32",
            "2001:2::/48",
            "2001:2::1/128",
        ] {
            let n = net(s);
            let back = by_family!(n, (), (), |_unused, addr, len| addr.net(len.into()));
            assert_eq!(back, Some(n), "{s}");
        }
        // A length no prefix of the family has is no prefix, not a panic.
        assert_eq!([198u8, 18, 0, 0].net(33), None);
        assert_eq!([0u8; 16].net(129), None);
        assert_eq!([0u8; 4].net(u32::MAX), None);
    }

    #[test]
    fn hosts_are_exact_and_block_to_the_hash_prefixes_to_the_trie() {
        assert!(is_exact_net(&net("198.18.0.7/32")));
        assert!(!is_exact_net(&net("198.18.0.0/24")));
        assert!(is_exact_net(&net("2001:2::1/128")));
        assert!(!is_exact_net(&net("2001:2::/64")));
        let block = |s| ListKind::for_net(Side::Block, &net(s));
        assert_eq!(block("198.18.0.7/32"), ListKind::BlockExact);
        assert_eq!(block("2001:2::/64"), ListKind::BlockCidr);
        assert_eq!(
            ListKind::for_net(Side::Allow, &net("198.18.0.7/32")),
            ListKind::Allow
        );
    }
}
