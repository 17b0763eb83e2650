//! The lockout guard: some addresses must never be blocked by accident: the prefixes an operator
//! declared protected, the allowlist, and by default this host's own addresses and the peers of
//! established SSH sessions (the operator who is logged in right now). A block that covers any of
//! them is refused unless forced.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a block was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub entry: IpNet,
    pub protected: IpNet,
    pub why: &'static str,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "blocking {} would cover {} ({}); pass force to do it anyway",
            self.entry, self.protected, self.why
        )
    }
}

pub struct Guard {
    configured: Vec<IpNet>,
    management: bool,
    ssh_port: u16,
}

impl Guard {
    pub fn new(configured: Vec<IpNet>, management: bool, ssh_port: u16) -> Self {
        Self {
            configured,
            management,
            ssh_port,
        }
    }

    /// Refuses the first of `entries` that covers, or lies inside, a protected prefix: configured
    /// ones, `allowed`, and (if enabled) this host's addresses and current SSH peers, read once
    /// per call (an import may check a million entries).
    pub fn check(&self, entries: &[IpNet], allowed: &[IpNet]) -> Result<(), Refusal> {
        let mut protected: Vec<(IpNet, &'static str)> = self
            .configured
            .iter()
            .map(|p| (*p, "a protected prefix in the config"))
            .collect();
        protected.extend(allowed.iter().map(|p| (*p, "on the allowlist")));
        if self.management {
            protected.extend(
                host_addresses()
                    .into_iter()
                    .map(|p| (p, "an address of this host")),
            );
            protected.extend(
                ssh_peers(self.ssh_port)
                    .into_iter()
                    .map(|p| (p, "the peer of an established SSH session")),
            );
        }
        for entry in entries {
            if let Some((p, why)) = protected
                .iter()
                .find(|(p, _)| p.contains(entry) || entry.contains(p))
            {
                return Err(Refusal {
                    entry: *entry,
                    protected: *p,
                    why,
                });
            }
        }
        Ok(())
    }
}

fn host_addresses() -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            let ip: IpAddr = if let Some(v4) = a.as_sockaddr_in() {
                v4.ip().into()
            } else {
                a.as_sockaddr_in6()?.ip().into()
            };
            (!ip.is_loopback()).then(|| IpNet::from(ip))
        })
        .collect()
}

/// Remote addresses of ESTABLISHED TCP connections whose local port is `port`, from /proc.
fn ssh_peers(port: u16) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
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
    out
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

    #[test]
    fn refuses_blocks_that_cover_protected_or_allowed_prefixes() {
        let guard = Guard::new(vec![parse_entry("203.0.113.0/28").unwrap()], false, 22);
        let allowed = [parse_entry("198.51.100.7").unwrap()];
        let check = |e: &str| guard.check(&[parse_entry(e).unwrap()], &allowed);
        assert_eq!(
            check("203.0.113.0/24").unwrap_err().to_string(),
            "blocking 203.0.113.0/24 would cover 203.0.113.0/28 (a protected prefix in the config); \
             pass force to do it anyway"
        );
        assert!(check("203.0.113.5").is_err(), "inside counts too");
        assert!(check("198.51.100.0/24").is_err());
        assert!(check("192.0.2.1").is_ok());
        // The first offending entry of a batch is named.
        let many = [
            parse_entry("192.0.2.1").unwrap(),
            parse_entry("198.51.100.7").unwrap(),
        ];
        assert_eq!(guard.check(&many, &allowed).unwrap_err().entry, many[1]);
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
