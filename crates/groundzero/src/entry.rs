//! Parsing what people type into lists: addresses, prefixes, and list files.
//!
//! Strict on purpose: a prefix with host bits set (`198.51.100.7/24`) is rejected with the
//! prefix it probably meant, because silently widening or narrowing a block is worse than asking.
//!
//! The same strictness covers the small traps of hand-written and downloaded lists:
//! - IPv4 octets with leading zeros (`010.0.0.0/8`) are refused everywhere: some tools read
//!   `010` as octal 8, others as decimal 10, so either reading could be the wrong block.
//!   (`ipnet`'s parser reads it as decimal while `std`'s refuses it; we use neither directly.)
//! - Prefix lengths are plain decimal: `/08`, `/+8`, `/-8` are refused.
//! - List text may start with a UTF-8 byte-order mark and may end lines with `\r\n`, `\n` or a
//!   bare `\r`; each line end counts as one line for the numbers in error messages.
//! - IPv4-mapped IPv6 entries (`::ffff:198.51.100.7`) are refused, see [`EntryError::V4Mapped`].

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

use crate::text::for_terminal;

/// Bad input is echoed in error messages up to this many characters (a multi-megabyte garbage
/// line should not become a multi-megabyte error).
const SHOWN_CHARS: usize = 80;

/// What is wrong with one entry.
///
/// Every variant's message echoes the input escaped for a terminal ([`for_terminal`]) and
/// shortened to a few dozen characters, because the input may be a downloaded feed's line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error(
        "`{}` is not an IP address or prefix \
         (expected e.g. 198.51.100.7, 203.0.113.0/24, 2001:db8::1 or 2001:db8::/32)",
        shown(.input)
    )]
    Invalid { input: String },

    #[error(
        "`{}`: IPv4 octet `{octet}` has a leading zero, which is ambiguous (octal in some tools, \
         decimal in others); write it without leading zeros",
        shown(.input)
    )]
    LeadingZero { input: String, octet: String },

    #[error(
        "`{}`: prefix length `/{}` must be plain decimal digits with no sign or leading zero \
         (e.g. /8)",
        shown(.input),
        shown(.prefix)
    )]
    PrefixLength { input: String, prefix: String },

    #[error("`{}` has host bits set after /{prefix_len}; did you mean {suggestion}?", shown(.input))]
    HostBits {
        input: String,
        prefix_len: u8,
        suggestion: IpNet,
    },

    /// An IPv4-mapped IPv6 entry (`::ffff:a.b.c.d`).
    ///
    /// Refused because it could never do what it seems to say: the kernel program matches an
    /// IPv4 packet's source against the IPv4 lists only and an IPv6 packet's source against the
    /// IPv6 lists only, so a v4-mapped entry would never match the IPv4 packets it names (and
    /// IPv4 sockets on a dual-stack host see `::ffff:a.b.c.d` only after XDP has run). A v6
    /// packet whose source really is `::ffff:a.b.c.d` is an IPv6 source; `why` answers for it
    /// as such ([`parse_address`] accepts it), matching the kernel and the model.
    #[error(
        "`{}` is an IPv4-mapped IPv6 address, which never matches IPv4 packets; \
         write {suggestion} instead",
        shown(.input)
    )]
    V4Mapped { input: String, suggestion: IpNet },
}

/// The input as an error message shows it: escaped, and cut to [`SHOWN_CHARS`] characters.
fn shown(input: &str) -> String {
    match input.char_indices().nth(SHOWN_CHARS) {
        None => for_terminal(input).into_owned(),
        Some((cut, _)) => format!(
            "{}… ({} characters)",
            for_terminal(&input[..cut]),
            input.chars().count()
        ),
    }
}

/// Only ASCII blanks around an entry are ignored: Unicode spaces and controls (NEL, NBSP, ...)
/// make it invalid rather than being silently dropped.
fn trim_blanks(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Refuses IPv4 octets with leading zeros in a bare address (IPv4, or IPv6 with an embedded
/// dotted quad such as `64:ff9b::010.1.2.3`).
fn check_octets(address: &str, input: &str) -> Result<(), EntryError> {
    let dotted = address.rsplit(':').next().unwrap_or(address);
    for octet in dotted.split('.') {
        if octet.len() > 1 && octet.starts_with('0') && octet.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EntryError::LeadingZero {
                input: input.to_string(),
                octet: octet.to_string(),
            });
        }
    }
    Ok(())
}

fn parse_addr_part(address: &str, input: &str) -> Result<IpAddr, EntryError> {
    if address.contains('.') {
        check_octets(address, input)?;
    }
    address.parse::<IpAddr>().map_err(|_| EntryError::Invalid {
        input: input.to_string(),
    })
}

/// Parses one address, with the same rules as [`parse_entry`] (no leading-zero octets, ASCII
/// blanks around it ignored), for lookups such as the API's `why`.
///
/// Unlike [`parse_entry`], an IPv4-mapped IPv6 address is accepted: asking about one is a fair
/// question, and the answer is the kernel's, an IPv6 source matched against the IPv6 lists only
/// (see [`EntryError::V4Mapped`]). It is not converted to IPv4.
pub fn parse_address(input: &str) -> Result<IpAddr, EntryError> {
    let trimmed = trim_blanks(input);
    parse_addr_part(trimmed, trimmed)
}

/// Parses one address (a host, stored as /32 or /128) or prefix.
pub fn parse_entry(input: &str) -> Result<IpNet, EntryError> {
    let trimmed = trim_blanks(input);
    let invalid = || EntryError::Invalid {
        input: trimmed.to_string(),
    };
    let (address, prefix) = match trimmed.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (trimmed, None),
    };
    let addr = parse_addr_part(address, trimmed)?;
    let max_len: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match prefix {
        None => max_len,
        Some(p) => {
            let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let signed = p.len() > 1
                && p.starts_with(['+', '-'])
                && p[1..].bytes().all(|b| b.is_ascii_digit());
            if signed || (digits && p.len() > 1 && p.starts_with('0')) {
                return Err(EntryError::PrefixLength {
                    input: trimmed.to_string(),
                    prefix: p.to_string(),
                });
            }
            match p.parse::<u8>() {
                Ok(len) if digits && len <= max_len => len,
                _ => return Err(invalid()),
            }
        }
    };
    let net = IpNet::new(addr, prefix_len).map_err(|_| invalid())?;

    if let IpNet::V6(v6) = net {
        // Below /96 the mapped prefix ::ffff:0:0/96 is not whole, and the host-bits check
        // below refuses it (the ffff bits are host bits there).
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            let suggestion =
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|_| invalid())?;
            return Err(EntryError::V4Mapped {
                input: trimmed.to_string(),
                suggestion: suggestion.trunc(),
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

/// The lines of a list or feed text: a leading UTF-8 byte-order mark is dropped, and `\r\n`,
/// `\n` and a bare `\r` each end one line (old Mac exports and some web servers use bare `\r`).
/// Yields (1-based line number, line).
pub fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut number = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        number += 1;
        let line = match rest.find(['\r', '\n']) {
            None => std::mem::take(&mut rest),
            Some(end) => {
                let line = &rest[..end];
                let skip = if rest[end..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
                line
            }
        };
        Some((number, line))
    })
}

/// A list file with one or more bad lines. Nothing from it was applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ListFileError {
    /// Where the text came from (a path, a URL, "stdin", a feed's name). Shown escaped.
    pub origin: String,
    /// Every bad line: (1-based line number, what is wrong).
    pub errors: Vec<(usize, EntryError)>,
}

impl fmt::Display for ListFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 10;
        let origin = for_terminal(&self.origin);
        write!(
            f,
            "{origin}: {} bad line(s), nothing applied",
            self.errors.len()
        )?;
        for (line, error) in self.errors.iter().take(SHOWN) {
            write!(f, "\n  {origin}:{line}: {error}")?;
        }
        if self.errors.len() > SHOWN {
            write!(f, "\n  ... and {} more", self.errors.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Parses a plain list: one address or prefix per line; `#` and `;` start comments; blank lines
/// are ignored. All or nothing: any bad line makes the whole list an error listing every bad line.
/// Duplicates are kept once, in first-seen order. Line ends and a BOM as in [`numbered_lines`].
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<IpNet>, ListFileError> {
    parse_lines(text, origin, &['#', ';'], parse_entry)
}

/// The loop shared by list files and feeds: `comments` start a comment, `entry` parses what is
/// left of a non-blank line. Every bad line is collected; any makes the whole text an error.
pub fn parse_lines(
    text: &str,
    origin: &str,
    comments: &[char],
    entry: impl Fn(&str) -> Result<IpNet, EntryError>,
) -> Result<Vec<IpNet>, ListFileError> {
    let mut nets = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut errors = Vec::new();
    for (number, raw) in numbered_lines(text) {
        let content = trim_blanks(raw.split(comments).next().unwrap_or(""));
        if content.is_empty() {
            continue;
        }
        match entry(content) {
            Ok(net) => {
                if seen.insert(net) {
                    nets.push(net);
                }
            }
            Err(e) => errors.push((number, e)),
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

    #[test]
    fn leading_zero_octets_are_refused_in_every_form() {
        for (bad, octet) in [
            ("010.1.2.3", "010"),
            ("010.0.0.0/8", "010"),
            ("1.2.3.04/32", "04"),
            ("1.2.3.00", "00"),
            ("::ffff:010.0.0.1", "010"),
            ("64:ff9b::1.2.3.010", "010"),
        ] {
            let err = parse_entry(bad).unwrap_err();
            assert_eq!(
                err,
                EntryError::LeadingZero {
                    input: bad.into(),
                    octet: octet.into()
                },
                "{bad}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("octet `{octet}`")), "{msg}");
            assert!(msg.contains("octal"), "{msg}");
        }
        assert_eq!(
            parse_address("010.0.0.1"),
            Err(EntryError::LeadingZero {
                input: "010.0.0.1".into(),
                octet: "010".into()
            })
        );
        // Zero itself and zeros inside IPv6 groups are fine.
        assert!(parse_entry("0.0.0.0/0").is_ok());
        assert!(parse_entry("10.0.0.0/8").is_ok());
        assert!(parse_entry("2001:0db8:0000::/48").is_ok());
    }

    #[test]
    fn prefix_lengths_are_plain_decimal() {
        for bad in [
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "2001:db8::/032",
            "0.0.0.0/00",
        ] {
            let err = parse_entry(bad).unwrap_err();
            assert!(
                matches!(err, EntryError::PrefixLength { .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains("no sign or leading zero"), "{err}");
        }
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/8/8",
            "10.0.0.0/ 8",
            "10.0.0.0/8x",
            "10.0.0.0/256",
        ] {
            assert!(
                matches!(parse_entry(bad), Err(EntryError::Invalid { .. })),
                "{bad}"
            );
        }
        assert_eq!(parse_entry("::/0").unwrap().to_string(), "::/0");
    }

    #[test]
    fn v4_mapped_prefixes_are_refused_and_why_treats_them_as_v6() {
        let err = parse_entry("::ffff:198.51.100.0/120").unwrap_err();
        assert!(err.to_string().contains("write 198.51.100.0/24"), "{err}");
        assert!(matches!(
            parse_entry("::ffff:198.51.100.7/120"),
            Err(EntryError::V4Mapped { .. })
        ));
        // Shorter than /96 the ffff bits are host bits.
        assert!(matches!(
            parse_entry("::ffff:0:0/80"),
            Err(EntryError::HostBits { .. })
        ));
        let addr = parse_address(" ::ffff:198.51.100.7 ").unwrap();
        assert!(addr.is_ipv6(), "{addr}");
        assert!(parse_address("198.51.100.0/24").is_err());
    }

    #[test]
    fn only_ascii_blanks_are_trimmed() {
        assert!(parse_entry("\t198.51.100.7 ").is_ok());
        for bad in [
            "\u{a0}198.51.100.7",
            "198.51.100.7\u{85}",
            "198.51.100.7\u{200b}",
        ] {
            assert!(
                matches!(parse_entry(bad), Err(EntryError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_input_is_escaped_and_shortened_in_messages() {
        let err = parse_entry("\u{1b}[2J\u{1b}[31mPWNED").unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains('\u{1b}'), "{msg:?}");
        assert!(
            msg.starts_with("`\\u{1b}[2J\\u{1b}[31mPWNED` is not"),
            "{msg}"
        );

        let huge = "9".repeat(1_000_000);
        let msg = parse_entry(&huge).unwrap_err().to_string();
        assert!(msg.len() < 400, "{}", msg.len());
        assert!(msg.contains("… (1000000 characters)"), "{msg}");
    }

    #[test]
    fn lists_accept_a_bom_and_every_line_end_with_lines_counted() {
        let nets = parse_list(
            "\u{feff}198.51.100.7\r\n203.0.113.0/24\r2001:db8::/32\n",
            "t",
        )
        .unwrap();
        assert_eq!(nets.len(), 3);
        // Line 1 (CRLF), 2 (CR), 3 (CR), 4 (CRLF), 5 (LF), 6 (no end).
        let err = parse_list("\u{feff}1.1.1.1\r\nx\r\ry\r\n\n010.0.0.0/8", "t").unwrap_err();
        let numbers: Vec<usize> = err.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [2, 4, 6], "{err}");
        assert!(matches!(err.errors[2].1, EntryError::LeadingZero { .. }));
        // A BOM anywhere but the start is not whitespace.
        let err = parse_list("1.1.1.1\n\u{feff}2.2.2.2\n", "t").unwrap_err();
        assert_eq!(err.errors[0].0, 2);
        let lines: Vec<(usize, &str)> = numbered_lines("a\r\n\r\nb\rc\n").collect();
        assert_eq!(lines, [(1, "a"), (2, ""), (3, "b"), (4, "c")]);
    }
}
