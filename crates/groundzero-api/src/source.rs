//! Who holds an entry: [`Source`], and its kind ([`SourceKind`]).
//!
//! On the wire a source is one string, as it has always been: `api`, `manual`, `auto-ban`,
//! `adopted`, `app:<name>`, `feed:<name>` (configured feeds and imports alike) or
//! `crowdsec:<origin>` (a CrowdSec decision). Parsing it
//! once, here, replaces the prefix tests that used to be spread over the daemon and the CLI.

use std::{fmt, str::FromStr};

crate::labels::label_enum! {
    /// The kind of a [`Source`], without its name: a bounded set, used for counts (stats,
    /// guard refusals, metrics labels). Declared in label order: maps keyed by it serialize
    /// in the same order as the string-keyed maps the daemon used to send.
    pub enum SourceKind as "source kind" {
        /// Found in a pinned map with no record at start-up.
        Adopted => "adopted",
        /// An API caller that named no source (the default).
        Api => "api",
        /// An application, `app:<name>`.
        App => "app",
        /// The daemon's rate limit.
        AutoBan => "auto-ban",
        /// A CrowdSec decision, `crowdsec:<origin>`.
        Crowdsec => "crowdsec",
        /// A configured feed or an import, `feed:<name>`.
        Feed => "feed",
        /// An operator, by hand.
        Manual => "manual",
        /// A source this version does not know (see [`Source::Other`]).
        Other => "other",
    }
}

/// Who holds an entry on a list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Found in a pinned map with no record at start-up (written by another tool while no
    /// daemon ran, or an unacknowledged change before a crash).
    Adopted,
    /// An API caller that named no source.
    Api,
    /// An application (`app:<name>`), e.g. a validator banning peers.
    App(String),
    /// The daemon's rate limit (`auto-ban`).
    AutoBan,
    /// A CrowdSec decision (`crowdsec:<origin>`: `crowdsec`, `cscli`, `CAPI`, `lists`, ...);
    /// only the daemon's bouncer sets it.
    Crowdsec(String),
    /// A configured feed or an import (`feed:<name>`); only the daemon sets it.
    Feed(String),
    /// An operator, by hand (`manual`).
    Manual,
    /// Any other string: a journal written by another version or by hand, a feed cache with
    /// an odd file name. Kept and shown as it is, so that reading never fails on a holder the
    /// daemon has; nobody can set one through the API ([`Source::caller_settable`]).
    Other(String),
}

/// A source an API caller may not set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A well-formed source an API caller may not set (feeds and adoption are the daemon's),
    /// or an application name outside 1 to 64 letters, digits, `-`, `_` and `.`.
    #[error("`{0}` cannot be set by an API caller (use api, manual, auto-ban or app:<name>)")]
    NotSettable(String),
}

/// The longest application name a caller may use (`app:<name>`).
pub const MAX_APP_NAME: usize = 64;

impl Source {
    /// Its kind (`feed:x` → [`SourceKind::Feed`]).
    pub fn kind(&self) -> SourceKind {
        match self {
            Source::Adopted => SourceKind::Adopted,
            Source::Api => SourceKind::Api,
            Source::App(_) => SourceKind::App,
            Source::AutoBan => SourceKind::AutoBan,
            Source::Crowdsec(_) => SourceKind::Crowdsec,
            Source::Feed(_) => SourceKind::Feed,
            Source::Manual => SourceKind::Manual,
            Source::Other(_) => SourceKind::Other,
        }
    }

    /// The name of an application or feed source, or a CrowdSec decision's origin.
    pub fn name(&self) -> Option<&str> {
        match self {
            Source::App(name) | Source::Feed(name) | Source::Crowdsec(name) => Some(name),
            _ => None,
        }
    }

    /// Parses a source an API caller asks for: `api`, `manual`, `auto-ban`, or `app:<name>`
    /// with 1 to [`MAX_APP_NAME`] letters, digits, `-`, `_` and `.`. Feeds and `adopted` are
    /// set by the daemon only.
    pub fn caller_settable(s: &str) -> Result<Source, SourceError> {
        let not_settable = || SourceError::NotSettable(s.to_string());
        match Source::parse(s) {
            source @ (Source::Api | Source::Manual | Source::AutoBan) => Ok(source),
            Source::App(name)
                if name.len() <= MAX_APP_NAME
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Ok(Source::App(name))
            }
            _ => Err(not_settable()),
        }
    }

    /// Does this source match a listing filter (`GET /v1/entries?source=`)? A filter matches
    /// the whole source, or its kind with a name after it: `feed` matches every `feed:<name>`.
    pub fn matches_filter(&self, filter: &str) -> bool {
        let text = self.to_string();
        text == filter
            || text
                .strip_prefix(filter)
                .is_some_and(|rest| rest.starts_with(':'))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::App(name) | Source::Feed(name) | Source::Crowdsec(name) => {
                write!(f, "{}:{name}", self.kind())
            }
            Source::Other(text) => f.write_str(text),
            other => f.write_str(other.kind().label()),
        }
    }
}

impl FromStr for Source {
    type Err = std::convert::Infallible;

    /// The wire form; never fails: what is not a known form is [`Source::Other`]. Names are
    /// taken as they are (non-empty): what a name may hold is the business of whoever creates
    /// it ([`Source::caller_settable`], the daemon's config), and a reader must not fail on a
    /// holder the daemon has.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Source::parse(s))
    }
}

impl Source {
    /// [`FromStr`] without the `Result`: every string is a source.
    pub fn parse(s: &str) -> Source {
        match s.split_once(':') {
            Some(("app", name)) if !name.is_empty() => Source::App(name.to_string()),
            Some(("feed", name)) if !name.is_empty() => Source::Feed(name.to_string()),
            Some(("crowdsec", origin)) if !origin.is_empty() => {
                Source::Crowdsec(origin.to_string())
            }
            Some(_) => Source::Other(s.to_string()),
            None => match s.parse::<SourceKind>() {
                Ok(SourceKind::Adopted) => Source::Adopted,
                Ok(SourceKind::Api) => Source::Api,
                Ok(SourceKind::AutoBan) => Source::AutoBan,
                Ok(SourceKind::Manual) => Source::Manual,
                _ => Source::Other(s.to_string()),
            },
        }
    }

    /// The kind of a source given as text (`feed:x` → [`SourceKind::Feed`]).
    pub fn kind_of(s: &str) -> SourceKind {
        Source::parse(s).kind()
    }
}

impl serde::Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Source {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::labels::deserialize_parsed(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_round_trip() {
        for text in [
            "api",
            "manual",
            "auto-ban",
            "adopted",
            "app:validator-node",
            "feed:spamhaus",
            "crowdsec:cscli",
            "crowdsec:CAPI",
        ] {
            let source: Source = text.parse().unwrap();
            assert_eq!(source.to_string(), text);
            assert_eq!(
                serde_json::to_string(&source).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<Source>(&format!("\"{text}\"")).unwrap(),
                source
            );
        }
        assert_eq!("feed:a".parse::<Source>().unwrap().kind(), SourceKind::Feed);
        assert_eq!("app:x".parse::<Source>().unwrap().name(), Some("x"));
        assert_eq!(
            Source::parse("crowdsec:crowdsec").kind(),
            SourceKind::Crowdsec
        );
    }

    #[test]
    fn unknown_sources_are_kept_as_they_are() {
        for text in [
            "",
            "feed",
            "app",
            "feed:",
            "app:",
            "crowdsec",
            "crowdsec:",
            "import:x",
            "API",
            "api:x",
            "auto_ban",
            "other",
        ] {
            let source = Source::parse(text);
            assert_eq!(source, Source::Other(text.to_string()), "{text:?}");
            assert_eq!(source.to_string(), text);
            assert_eq!(source.kind(), SourceKind::Other);
            assert!(Source::caller_settable(text).is_err(), "{text:?}");
        }
        let read: Source = serde_json::from_str("\"nobody\"").unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), "\"nobody\"");
    }

    #[test]
    fn callers_set_only_their_own_sources() {
        for ok in [
            "api",
            "manual",
            "auto-ban",
            "app:validator-node",
            "app:a.b_c-9",
        ] {
            assert_eq!(Source::caller_settable(ok).unwrap().to_string(), ok);
        }
        let long = format!("app:{}", "a".repeat(MAX_APP_NAME + 1));
        for refused in [
            "feed:x",
            "crowdsec:cscli",
            "adopted",
            "app:",
            "app:a b",
            "app:\u{1b}[2J",
            long.as_str(),
            "x",
        ] {
            assert_eq!(
                Source::caller_settable(refused),
                Err(SourceError::NotSettable(refused.to_string())),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn filters_match_whole_sources_or_kinds() {
        let feed = Source::Feed("spamhaus".into());
        assert!(feed.matches_filter("feed"));
        assert!(feed.matches_filter("feed:spamhaus"));
        assert!(!feed.matches_filter("feed:spam"));
        assert!(!feed.matches_filter("fee"));
        assert!(Source::AutoBan.matches_filter("auto-ban"));
        assert!(!Source::Api.matches_filter("app"));
    }

    #[test]
    fn kinds_order_like_their_labels() {
        let mut labels: Vec<&str> = SourceKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        let declared: Vec<&str> = SourceKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(
            labels, declared,
            "maps keyed by SourceKind must serialize sorted"
        );
    }
}
