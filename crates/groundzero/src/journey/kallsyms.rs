//! Kernel addresses to function names, from /proc/kallsyms, for the `location` that
//! `kfree_skb` and `consume_skb` report: it tells *where* the kernel dropped a packet, and that
//! a UDP datagram was freed by the reader (`skb_consume_udp`) rather than by the stack.

use std::{fs, io, path::Path};

/// Text symbols sorted by address.
#[derive(Debug, Default, Clone)]
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. As root the addresses are real; otherwise the kernel shows zeros
    /// and every lookup answers `None`.
    pub fn load() -> io::Result<Self> {
        Self::from_file(Path::new("/proc/kallsyms"))
    }

    pub fn from_file(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(addr, _)| *addr);
        Self { symbols }
    }

    /// The function containing `addr`.
    pub fn function(&self, addr: u64) -> Option<&str> {
        if addr == 0 {
            return None;
        }
        let i = self.symbols.partition_point(|(a, _)| *a <= addr);
        let (_, name) = self.symbols.get(i.checked_sub(1)?)?;
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_containing_function() {
        let k = Kallsyms::parse(
            "ffffffff82000000 T ip_rcv\nffffffff82000100 t skb_consume_udp\n\
             ffffffff82000200 D some_data\n0000000000000000 T hidden\n",
        );
        assert_eq!(k.function(0xffffffff82000000), Some("ip_rcv"));
        assert_eq!(k.function(0xffffffff820000ff), Some("ip_rcv"));
        assert_eq!(k.function(0xffffffff82000150), Some("skb_consume_udp"));
        assert_eq!(k.function(0xffffffff81000000), None);
        assert_eq!(k.function(0), None);
    }
}
