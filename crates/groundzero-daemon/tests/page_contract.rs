//! The journey page (web/app.js) against the API's wire types: every field the page reads off a
//! reply must be a field some wire type has, every snake_case string it compares with must be a
//! field or a label, and every path it calls must be a route. A renamed or removed field fails
//! here instead of showing `undefined` on the page.
//!
//! The field names come from a `sample()` of every reply the page reads and request it sends
//! (each sample sets every optional field), the labels from the API's label enums.

use std::collections::BTreeSet;

use groundzero_api::{
    endpoints,
    feeds::FeedFormat,
    journey::{EventKind, HopStage, JourneySummary, Outcome, RecentQuery, RecentReply},
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, EntryKind, Family, RemoveReply,
        RemoveRequest, Side,
    },
    sample::Sample,
    status::{StatsReply, XdpMode},
    Action, ErrorBody, Reason, SourceKind, Stage,
};
use serde::Serialize;
use serde_json::Value;

const APP: &str = include_str!("../web/app.js");

/// Properties the page reads off the DOM, `fetch` and JavaScript's own objects: lowercase like
/// wire fields, but not from a reply.
const JS_PROPERTIES: &[&str] = &[
    "body", "dataset", "done", "hash", "hidden", "i", "length", "message", "ok", "pathname",
    "status", "target", "title", "value",
    // The capture download: a link's href and download, the Blob's size, and the extension of
    // the file name (`groundzero-drops.pcapng` reads as a property to this scan).
    "download", "href", "size", "pcapng",
    // The PNG export (a canvas and the inlined styles of the SVG copies) and the A/B button.
    "width", "height", "style", "disabled",
    // The exports' file names (`groundzero-journey.json` reads as a property to this scan).
    "json", "mmd", "png",
];

/// Every object key in `v`, at any depth.
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                out.insert(k.clone());
                keys(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

fn fields_of<T: Serialize>(value: T, out: &mut BTreeSet<String>) {
    keys(&serde_json::to_value(value).unwrap(), out);
}

/// The fields of every reply the page reads and every request it sends (it sets `body.ttl`).
fn reply_fields() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fields_of(JourneySummary::sample(), &mut out);
    fields_of(RecentReply::sample(), &mut out);
    fields_of(groundzero_api::journey::HistoryReply::sample(), &mut out);
    fields_of(groundzero_api::journey_ab::AbReply::sample(), &mut out);
    fields_of(groundzero_api::journey_ab::AbRequest::sample(), &mut out);
    fields_of(
        groundzero_api::journey_claims::ClaimsReply::sample(),
        &mut out,
    );
    fields_of(EntriesReply::sample(), &mut out);
    fields_of(StatsReply::sample(), &mut out);
    fields_of(AddReply::sample(), &mut out);
    fields_of(RemoveReply::sample(), &mut out);
    fields_of(ErrorBody::sample(), &mut out);
    fields_of(AddRequest::sample(), &mut out);
    fields_of(RemoveRequest::sample(), &mut out);
    out
}

/// Every label a wire value can have.
fn labels() -> BTreeSet<String> {
    let mut out: BTreeSet<String> = BTreeSet::new();
    out.extend(Stage::ALL.iter().map(|s| s.label().to_string()));
    out.insert(HopStage::XdpVerdict.label().to_string());
    out.extend(Reason::ALL.iter().map(|r| r.label().to_string()));
    out.extend([Action::Pass.label(), Action::Drop.label()].map(String::from));
    out.extend(Side::ALL.iter().map(|s| s.label().to_string()));
    out.extend(Family::ALL.iter().map(|f| f.label().to_string()));
    for labels in [
        Outcome::LABELS,
        EventKind::LABELS,
        SourceKind::LABELS,
        EntryKind::LABELS,
        FeedFormat::LABELS,
        XdpMode::LABELS,
        groundzero_api::journey::EntryResolution::LABELS,
        groundzero_api::journey::RateBasis::LABELS,
    ] {
        out.extend(labels.iter().map(|l| l.to_string()));
    }
    out
}

/// The page without its `//` comments (prose may hold `e.g.`).
fn code() -> String {
    APP.lines()
        .map(|line| match line.find("// ") {
            Some(at) if line[..at].trim().is_empty() || line[..at].ends_with(' ') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// Every `x.name` the page reads (not a method call `x.name(`): the name after the dot.
fn property_reads(code: &str) -> BTreeSet<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = BTreeSet::new();
    for i in 1..chars.len() {
        let before = chars[i - 1];
        if chars[i] != '.' || !(is_ident(before) || before == ')' || before == ']') {
            continue;
        }
        let name: String = chars[i + 1..]
            .iter()
            .take_while(|c| is_ident(**c))
            .collect();
        let next = chars.get(i + 1 + name.chars().count()).copied();
        let starts_like_a_name = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
        if starts_like_a_name && next != Some('(') {
            out.insert(name);
        }
    }
    out
}

/// Every double-quoted string literal of the page.
fn string_literals(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        out.push(after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

#[test]
fn the_page_reads_only_fields_the_replies_have() {
    let fields = reply_fields();
    let labels = labels();
    let unknown: Vec<String> = property_reads(&code())
        .into_iter()
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|name| {
            !fields.contains(name)
                && !labels.contains(name)
                && !JS_PROPERTIES.contains(&name.as_str())
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "web/app.js reads {unknown:?}, which no reply it calls has (fields: {fields:?})"
    );
    // The check itself sees what the page reads.
    let reads = property_reads(&code());
    for name in [
        "unix_ms",
        "total_ns",
        "stages_missing",
        "xdp_ns_per_packet",
        "holders",
        "journeys",
    ] {
        assert!(reads.contains(name), "{name} not seen in app.js: {reads:?}");
    }
}

#[test]
fn snake_case_strings_of_the_page_are_fields_or_labels() {
    let fields = reply_fields();
    let labels = labels();
    let unknown: Vec<String> = string_literals(&code())
        .into_iter()
        .filter(|s| {
            s.contains('_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|s| !fields.contains(s) && !labels.contains(s))
        .collect();
    assert!(
        unknown.is_empty(),
        "web/app.js uses {unknown:?}: neither a field nor a label"
    );
    // The rates the flowchart reads by key are among them.
    assert!(string_literals(&code())
        .iter()
        .any(|s| s == "kernel_dropped_pps"));
}

#[test]
fn the_page_calls_only_routes_with_their_query_fields() {
    let routes: BTreeSet<&str> = endpoints::ALL.iter().map(|(p, _)| *p).collect();
    let mut query_fields = BTreeSet::new();
    fields_of(EntriesQuery::sample(), &mut query_fields);
    fields_of(RecentQuery::sample(), &mut query_fields);
    fields_of(
        groundzero_api::capture::CaptureQuery::sample(),
        &mut query_fields,
    );
    let code = code();
    let mut calls = 0;
    for literal in string_literals(&code).into_iter().chain(
        // Template literals: `/v1/...` inside backquotes too.
        code.split('`').skip(1).step_by(2).map(String::from),
    ) {
        if !literal.starts_with("/v1/") {
            continue;
        }
        let path = literal.as_str();
        calls += 1;
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        assert!(
            routes.contains(route),
            "web/app.js calls {route}, not a route"
        );
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or_default();
            assert!(
                query_fields.contains(key),
                "web/app.js queries `{key}` on {route}"
            );
        }
    }
    assert!(calls >= 5, "only {calls} API calls seen in app.js");
}
