//! Blocklist feeds: formats, fetching, and what a refresh reports.
//!
//! A feed's whole set is replaced atomically by the registry (new entries added first, stale ones
//! removed after), so a refresh never leaves a gap. A failed fetch or parse keeps the old set.

use std::time::Duration;

use groundzero::{
    entry::{parse_entry, parse_lines, EntryError, ListFileError},
    text::for_terminal,
};
use ipnet::IpNet;

/// A feed's format: the API's type (the config and the feed caches spell it the same way).
pub use groundzero_api::feeds::FeedFormat;

/// A parsed feed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFeed {
    /// Every entry once, in first-seen order. A prefix with host bits set is an error for
    /// its line, never widened.
    pub nets: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Every bad line, with the feed's origin and line numbers; nothing was applied.
    #[error(transparent)]
    Lines(#[from] ListFileError),
    #[error(
        "{}: no entries (an empty feed is refused rather than unblocking everything it held)",
        for_terminal(.origin)
    )]
    Empty { origin: String },
    #[error("fetching {}: {}", for_terminal(.url), for_terminal(.message))]
    Fetch { url: String, message: String },
    #[error("reading {}: {source}", for_terminal(.path))]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses a feed. All or nothing, like list files: every bad line is reported (with `origin`,
/// the feed's name or URL, and the line number) and any bad line fails the whole feed, which
/// keeps its previous set. Third-party data gets no more slack than a hand-written list: a
/// prefix with host bits set (`198.51.100.7/0`) is an error, never silently widened to what it
/// might have meant. A UTF-8 BOM and `\r\n` or bare `\r` line ends are accepted.
pub fn parse_feed(text: &str, format: FeedFormat, origin: &str) -> Result<ParsedFeed, FeedError> {
    let comments: &[char] = match format {
        FeedFormat::Plain => &['#', ';'],
        FeedFormat::Spamhaus => &[';', '#'],
        FeedFormat::Firehol => &['#'],
    };
    let nets = parse_lines(text, origin, comments, |content| {
        if format == FeedFormat::Spamhaus && !content.contains('/') {
            return Err(EntryError::Invalid {
                input: content.to_string(),
            });
        }
        parse_entry(content)
    })?;
    if nets.is_empty() {
        return Err(FeedError::Empty {
            origin: origin.to_string(),
        });
    }
    Ok(ParsedFeed { nets })
}

/// Reads a feed from an http(s) URL or a local path. Blocking: call from a blocking thread.
pub fn fetch(url: &str, timeout: Duration) -> Result<String, FeedError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        let agent = ureq::AgentBuilder::new().timeout(timeout).build();
        let response = agent
            .get(url)
            .set(
                "User-Agent",
                concat!("groundzero/", env!("CARGO_PKG_VERSION")),
            )
            .call()
            .map_err(|e| FeedError::Fetch {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let mut body = String::new();
        std::io::Read::read_to_string(&mut response.into_reader().take(512 << 20), &mut body)
            .map_err(|e| FeedError::Fetch {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        Ok(body)
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        std::fs::read_to_string(path).map_err(|source| FeedError::Read {
            path: path.to_string(),
            source,
        })
    }
}

use std::io::Read as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spamhaus_drop_format() {
        let text = "; Spamhaus DROP List 2026/11/23\n; Expires: ...\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n";
        let feed = parse_feed(text, FeedFormat::Spamhaus, "drop.txt").unwrap();
        assert_eq!(feed.nets.len(), 2);
        let err = parse_feed("1.2.3.4 ; SBL1\n", FeedFormat::Spamhaus, "drop.txt").unwrap_err();
        assert!(
            err.to_string().contains("\n  drop.txt:1: `1.2.3.4`"),
            "{err}"
        );
    }

    #[test]
    fn firehol_netset_with_hosts_and_prefixes() {
        let text = "#\n# firehol_level1\n#\n192.0.2.7\n198.51.100.0/24\n2001:db8::/32\n";
        let feed = parse_feed(text, FeedFormat::Firehol, "level1.netset").unwrap();
        let shown: Vec<String> = feed.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["192.0.2.7/32", "198.51.100.0/24", "2001:db8::/32"]);
    }

    #[test]
    fn host_bits_fail_the_feed_instead_of_widening_it() {
        // The trust issue's example: normalising this line used to block the whole IPv4 internet.
        for format in [FeedFormat::Plain, FeedFormat::Spamhaus, FeedFormat::Firehol] {
            let err = parse_feed("198.51.100.7/0\n", format, "feed:evil").unwrap_err();
            let FeedError::Lines(lines) = &err else {
                panic!("{format:?}: {err:?}")
            };
            assert_eq!(lines.errors.len(), 1);
            assert_eq!(lines.errors[0].0, 1);
            assert!(matches!(
                lines.errors[0].1,
                EntryError::HostBits { prefix_len: 0, .. }
            ));
            let text = err.to_string();
            assert!(
                text.contains("feed:evil:1: `198.51.100.7/0` has host bits set after /0"),
                "{text}"
            );
            assert!(text.contains("nothing applied"), "{text}");
        }
    }

    #[test]
    fn every_bad_line_is_reported_and_capped_at_ten() {
        let mut text = String::from("192.0.2.1\n");
        for i in 0..13 {
            text.push_str(&format!("bogus{i}\n"));
        }
        text.push_str("198.51.100.9/24\n");
        let err = parse_feed(&text, FeedFormat::Plain, "x").unwrap_err();
        let FeedError::Lines(lines) = &err else {
            panic!("{err:?}")
        };
        let numbers: Vec<usize> = lines.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (2..=15).collect::<Vec<_>>());
        let shown = err.to_string();
        assert!(
            shown.starts_with("x: 14 bad line(s), nothing applied"),
            "{shown}"
        );
        assert!(shown.contains("x:2: `bogus0`"), "{shown}");
        assert!(shown.contains("x:11: `bogus9`"), "{shown}");
        assert!(!shown.contains("x:12:"), "{shown}");
        assert!(shown.ends_with("... and 4 more"), "{shown}");
    }

    #[test]
    fn bom_and_every_line_end_are_accepted_and_counted() {
        let text = "\u{feff}192.0.2.1\r\n198.51.100.0/24\r203.0.113.0/24\nbad\r\n";
        let err = parse_feed(text, FeedFormat::Plain, "x").unwrap_err();
        let FeedError::Lines(lines) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(lines.errors.len(), 1);
        assert_eq!(lines.errors[0].0, 4, "{err}");
        let good = text.replace("bad", "");
        let feed = parse_feed(&good, FeedFormat::Firehol, "x").unwrap();
        assert_eq!(feed.nets.len(), 3);
    }

    #[test]
    fn origin_and_lines_are_escaped_in_messages() {
        let err = parse_feed(
            "\u{1b}[2J\u{1b}[31mPWNED\n",
            FeedFormat::Plain,
            "feed\u{1b}]0;x",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("feed\\u{1b}]0;x:1: `\\u{1b}[2J"), "{text}");
        let empty = parse_feed("", FeedFormat::Plain, "a\u{7}b").unwrap_err();
        assert!(!empty.to_string().contains('\u{7}'), "{empty}");
    }

    #[test]
    fn empty_feeds_are_refused() {
        assert!(matches!(
            parse_feed("# nothing\n", FeedFormat::Plain, "x"),
            Err(FeedError::Empty { .. })
        ));
        assert!(matches!(
            parse_feed("\u{feff}\r\r\n", FeedFormat::Spamhaus, "x"),
            Err(FeedError::Empty { .. })
        ));
    }
}
