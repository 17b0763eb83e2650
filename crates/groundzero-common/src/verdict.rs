//! The decision rules, once, as a pure function.
//!
//! Order: allowlist (prefix) → PASS; blocklist exact address → DROP; blocklist prefix → DROP;
//! over the per-source rate limit → DROP; otherwise PASS. In monitor mode a block match is reported as `Monitor*` and passes.
//! Non-IP passes, malformed passes (the kernel's own checks drop what is really broken).
//!
//! The kernel implements [`Lists`] with map lookups; the host model with plain collections.

use crate::parse::Parsed;
use crate::reason::Reason;

/// The lookups the verdict needs for one address family. `A` is `[u8; 4]` or `[u8; 16]`
/// in network byte order.
pub trait Lists<A> {
    fn allowed(&self, src: &A) -> bool;
    fn blocked_exact(&self, src: &A) -> bool;
    fn blocked_cidr(&self, src: &A) -> bool;
    /// Takes a token from the source's bucket; true when the source is over its limit. Only
    /// asked for sources that no list decided, so allowlisted and blocked sources never spend
    /// tokens. Implementations without rate limiting return false.
    fn over_rate(&self, src: &A) -> bool;
}

/// The verdict for a parsed packet.
#[inline(always)]
pub fn decide<L>(parsed: &Parsed, lists: &L, monitor: bool) -> Reason
where
    L: Lists<[u8; 4]> + Lists<[u8; 16]>,
{
    match parsed {
        Parsed::NonIp { .. } => Reason::NonIp,
        Parsed::Malformed { .. } => Reason::Malformed,
        Parsed::V4 { src, .. } => decide_addr(src, lists, monitor),
        Parsed::V6 { src, .. } => decide_addr(src, lists, monitor),
    }
}

/// The verdict for one source address.
#[inline(always)]
pub fn decide_addr<A, L: Lists<A>>(src: &A, lists: &L, monitor: bool) -> Reason {
    if lists.allowed(src) {
        Reason::Allowlisted
    } else if lists.blocked_exact(src) {
        if monitor {
            Reason::MonitorExact
        } else {
            Reason::BlockedExact
        }
    } else if lists.blocked_cidr(src) {
        if monitor {
            Reason::MonitorCidr
        } else {
            Reason::BlockedCidr
        }
    } else if lists.over_rate(src) {
        if monitor {
            Reason::MonitorRate
        } else {
            Reason::RateLimited
        }
    } else {
        Reason::NoMatch
    }
}
