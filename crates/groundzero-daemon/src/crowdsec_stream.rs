//! CrowdSec's decision stream (`GET /v1/decisions/stream`), decoded and turned into holds.
//!
//! Pure: no I/O, no clock (the caller passes `now`). [`decode`] reads a body; [`plan`] turns
//! decisions into bans and unbans (only `type = ban`, scopes `Ip`/`Range`, values normalised,
//! the remaining Go duration as TTL); [`Book`] remembers which decision ids hold which entry,
//! so a deletion releases an entry only when no live decision of the same origin holds it, and
//! a repeated deletion (a real LAPI repeats one in every delta within about 2 s) changes nothing.
//!
//! What a real LAPI 1.4.6 sends is listed in `groundzero_lab::crowdsec` and checked by
//! `crates/groundzero-cli/tests/crowdsec_lapi.rs`.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;

/// Sources of crowdsec holds start with this (`crowdsec:<origin>`).
pub const SOURCE_PREFIX: &str = "crowdsec:";

/// Why a body is not a decision stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the decision stream is not valid JSON of the expected shape: {0}")]
    Json(String),
}

/// One decision as the LAPI sends it (1.4.6: exactly these fields; later versions add some,
/// which are ignored).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Decision {
    /// Remaining time, a Go duration (`"1h59m58.4s"`); negative when deleted or expired.
    pub duration: String,
    pub id: u64,
    /// `cscli`, `crowdsec`, `CAPI`, `lists`, ...
    pub origin: String,
    pub scenario: String,
    /// `Ip` or `Range` (others exist: `Country`, `AS`, ...).
    pub scope: String,
    /// `ban`, `captcha`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// An address or a prefix, exactly as entered (not normalised).
    pub value: String,
}

/// A decoded stream. A real LAPI sends `null` for an empty list; both read as empty.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Stream {
    #[serde(default, deserialize_with = "null_is_empty")]
    pub new: Vec<Decision>,
    #[serde(default, deserialize_with = "null_is_empty")]
    pub deleted: Vec<Decision>,
}

fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Decision>, D::Error> {
    Ok(Option::<Vec<Decision>>::deserialize(d)?.unwrap_or_default())
}

/// Decodes a stream body. Anything but a JSON object with (possibly null) `new` and `deleted`
/// lists of complete decisions is an error: a truncated or garbage body must change nothing.
pub fn decode(body: &[u8]) -> Result<Stream, StreamError> {
    serde_json::from_slice(body).map_err(|e| StreamError::Json(e.to_string()))
}

/// Parses a Go duration (`time.Duration.String()` and `time.ParseDuration` syntax): an
/// optional sign, then one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `ms`,
/// `s`, `m`, `h`), or `0`. Returns (negative, magnitude); `None` if it is not one.
pub fn parse_go_duration(text: &str) -> Option<(bool, Duration)> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * seconds;
    }
    Duration::try_from_secs_f64(total)
        .ok()
        .map(|d| (negative, d))
}

/// Which scopes to apply.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One address: the exact map.
    Ip,
    /// A prefix: the prefix map.
    Range,
}

impl Scope {
    /// The LAPI's spelling is `Ip` / `Range`; accepted in any case (a pushed `ip` is stored as
    /// such, and a LAPI that one day returns it must not make us drop it silently).
    fn of(scope: &str) -> Option<Self> {
        if scope.eq_ignore_ascii_case("ip") {
            Some(Scope::Ip)
        } else if scope.eq_ignore_ascii_case("range") {
            Some(Scope::Range)
        } else {
            None
        }
    }
}

/// What of a stream to apply; empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Decision origins to apply (`crowdsec`, `cscli`, `CAPI`, `lists`, ...).
    pub origins: Vec<String>,
    /// Apply a decision only if its scenario contains one of these.
    pub scenarios: Vec<String>,
    /// Scopes to apply; empty: `Ip` and `Range`.
    pub scopes: Vec<Scope>,
}

impl Filter {
    fn admits(&self, d: &Decision, scope: Scope) -> bool {
        (self.origins.is_empty() || self.origins.contains(&d.origin))
            && (self.scenarios.is_empty() || self.scenarios.iter().any(|s| d.scenario.contains(s)))
            && (self.scopes.is_empty() || self.scopes.contains(&scope))
    }
}

/// Normalises a decision's value: `Ip` must be one address (IPv4-mapped IPv6 becomes IPv4),
/// `Range` a prefix whose host bits are cleared (`203.0.113.7/24` → `203.0.113.0/24`; the
/// guard and its wide-prefix rule then judge the result) or one address.
pub fn normalise(scope: Scope, value: &str) -> Option<IpNet> {
    let value = value.trim();
    let host = |addr: IpAddr| {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        IpNet::from(addr)
    };
    match scope {
        Scope::Ip => value.parse::<IpAddr>().ok().map(host),
        Scope::Range => match value.parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => value.parse::<IpAddr>().ok().map(host),
        },
    }
}

/// A decision to enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub id: u64,
    pub net: IpNet,
    /// `crowdsec:<origin>`.
    pub source: String,
    /// The scenario.
    pub reason: String,
    /// Unix seconds when it ends (now + remaining time, rounded up).
    pub expires: u64,
}

/// Decisions not applied, by why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Type other than `ban`.
    pub not_ban: usize,
    /// Scope other than `Ip`/`Range`, or not admitted by the filter.
    pub filtered: usize,
    /// Already expired (zero or negative remaining time) when it came as new.
    pub expired: usize,
    /// Value or duration that does not parse: (value, why).
    pub invalid: Vec<(String, String)>,
}

/// What one stream asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub bans: Vec<Ban>,
    /// Ids of deleted decisions (every deleted decision: [`Book`] knows which it applied).
    pub deleted: Vec<u64>,
    pub skipped: Skipped,
}

/// Turns a decoded stream into bans and deletions.
pub fn plan(stream: &Stream, filter: &Filter, now: u64) -> Plan {
    let mut out = Plan {
        deleted: stream.deleted.iter().map(|d| d.id).collect(),
        ..Plan::default()
    };
    for d in &stream.new {
        if d.kind != "ban" {
            out.skipped.not_ban += 1;
            continue;
        }
        let Some(scope) = Scope::of(&d.scope) else {
            out.skipped.filtered += 1;
            continue;
        };
        if !filter.admits(d, scope) {
            out.skipped.filtered += 1;
            continue;
        }
        let Some(net) = normalise(scope, &d.value) else {
            out.skipped
                .invalid
                .push((d.value.clone(), format!("not a valid {:?} value", d.scope)));
            continue;
        };
        let Some((negative, remaining)) = parse_go_duration(&d.duration) else {
            out.skipped
                .invalid
                .push((d.value.clone(), format!("duration {:?}", d.duration)));
            continue;
        };
        if negative || remaining.is_zero() {
            out.skipped.expired += 1;
            continue;
        }
        let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        out.bans.push(Ban {
            id: d.id,
            net,
            source: format!("{SOURCE_PREFIX}{}", d.origin),
            reason: d.scenario.clone(),
            expires: now.saturating_add(seconds),
        });
    }
    out
}

/// One hold to put in the registry: (entry, source) with the reason and the latest expiry of
/// the live decisions behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub net: IpNet,
    pub source: String,
    pub reason: String,
    pub expires: u64,
}

/// What the registry must do after a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Holds to add or renew.
    pub holds: Vec<Hold>,
    /// (entry, source) holds to release: no live decision of that source holds the entry.
    pub releases: Vec<(IpNet, String)>,
}

impl Changes {
    /// `holds` grouped by (source, reason, expires), so each group is one registry call (one
    /// journal write) with one holder.
    pub fn hold_groups(&self) -> BTreeMap<(String, String, u64), Vec<IpNet>> {
        let mut groups: BTreeMap<(String, String, u64), Vec<IpNet>> = BTreeMap::new();
        for h in &self.holds {
            groups
                .entry((h.source.clone(), h.reason.clone(), h.expires))
                .or_default()
                .push(h.net);
        }
        groups
    }

    /// `releases` grouped by source.
    pub fn release_groups(&self) -> BTreeMap<String, Vec<IpNet>> {
        let mut groups: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for (net, source) in &self.releases {
            groups.entry(source.clone()).or_default().push(*net);
        }
        groups
    }
}

/// Seconds two pulls' expiries of one decision may differ by and count as the same (remaining
/// times are rounded up to whole seconds at each pull).
pub const EXPIRY_SLACK: u64 = 2;

/// The live decisions applied so far, by id and by (entry, source).
#[derive(Clone, Debug, Default)]
pub struct Book {
    by_id: HashMap<u64, Ban>,
    by_key: HashMap<(IpNet, String), BTreeSet<u64>>,
}

impl Book {
    /// How many live decisions are known.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no live decision is known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The (entry, source) pairs held now.
    pub fn keys(&self) -> BTreeSet<(IpNet, String)> {
        self.by_key.keys().cloned().collect()
    }

    /// A startup pull: the stream's live set replaces everything. `held` is what the registry
    /// holds for crowdsec sources now (from before a restart or an outage); whatever of it is
    /// not in the new set is released. With the `previous` book (a resync), holds that are
    /// held already with the same reason and an expiry within [`EXPIRY_SLACK`] are not
    /// written again (a resync of 100,000 unchanged decisions writes nothing).
    pub fn startup(
        plan: &Plan,
        held: &BTreeSet<(IpNet, String)>,
        previous: Option<&Book>,
    ) -> (Self, Changes) {
        let mut book = Book::default();
        for ban in &plan.bans {
            book.insert(ban.clone());
        }
        let keys = book.keys();
        let unchanged = |key: &(IpNet, String), hold: &Hold| {
            held.contains(key)
                && previous.and_then(|p| p.hold(key)).is_some_and(|old| {
                    old.reason == hold.reason && old.expires.abs_diff(hold.expires) <= EXPIRY_SLACK
                })
        };
        let changes = Changes {
            holds: keys
                .iter()
                .filter_map(|k| book.hold(k).filter(|h| !unchanged(k, h)))
                .collect(),
            releases: held.difference(&keys).cloned().collect(),
        };
        (book, changes)
    }

    /// A delta: deletions first (known ids only; repeats and unknown ids change nothing), then
    /// new decisions.
    pub fn delta(&mut self, plan: &Plan) -> Changes {
        let mut touched = BTreeSet::new();
        for id in &plan.deleted {
            if let Some(ban) = self.by_id.remove(id) {
                let key = (ban.net, ban.source);
                if let Some(ids) = self.by_key.get_mut(&key) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
                touched.insert(key);
            }
        }
        for ban in &plan.bans {
            touched.insert((ban.net, ban.source.clone()));
            self.insert(ban.clone());
        }
        let mut changes = Changes::default();
        for key in touched {
            match self.hold(&key) {
                Some(hold) => changes.holds.push(hold),
                None => changes.releases.push(key),
            }
        }
        changes
    }

    fn insert(&mut self, ban: Ban) {
        if let Some(old) = self.by_id.remove(&ban.id) {
            let key = (old.net, old.source);
            if let Some(ids) = self.by_key.get_mut(&key) {
                ids.remove(&ban.id);
                if ids.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
        self.by_key
            .entry((ban.net, ban.source.clone()))
            .or_default()
            .insert(ban.id);
        self.by_id.insert(ban.id, ban);
    }

    /// The hold for a key: the latest-ending live decision decides reason and expiry.
    fn hold(&self, key: &(IpNet, String)) -> Option<Hold> {
        let best = self
            .by_key
            .get(key)?
            .iter()
            .filter_map(|id| self.by_id.get(id))
            .max_by_key(|b| (b.expires, b.id))?;
        Some(Hold {
            net: key.0,
            source: key.1.clone(),
            reason: best.reason.clone(),
            expires: best.expires,
        })
    }
}

/// The share of `old` that going to `new` adds and removes ((added + removed) / |old|), for the
/// feeds' `max_change` rule; 0 when `old` is empty (a first load is not limited).
pub fn change_share(old: &BTreeSet<(IpNet, String)>, new: &BTreeSet<(IpNet, String)>) -> f64 {
    if old.is_empty() {
        return 0.0;
    }
    let added = new.difference(old).count();
    let removed = old.difference(new).count();
    (added + removed) as f64 / old.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn decision(id: u64, value: &str, scope: &str, duration: &str) -> Decision {
        Decision {
            duration: duration.into(),
            id,
            origin: "cscli".into(),
            scenario: "crowdsecurity/ssh-bf".into(),
            scope: scope.into(),
            kind: "ban".into(),
            value: value.into(),
        }
    }

    #[test]
    fn go_durations_as_a_real_lapi_sends_them() {
        let secs = |s: &str| parse_go_duration(s).map(|(neg, d)| (neg, d.as_secs_f64()));
        assert_eq!(secs("1h59m58.338302415s").unwrap().1.round(), 7198.0);
        assert_eq!(secs("59m59.3s").unwrap(), (false, 3599.3));
        assert!(secs("-295.314002ms").unwrap().0);
        assert!((secs("-295.314002ms").unwrap().1 - 0.295314002).abs() < 1e-9);
        assert_eq!(secs("-1.5s"), Some((true, 1.5)));
        assert_eq!(secs("0"), Some((false, 0.0)));
        assert_eq!(secs("24h"), Some((false, 86400.0)));
        assert!(!secs("1.5µs").unwrap().0);
        assert_eq!(secs("300ns").unwrap().1, 3e-7);
        for bad in [
            "", "-", "1d", "h", "1", "1.2.3s", "1h 2m", ".s", "1hh", "abc", "4h-1m",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn null_lists_are_empty_and_garbage_is_an_error() {
        let empty = decode(br#"{"deleted":null,"new":null}"#).unwrap();
        assert_eq!(empty, Stream::default());
        assert_eq!(decode(b"{}").unwrap(), Stream::default());
        let body = br#"{"deleted":null,"new":[{"duration":"59m58.3s","id":2,"origin":"cscli","scenario":"r2","scope":"Range","type":"ban","value":"198.51.100.0/24"}]}"#;
        let stream = decode(body).unwrap();
        assert_eq!(stream.new.len(), 1);
        assert_eq!(stream.new[0].kind, "ban");
        // Truncated, garbage, a decision missing a field, a list of the wrong type.
        assert!(decode(&body[..body.len() - 3]).is_err());
        assert!(decode(b"<html>502 Bad Gateway</html>").is_err());
        assert!(decode(br#"{"new":[{"id":1,"value":"192.0.2.1"}]}"#).is_err());
        assert!(decode(br#"{"new":{"a":1}}"#).is_err());
        assert!(decode(b"").is_err());
        // Fields a later LAPI adds are ignored.
        let later = br#"{"new":[{"duration":"1h","id":3,"origin":"crowdsec","scenario":"s","scope":"Ip","type":"ban","value":"192.0.2.1","uuid":"x","until":"y"}]}"#;
        assert_eq!(decode(later).unwrap().new[0].id, 3);
    }

    #[test]
    fn values_are_normalised() {
        assert_eq!(
            normalise(Scope::Ip, "2001:0DB8:0000::0001"),
            Some(net("2001:db8::1/128"))
        );
        assert_eq!(
            normalise(Scope::Range, "203.0.113.7/24"),
            Some(net("203.0.113.0/24"))
        );
        assert_eq!(
            normalise(Scope::Range, "2001:DB8:0:0:1::/48"),
            Some(net("2001:db8::/48"))
        );
        assert_eq!(
            normalise(Scope::Ip, "::ffff:192.0.2.9"),
            Some(net("192.0.2.9/32"))
        );
        assert_eq!(
            normalise(Scope::Range, "192.0.2.9"),
            Some(net("192.0.2.9/32"))
        );
        // Wide prefixes pass here: the guard's wide-prefix rule judges them.
        assert_eq!(
            normalise(Scope::Range, "10.1.2.3/0"),
            Some(net("0.0.0.0/0"))
        );
        for bad in [
            "192.0.2.0/24",
            "fe80::1%eth0",
            "",
            "999.1.1.1",
            "host.example",
        ] {
            assert_eq!(normalise(Scope::Ip, bad), None, "{bad:?}");
        }
        assert_eq!(normalise(Scope::Range, "192.0.2.0/33"), None);
    }

    #[test]
    fn only_bans_of_admitted_scopes_and_origins_become_holds() {
        let mut captcha = decision(4, "192.0.2.4", "Ip", "1h");
        captcha.kind = "captcha".into();
        let mut capi = decision(5, "192.0.2.5", "Ip", "1h");
        capi.origin = "CAPI".into();
        let stream = Stream {
            new: vec![
                decision(1, "192.0.2.1", "Ip", "1h0m0.2s"),
                decision(2, "198.51.100.7/24", "Range", "30m"),
                decision(3, "FR", "Country", "1h"),
                captcha,
                capi,
                decision(6, "192.0.2.6", "Ip", "-1.2s"),
                decision(7, "not-an-ip", "Ip", "1h"),
                decision(8, "192.0.2.8", "Ip", "1d"),
                decision(9, "192.0.2.9", "ip", "10s"),
            ],
            deleted: vec![decision(10, "192.0.2.10", "Ip", "-3s")],
        };
        let filter = Filter {
            origins: vec!["cscli".into()],
            ..Filter::default()
        };
        let p = plan(&stream, &filter, 1_000);
        let got: Vec<(u64, IpNet, u64)> = p.bans.iter().map(|b| (b.id, b.net, b.expires)).collect();
        assert_eq!(
            got,
            [
                (1, net("192.0.2.1/32"), 1_000 + 3601),
                (2, net("198.51.100.0/24"), 1_000 + 1800),
                (9, net("192.0.2.9/32"), 1_010),
            ]
        );
        assert_eq!(p.bans[0].source, "crowdsec:cscli");
        assert_eq!(p.bans[0].reason, "crowdsecurity/ssh-bf");
        assert_eq!(p.deleted, [10]);
        assert_eq!(p.skipped.not_ban, 1);
        assert_eq!(p.skipped.filtered, 2, "Country and the CAPI origin");
        assert_eq!(p.skipped.expired, 1);
        assert_eq!(p.skipped.invalid.len(), 2, "{:?}", p.skipped.invalid);

        let ranges_only = Filter {
            scopes: vec![Scope::Range],
            scenarios: vec!["ssh".into()],
            ..Filter::default()
        };
        let p = plan(&stream, &ranges_only, 0);
        assert_eq!(p.bans.len(), 1);
        assert_eq!(p.bans[0].id, 2);
    }

    fn ban(id: u64, n: &str, expires: u64) -> Ban {
        Ban {
            id,
            net: net(n),
            source: "crowdsec:cscli".into(),
            reason: format!("r{id}"),
            expires,
        }
    }

    fn key(n: &str) -> (IpNet, String) {
        (net(n), "crowdsec:cscli".into())
    }

    #[test]
    fn startup_replaces_what_was_held_before() {
        let plan = Plan {
            bans: vec![ban(1, "192.0.2.1/32", 100), ban(2, "198.51.100.0/24", 50)],
            ..Plan::default()
        };
        let held: BTreeSet<_> = [key("192.0.2.1/32"), key("203.0.113.9/32")].into();
        let (book, changes) = Book::startup(&plan, &held, None);
        assert_eq!(book.len(), 2);
        assert_eq!(changes.holds.len(), 2);
        assert_eq!(changes.releases, [key("203.0.113.9/32")]);
        assert_eq!(
            change_share(&held, &book.keys()),
            1.0,
            "one added, one removed, of 2"
        );
        assert_eq!(change_share(&BTreeSet::new(), &book.keys()), 0.0);

        // A resync with the same set, a second later: nothing to write but what changed.
        let held = book.keys();
        let again = Plan {
            bans: vec![
                ban(1, "192.0.2.1/32", 101),
                ban(2, "198.51.100.0/24", 50),
                ban(3, "203.0.113.3/32", 70),
            ],
            ..Plan::default()
        };
        let (resynced, changes) = Book::startup(&again, &held, Some(&book));
        assert_eq!(resynced.len(), 3);
        assert_eq!(changes.releases, []);
        let written: Vec<IpNet> = changes.holds.iter().map(|h| h.net).collect();
        assert_eq!(written, [net("203.0.113.3/32")]);
        // An extended decision is written again.
        let longer = Plan {
            bans: vec![ban(1, "192.0.2.1/32", 900), ban(2, "198.51.100.0/24", 50)],
            ..Plan::default()
        };
        let (_, changes) = Book::startup(&longer, &held, Some(&book));
        assert_eq!(changes.holds.len(), 1);
        assert_eq!(changes.holds[0].expires, 900);
        // Without the previous book (a daemon restart) every hold is written.
        let (_, changes) = Book::startup(&longer, &held, None);
        assert_eq!(changes.holds.len(), 2);
    }

    #[test]
    fn deletions_are_idempotent_and_release_only_unheld_entries() {
        let (mut book, _) = Book::startup(
            &Plan {
                bans: vec![
                    ban(1, "192.0.2.1/32", 100),
                    ban(2, "192.0.2.1/32", 300),
                    ban(3, "198.51.100.0/24", 50),
                ],
                ..Plan::default()
            },
            &BTreeSet::new(),
            None,
        );
        assert_eq!(book.keys().len(), 2);
        // Two decisions hold 192.0.2.1: the later-ending one decides the hold.
        let (_, startup) = Book::startup(
            &Plan {
                bans: vec![ban(1, "192.0.2.1/32", 100), ban(2, "192.0.2.1/32", 300)],
                ..Plan::default()
            },
            &BTreeSet::new(),
            None,
        );
        assert_eq!(startup.holds[0].expires, 300);
        assert_eq!(startup.holds[0].reason, "r2");

        // Deleting one of the two keeps the entry, now held by the other.
        let deleted_2 = Plan {
            deleted: vec![2],
            ..Plan::default()
        };
        let c = book.delta(&deleted_2);
        assert_eq!(c.releases, []);
        assert_eq!(c.holds.len(), 1);
        assert_eq!(
            (c.holds[0].expires, c.holds[0].reason.as_str()),
            (100, "r1")
        );
        // The same deletion again (the LAPI repeats it): nothing.
        assert_eq!(book.delta(&deleted_2), Changes::default());
        // Unknown ids: nothing.
        let unknown = Plan {
            deleted: vec![77],
            ..Plan::default()
        };
        assert_eq!(book.delta(&unknown), Changes::default());
        // The last holder goes: the entry is released, once.
        let deleted_1 = Plan {
            deleted: vec![1],
            ..Plan::default()
        };
        assert_eq!(book.delta(&deleted_1).releases, [key("192.0.2.1/32")]);
        assert_eq!(book.delta(&deleted_1), Changes::default());
        assert_eq!(book.len(), 1);

        // A new decision and a deletion in one delta.
        let c = book.delta(&Plan {
            bans: vec![ban(4, "203.0.113.4/32", 500)],
            deleted: vec![3],
            ..Plan::default()
        });
        assert_eq!(c.releases, [key("198.51.100.0/24")]);
        assert_eq!(c.holds.len(), 1);
        let groups = c.hold_groups();
        assert_eq!(
            groups.get(&("crowdsec:cscli".into(), "r4".into(), 500)),
            Some(&vec![net("203.0.113.4/32")])
        );
    }
}
