//! Why a packet got its verdict. The numeric value is the index into the per-CPU counters map.

/// XDP return codes we use (from `enum xdp_action` in the kernel UAPI).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Drop = 1,
    Pass = 2,
}

/// Every verdict is counted under exactly one reason; the reason implies the action.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// IP packet whose source matched no list.
    NoMatch = 0,
    /// Source is in the allowlist; the allowlist wins over every block.
    Allowlisted = 1,
    /// Not IPv4/IPv6 after at most two VLAN tags (ARP, LLDP, a third VLAN tag, ...).
    NonIp = 2,
    /// Truncated or inconsistent headers. Passed so the kernel's own checks decide, never aborted.
    Malformed = 3,
    /// Source address is in the exact-address blocklist.
    BlockedExact = 4,
    /// Source address falls in a blocklisted prefix.
    BlockedCidr = 5,
    /// Monitor mode: would have been dropped by an exact entry, passed instead.
    MonitorExact = 6,
    /// Monitor mode: would have been dropped by a prefix, passed instead.
    MonitorCidr = 7,
    /// Source sent more than its rate limit allows (token bucket; see `ratelimit`).
    RateLimited = 8,
    /// Monitor mode: over the rate limit, passed instead.
    MonitorRate = 9,
}

impl Reason {
    /// All reasons, in counter-index order.
    pub const ALL: [Reason; 10] = [
        Reason::NoMatch,
        Reason::Allowlisted,
        Reason::NonIp,
        Reason::Malformed,
        Reason::BlockedExact,
        Reason::BlockedCidr,
        Reason::MonitorExact,
        Reason::MonitorCidr,
        Reason::RateLimited,
        Reason::MonitorRate,
    ];

    /// What the XDP program returns for a packet counted under this reason.
    #[inline(always)]
    pub const fn action(self) -> Action {
        match self {
            Reason::BlockedExact | Reason::BlockedCidr | Reason::RateLimited => Action::Drop,
            _ => Action::Pass,
        }
    }

    /// Stable, lowercase label used in the CLI, JSON and metrics.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::NoMatch => "no_match",
            Reason::Allowlisted => "allowlisted",
            Reason::NonIp => "non_ip",
            Reason::Malformed => "malformed",
            Reason::BlockedExact => "blocked_exact",
            Reason::BlockedCidr => "blocked_cidr",
            Reason::MonitorExact => "monitor_exact",
            Reason::MonitorCidr => "monitor_cidr",
            Reason::RateLimited => "rate_limited",
            Reason::MonitorRate => "monitor_rate",
        }
    }

    /// True for the monitor-mode reasons: passed, but a block entry matched.
    pub const fn would_drop(self) -> bool {
        matches!(
            self,
            Reason::MonitorExact | Reason::MonitorCidr | Reason::MonitorRate
        )
    }

    pub const fn from_index(i: u32) -> Option<Reason> {
        if (i as usize) < Reason::ALL.len() {
            Some(Reason::ALL[i as usize])
        } else {
            None
        }
    }
}

impl Action {
    pub const fn label(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Pass => "pass",
        }
    }
}
