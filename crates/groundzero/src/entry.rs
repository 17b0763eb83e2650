//! Parsing what people type into lists: addresses, prefixes, and list files.
//!
//! Strict on purpose: a prefix with host bits set (`198.51.100.7/24`) is rejected with the
//! prefix it probably meant, because silently widening or narrowing a block is worse than asking.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

/// What is wrong with one entry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(
        "`{input}` is not an IP address or prefix \
         (expected e.g. 198.51.100.7, 203.0.113.0/24, 2001:db8::1 or 2001:db8::/32)"
    )]
    Invalid { input: String },

    #[error("`{input}` has host bits set after /{prefix_len}; did you mean {suggestion}?")]
    HostBits {
        input: String,
        prefix_len: u8,
        suggestion: IpNet,
    },

    #[error(
        "`{input}` is an IPv4-mapped IPv6 address, which never matches IPv4 packets; \
         write {suggestion} instead"
    )]
    V4Mapped { input: String, suggestion: IpNet },
}

/// Parses one address (a host, stored as /32 or /128) or prefix.
pub fn parse_entry(input: &str) -> Result<IpNet, EntryError> {
    let trimmed = input.trim();
    let net = if trimmed.contains('/') {
        trimmed.parse::<IpNet>().ok()
    } else {
        trimmed.parse::<IpAddr>().ok().map(IpNet::from)
    }
    .ok_or_else(|| EntryError::Invalid {
        input: trimmed.to_string(),
    })?;

    if let IpNet::V6(v6) = net {
        if let Some(v4) = v6.addr().to_ipv4_mapped() {
            let prefix_len = v6.prefix_len().saturating_sub(96);
            let suggestion = IpNet::new(IpAddr::V4(v4), prefix_len).expect("prefix_len <= 32");
            return Err(EntryError::V4Mapped {
                input: trimmed.to_string(),
                suggestion,
            });
        }
    }
    if net.trunc() != net {
        return Err(EntryError::HostBits {
            input: trimmed.to_string(),
            prefix_len: net.prefix_len(),
            suggestion: net.trunc(),
        });
    }
    Ok(net)
}

/// PLACEHOLDER (the input helper's version replaces it): one address, as `why` takes it.
pub fn parse_address(input: &str) -> Result<IpAddr, EntryError> {
    input.trim().parse().map_err(|_| EntryError::Invalid {
        input: input.trim().to_string(),
    })
}

/// A list file with one or more bad lines. Nothing from it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ListFileError {
    /// Where the text came from (a path, a URL, "stdin").
    pub origin: String,
    /// Every bad line: (1-based line number, what is wrong).
    pub errors: Vec<(usize, EntryError)>,
}

impl fmt::Display for ListFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        write!(
            f,
            "{}: {} bad line(s), nothing applied",
            self.origin,
            self.errors.len()
        )?;
        for (line, error) in self.errors.iter().take(SHOWN) {
            write!(f, "\n  {}:{}: {}", self.origin, line, error)?;
        }
        if self.errors.len() > SHOWN {
            write!(f, "\n  ... and {} more", self.errors.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Parses a plain list: one address or prefix per line; `#` and `;` start comments; blank lines
/// are ignored. All or nothing: any bad line makes the whole list an error listing every bad line.
/// Duplicates are kept once, in first-seen order.
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<IpNet>, ListFileError> {
    let mut nets = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split(['#', ';']).next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_entry(content) {
            Ok(net) => {
                if seen.insert(net) {
                    nets.push(net);
                }
            }
            Err(e) => errors.push((index + 1, e)),
        }
    }
    if errors.is_empty() {
        Ok(nets)
    } else {
        Err(ListFileError {
            origin: origin.to_string(),
            errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_full_length_prefixes() {
        assert_eq!(
            parse_entry("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_entry(" 2001:db8::1 ").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_entry("203.0.113.0/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(parse_entry("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "300.1.1.1",
            "1.2.3.4/33",
            "2001:db8::/129",
            "x/8",
        ] {
            let err = parse_entry(bad).unwrap_err();
            assert!(matches!(err, EntryError::Invalid { .. }), "{bad}: {err:?}");
            assert!(
                err.to_string().contains(&format!("`{}`", bad.trim())),
                "{err}"
            );
        }
    }

    #[test]
    fn host_bits_are_an_error_with_a_suggestion() {
        let err = parse_entry("198.51.100.7/24").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`198.51.100.7/24` has host bits set after /24; did you mean 198.51.100.0/24?"
        );
        assert!(matches!(
            parse_entry("2001:db8::1/64"),
            Err(EntryError::HostBits { .. })
        ));
    }

    #[test]
    fn v4_mapped_v6_is_rejected_with_the_v4_form() {
        let err = parse_entry("::ffff:198.51.100.7").unwrap_err();
        assert!(err.to_string().contains("write 198.51.100.7/32"), "{err}");
    }

    #[test]
    fn list_files_skip_comments_and_report_every_bad_line() {
        let text =
            "# feed\n198.51.100.7\n\n203.0.113.0/24 ; spammer\n198.51.100.7\n2001:db8::/32\n";
        let nets = parse_list(text, "t.txt").unwrap();
        let shown: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            ["198.51.100.7/32", "203.0.113.0/24", "2001:db8::/32"]
        );

        let err = parse_list("1.1.1.1\nnope\n2.2.2.2/8\n", "bad.txt").unwrap_err();
        assert_eq!(err.errors.len(), 2);
        assert_eq!(err.errors[0].0, 2);
        assert_eq!(err.errors[1].0, 3);
        let text = err.to_string();
        assert!(text.contains("bad.txt:2: `nope`"), "{text}");
        assert!(
            text.contains("bad.txt:3: `2.2.2.2/8` has host bits"),
            "{text}"
        );
        assert!(text.contains("nothing applied"), "{text}");
    }
}
