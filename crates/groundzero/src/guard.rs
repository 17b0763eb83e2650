//! The lockout guard: the one gate every block passes through (API, CLI, imports, feeds,
//! auto-bans, application bans), so that the shield is never turned against its owner.
//!
//! It refuses a block that covers, or lies inside:
//! - a prefix the operator declared protected (`guard.protected`);
//! - an allowlisted prefix;
//! - with `guard.protect_management` (the default): an address of this host, the peer of an
//!   established SSH session (the operator logged in right now), a DNS resolver from
//!   `/etc/resolv.conf`, and the servers of the configured feeds;
//!
//! and, whatever covers it, a prefix wider than /8 (IPv4) or /32 (IPv6) unless the caller allows
//! wide prefixes: a typo such as `198.51.100.7/0` must never block the whole Internet.
//!
//! Management addresses are read by [`ManagementSnapshot::read`] on a timer, off the daemon's
//! lock (a host with many connections has a large /proc/net/tcp), and the guard checks against
//! the last snapshot. When a snapshot could not be read, the guard fails closed: it refuses every
//! block it cannot vouch for rather than risk locking the operator out.

use std::{
    net::{IpAddr, ToSocketAddrs},
    time::{Duration, Instant},
};

use ipnet::IpNet;

/// The shortest prefix a block may have without `allow_wide`.
pub const WIDEST_V4: u8 = 8;
pub const WIDEST_V6: u8 = 32;

/// How old a management snapshot may be before the guard stops trusting it.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(30);

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub entry: IpNet,
    /// The protected prefix it would cover, if that is the reason.
    pub protected: Option<IpNet>,
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.protected {
            Some(p) => write!(f, "blocking {} would cover {p} ({})", self.entry, self.why),
            None => write!(f, "blocking {}: {}", self.entry, self.why),
        }
    }
}

/// What a caller may override.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Skip every check (an operator's explicit `force`).
    pub force: bool,
    /// Accept prefixes wider than /8 or /32 (a feed configured with `allow_wide`).
    pub allow_wide: bool,
}

impl Policy {
    pub const STRICT: Policy = Policy {
        force: false,
        allow_wide: false,
    };
}

/// The management addresses at one moment, or why they could not be read.
#[derive(Clone, Debug, Default)]
pub struct ManagementSnapshot {
    pub addresses: Vec<(IpNet, &'static str)>,
    /// Set when an input could not be read: the guard then refuses (fails closed).
    pub error: Option<String>,
}

impl ManagementSnapshot {
    /// Reads this host's addresses, SSH peers on `ssh_port`, resolvers, and the addresses of
    /// `feed_hosts` (host names are resolved; a name that does not resolve is skipped, since a
    /// feed server that cannot be reached cannot be locked out either).
    pub fn read(ssh_port: u16, feed_hosts: &[String]) -> Self {
        let mut snapshot = ManagementSnapshot::default();
        let mut errors = Vec::new();
        match host_addresses() {
            Ok(a) => snapshot
                .addresses
                .extend(a.into_iter().map(|p| (p, "an address of this host"))),
            Err(e) => errors.push(format!("the host's addresses: {e}")),
        }
        match ssh_peers(ssh_port) {
            Ok(a) => snapshot.addresses.extend(
                a.into_iter()
                    .map(|p| (p, "the peer of an established SSH session")),
            ),
            Err(e) => errors.push(e),
        }
        snapshot.addresses.extend(
            resolvers("/etc/resolv.conf")
                .into_iter()
                .map(|p| (p, "a DNS resolver of this host")),
        );
        for host in feed_hosts {
            let addrs = if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
                vec![ip]
            } else {
                (host.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| a.map(|s| s.ip()).collect())
                    .unwrap_or_default()
            };
            snapshot.addresses.extend(
                addrs
                    .into_iter()
                    .map(|ip| (IpNet::from(ip), "the server of a configured feed")),
            );
        }
        if !errors.is_empty() {
            snapshot.error = Some(errors.join("; "));
        }
        snapshot
    }
}

/// A management address the guard protects, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProtectedAddress {
    pub entry: IpNet,
    pub why: &'static str,
}

/// What `GET /v1/guard` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GuardView {
    pub configured: Vec<IpNet>,
    pub protect_management: bool,
    pub ssh_port: u16,
    pub management: Vec<ProtectedAddress>,
    /// Seconds since the management addresses were last read.
    pub read_seconds_ago: Option<f64>,
    /// Why they could not be read: then every block is refused.
    pub error: Option<String>,
    pub widest_v4: u8,
    pub widest_v6: u8,
}

pub struct Guard {
    configured: Vec<IpNet>,
    management: bool,
    ssh_port: u16,
    /// Host names of http(s) feeds: their servers are management addresses too.
    feed_hosts: Vec<String>,
    snapshot: ManagementSnapshot,
    taken: Option<Instant>,
}

impl Guard {
    /// A guard over `configured` prefixes; with `management`, also this host's management
    /// addresses and the servers of `feed_hosts` (read at once, then kept current by
    /// [`Guard::install`]).
    pub fn new(
        configured: Vec<IpNet>,
        management: bool,
        ssh_port: u16,
        feed_hosts: Vec<String>,
    ) -> Self {
        let mut guard = Self {
            configured,
            management,
            ssh_port,
            feed_hosts,
            snapshot: ManagementSnapshot::default(),
            taken: None,
        };
        if let Some((port, hosts)) = guard.refresh_inputs() {
            guard.install(ManagementSnapshot::read(port, &hosts));
        }
        guard
    }

    /// Replaces the configured part (a config reload). The management snapshot is kept until the
    /// next refresh reads it with the new settings.
    pub fn reconfigure(
        &mut self,
        configured: Vec<IpNet>,
        management: bool,
        ssh_port: u16,
        feed_hosts: Vec<String>,
    ) {
        self.configured = configured;
        self.management = management;
        self.ssh_port = ssh_port;
        self.feed_hosts = feed_hosts;
    }

    /// What a refresh needs to read a snapshot, so it can read it without holding any lock.
    pub fn refresh_inputs(&self) -> Option<(u16, Vec<String>)> {
        self.management
            .then(|| (self.ssh_port, self.feed_hosts.clone()))
    }

    /// Takes a snapshot read by [`ManagementSnapshot::read`].
    pub fn install(&mut self, snapshot: ManagementSnapshot) {
        if let Some(e) = &snapshot.error {
            log::warn!("lockout guard: {e}; blocks are refused until it can read them");
        }
        self.snapshot = snapshot;
        self.taken = Some(Instant::now());
    }

    /// The management addresses the XDP rate limit must never count (kept current by the
    /// daemon). Empty when management protection is off.
    pub fn management_addresses(&self) -> Vec<IpNet> {
        if !self.management {
            return Vec::new();
        }
        let mut out: Vec<IpNet> = self.snapshot.addresses.iter().map(|(p, _)| *p).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The prefixes configured as protected.
    pub fn configured(&self) -> &[IpNet] {
        &self.configured
    }

    /// What the guard protects right now besides the config and the allowlist: each
    /// management address with why, when it was read, and why it could not be (if so).
    pub fn view(&self) -> GuardView {
        let mut management: Vec<(IpNet, &'static str)> = if self.management {
            self.snapshot.addresses.clone()
        } else {
            Vec::new()
        };
        management.sort();
        management.dedup();
        GuardView {
            configured: self.configured.clone(),
            protect_management: self.management,
            ssh_port: self.ssh_port,
            management: management
                .into_iter()
                .map(|(entry, why)| ProtectedAddress { entry, why })
                .collect(),
            read_seconds_ago: self.taken.map(|t| t.elapsed().as_secs_f64()),
            error: self.snapshot.error.clone(),
            widest_v4: WIDEST_V4,
            widest_v6: WIDEST_V6,
        }
    }

    /// Checks one entry. `allowed` is the allowlist (an allowlisted address is protected too).
    pub fn check(&self, entry: &IpNet, allowed: &[IpNet], policy: Policy) -> Result<(), Refusal> {
        if policy.force {
            return Ok(());
        }
        let widest = if entry.addr().is_ipv4() {
            WIDEST_V4
        } else {
            WIDEST_V6
        };
        if !policy.allow_wide && entry.prefix_len() < widest {
            return Err(Refusal {
                entry: *entry,
                protected: None,
                why: format!(
                    "a prefix wider than /{widest} is refused unless explicitly allowed \
                     (force, or allow_wide on a feed)"
                ),
            });
        }
        let covers = |p: &IpNet| p.contains(entry) || entry.contains(p);
        let refuse = |p: &IpNet, why: &str| Refusal {
            entry: *entry,
            protected: Some(*p),
            why: why.to_string(),
        };
        if let Some(p) = self.configured.iter().find(|p| covers(p)) {
            return Err(refuse(p, "a protected prefix in the config"));
        }
        if let Some(p) = allowed.iter().find(|p| covers(p)) {
            return Err(refuse(p, "on the allowlist"));
        }
        if self.management {
            let fresh = self.taken.is_some_and(|t| t.elapsed() < SNAPSHOT_MAX_AGE);
            if let Some(e) = &self.snapshot.error {
                return Err(Refusal {
                    entry: *entry,
                    protected: None,
                    why: format!("the lockout guard could not read its inputs ({e})"),
                });
            }
            if !fresh {
                return Err(Refusal {
                    entry: *entry,
                    protected: None,
                    why: "the lockout guard's view of the management addresses is out of date"
                        .into(),
                });
            }
            if let Some((p, why)) = self.snapshot.addresses.iter().find(|(p, _)| covers(p)) {
                return Err(refuse(p, why));
            }
        }
        Ok(())
    }
}

fn host_addresses() -> Result<Vec<IpNet>, nix::Error> {
    Ok(nix::ifaddrs::getifaddrs()?
        .filter_map(|ifa| {
            let a = ifa.address?;
            let ip: IpAddr = if let Some(v4) = a.as_sockaddr_in() {
                v4.ip().into()
            } else {
                a.as_sockaddr_in6()?.ip().into()
            };
            (!ip.is_loopback()).then(|| IpNet::from(ip))
        })
        .collect())
}

/// Remote addresses of ESTABLISHED TCP connections whose local port is `port`, from /proc.
/// A missing tcp6 file is a kernel without IPv6, not an error.
fn ssh_peers(port: u16) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("{file}: {e}")),
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st ...; state 01 is ESTABLISHED.
            if fields.len() < 4 || fields[3] != "01" {
                continue;
            }
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port != Some(port) {
                continue;
            }
            if let Some(ip) = fields[2].split(':').next().and_then(|hex| proc_ip(hex, v6)) {
                out.push(IpNet::from(ip));
            }
        }
    }
    Ok(out)
}

/// `nameserver` lines of a resolv.conf. A missing file means no resolvers to protect.
fn resolvers(path: &str) -> Vec<IpNet> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| {
            // `fe80::1%eth0`: the zone is not part of the address.
            let addr = rest.trim().split('%').next()?;
            addr.parse::<IpAddr>().ok().map(IpNet::from)
        })
        .collect()
}

/// /proc/net/tcp prints the address bytes as 32-bit words read in host byte order, so writing
/// each word back in native order restores the network-order bytes.
fn proc_ip(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip: IpAddr = if v6 {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        let v6 = std::net::Ipv6Addr::from(arr);
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))
    };
    Some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_entry;

    fn net(s: &str) -> IpNet {
        parse_entry(s).unwrap()
    }

    #[test]
    fn refuses_blocks_that_cover_protected_or_allowed_prefixes() {
        let guard = Guard::new(vec![net("203.0.113.0/28")], false, 22, vec![]);
        let allowed = [net("198.51.100.7")];
        let check = |e: &str| guard.check(&net(e), &allowed, Policy::STRICT);
        assert_eq!(
            check("203.0.113.0/24").unwrap_err().to_string(),
            "blocking 203.0.113.0/24 would cover 203.0.113.0/28 (a protected prefix in the config)"
        );
        assert!(check("203.0.113.5").is_err(), "inside counts too");
        assert!(check("198.51.100.0/24").is_err());
        assert!(check("192.0.2.1").is_ok());
        assert!(guard
            .check(
                &net("203.0.113.5"),
                &allowed,
                Policy {
                    force: true,
                    ..Policy::STRICT
                }
            )
            .is_ok());
    }

    #[test]
    fn wide_prefixes_need_allow_wide() {
        let guard = Guard::new(vec![], false, 22, vec![]);
        for wide in ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001::/31"] {
            let err = guard.check(&net(wide), &[], Policy::STRICT).unwrap_err();
            assert!(err.why.contains("wider than"), "{wide}: {err}");
            let wide_ok = Policy {
                allow_wide: true,
                ..Policy::STRICT
            };
            assert!(guard.check(&net(wide), &[], wide_ok).is_ok(), "{wide}");
        }
        assert!(guard.check(&net("10.0.0.0/8"), &[], Policy::STRICT).is_ok());
        assert!(guard
            .check(&net("2001:db8::/32"), &[], Policy::STRICT)
            .is_ok());
    }

    #[test]
    fn management_addresses_are_protected_and_the_guard_fails_closed() {
        let mut guard = Guard::new(vec![], true, 22, vec![]);
        guard.install(ManagementSnapshot {
            addresses: vec![(net("192.0.2.10"), "an address of this host")],
            error: None,
        });
        let err = guard
            .check(&net("192.0.2.0/24"), &[], Policy::STRICT)
            .unwrap_err();
        assert_eq!(err.protected, Some(net("192.0.2.10")));
        assert!(guard.check(&net("192.0.3.1"), &[], Policy::STRICT).is_ok());
        // An unreadable input: everything is refused, with the reason.
        guard.install(ManagementSnapshot {
            addresses: vec![],
            error: Some("/proc/net/tcp: permission denied".into()),
        });
        let err = guard
            .check(&net("192.0.3.1"), &[], Policy::STRICT)
            .unwrap_err();
        assert!(err.why.contains("could not read"), "{err}");
        assert!(guard.management_addresses().is_empty());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let dir = std::env::temp_dir().join(format!("gz-resolv-{}", std::process::id()));
        std::fs::write(
            &dir,
            "# c\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n",
        )
        .unwrap();
        let got = resolvers(dir.to_str().unwrap());
        let _ = std::fs::remove_file(&dir);
        assert_eq!(got, [net("192.0.2.53"), net("fe80::1")]);
    }

    #[test]
    fn a_real_snapshot_reads_this_hosts_addresses() {
        let s = ManagementSnapshot::read(22, &["127.0.0.1".into()]);
        assert!(s.error.is_none(), "{:?}", s.error);
        assert!(s
            .addresses
            .iter()
            .any(|(p, why)| *p == net("127.0.0.1") && why.contains("feed")));
    }

    #[test]
    fn proc_net_tcp_addresses_decode() {
        // 127.0.0.1 as /proc prints it on little-endian hosts.
        #[cfg(target_endian = "little")]
        assert_eq!(
            proc_ip("0100007F", false),
            Some("127.0.0.1".parse().unwrap())
        );
        #[cfg(target_endian = "little")]
        assert_eq!(
            proc_ip("0000000000000000FFFF00000100007F", true),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
