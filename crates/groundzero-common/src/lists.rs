//! One vocabulary for the lists, shared by the kernel maps, the library, the daemon and metrics.
//!
//! An entry is on one [`Side`] (blocked or allowed), has one [`Family`], and is either exact (a
//! single address: a /32 or /128) or a prefix ([`is_exact`]). Which kernel map holds it follows
//! from those three: a [`ListKind`] per (side, exact or prefix), one map of it per family
//! ([`ListKind::map_name`]). Blocked exact addresses go to an O(1) hash; blocked prefixes, and
//! every allowed entry, to an LPM trie.

use core::fmt;

use crate::maps;

/// Which list an entry is on, as the user sees it (both blocklist maps are `Block`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Side {
    Block,
    Allow,
}

impl Side {
    /// Both sides, blocklist first.
    pub const ALL: [Side; 2] = [Side::Block, Side::Allow];

    /// `block` or `allow`: the word used in labels and on the wire.
    pub const fn label(self) -> &'static str {
        match self {
            Side::Block => "block",
            Side::Allow => "allow",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An address family. Every list has one kernel map per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// Bits in an address: the prefix length of an exact entry.
    pub const fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// `ipv4` or `ipv6`.
    pub const fn label(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// The family of `net`.
    #[cfg(feature = "user")]
    pub const fn of(net: &ipnet::IpNet) -> Family {
        match net {
            ipnet::IpNet::V4(_) => Family::V4,
            ipnet::IpNet::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// True if a prefix of `prefix_len` bits in `family` is one address (a /32 or /128): what
/// makes a blocked entry go to the exact hash rather than the prefix trie. The one definition.
pub const fn is_exact(family: Family, prefix_len: u8) -> bool {
    prefix_len == family.bits()
}

/// [`is_exact`] of an [`ipnet::IpNet`].
#[cfg(feature = "user")]
pub fn is_exact_net(net: &ipnet::IpNet) -> bool {
    is_exact(Family::of(net), net.prefix_len())
}

/// Which list map an entry lives in (one of each per [`Family`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListKind {
    /// Blocked single addresses (hash).
    BlockExact,
    /// Blocked prefixes (LPM trie).
    BlockCidr,
    /// Allowed prefixes and addresses (LPM trie).
    Allow,
}

impl ListKind {
    /// Every list map kind, in a stable order (also the order of [`Self::index`]).
    pub const ALL: [ListKind; 3] = [ListKind::BlockExact, ListKind::BlockCidr, ListKind::Allow];

    /// The map kind of an entry on `side` that is exact (one address) or not.
    pub const fn of(side: Side, exact: bool) -> ListKind {
        match (side, exact) {
            (Side::Block, true) => ListKind::BlockExact,
            (Side::Block, false) => ListKind::BlockCidr,
            (Side::Allow, _) => ListKind::Allow,
        }
    }

    /// The map kind of the entry `net` on `side`.
    #[cfg(feature = "user")]
    pub fn for_net(side: Side, net: &ipnet::IpNet) -> ListKind {
        ListKind::of(side, is_exact_net(net))
    }

    /// The side this map belongs to.
    pub const fn side(self) -> Side {
        match self {
            ListKind::BlockExact | ListKind::BlockCidr => Side::Block,
            ListKind::Allow => Side::Allow,
        }
    }

    /// True for the LPM tries (keyed by prefix length and address), false for the exact hash
    /// (keyed by address alone).
    pub const fn is_trie(self) -> bool {
        !matches!(self, ListKind::BlockExact)
    }

    /// Position in [`Self::ALL`], for tables indexed by kind.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The kernel map holding this list for `family`.
    pub const fn map_name(self, family: Family) -> &'static str {
        match (self, family) {
            (ListKind::BlockExact, Family::V4) => maps::BLOCK_V4,
            (ListKind::BlockExact, Family::V6) => maps::BLOCK_V6,
            (ListKind::BlockCidr, Family::V4) => maps::BLOCK_NET_V4,
            (ListKind::BlockCidr, Family::V6) => maps::BLOCK_NET_V6,
            (ListKind::Allow, Family::V4) => maps::ALLOW_V4,
            (ListKind::Allow, Family::V6) => maps::ALLOW_V6,
        }
    }

    /// `block_exact`, `block_cidr` or `allow`: the map's label in metrics.
    pub const fn label(self) -> &'static str {
        match self {
            ListKind::BlockExact => "block_exact",
            ListKind::BlockCidr => "block_cidr",
            ListKind::Allow => "allow",
        }
    }
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListKind::BlockExact => "blocklist (exact addresses)",
            ListKind::BlockCidr => "blocklist (prefixes)",
            ListKind::Allow => "allowlist",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_means_one_address_in_either_family() {
        assert!(is_exact(Family::V4, 32));
        assert!(!is_exact(Family::V4, 31));
        assert!(is_exact(Family::V6, 128));
        assert!(!is_exact(Family::V6, 32));
    }

    #[test]
    fn kinds_follow_side_and_shape_and_name_one_map_per_family() {
        assert_eq!(ListKind::of(Side::Block, true), ListKind::BlockExact);
        assert_eq!(ListKind::of(Side::Block, false), ListKind::BlockCidr);
        assert_eq!(ListKind::of(Side::Allow, true), ListKind::Allow);
        assert_eq!(ListKind::of(Side::Allow, false), ListKind::Allow);
        for kind in ListKind::ALL {
            assert_eq!(ListKind::ALL[kind.index()], kind);
            assert_eq!(
                ListKind::of(kind.side(), !kind.is_trie()).side(),
                kind.side()
            );
        }
        let mut names: [&str; 6] = [""; 6];
        for (i, (kind, family)) in ListKind::ALL
            .iter()
            .flat_map(|k| Family::ALL.map(|f| (*k, f)))
            .enumerate()
        {
            names[i] = kind.map_name(family);
            assert!(maps::ALL_MAPS.contains(&names[i]));
        }
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    }
}
