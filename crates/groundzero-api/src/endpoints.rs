//! Every route of the API, with its method and the types it takes and gives. The server's
//! router, the client and the contract tests name routes through these constants.

/// `GET`: [`HealthReply`](crate::status::HealthReply).
pub const HEALTH: &str = "/v1/health";
/// `GET`: [`StatsReply`](crate::status::StatsReply).
pub const STATS: &str = "/v1/stats";
/// `GET` with [`EntriesQuery`](crate::lists::EntriesQuery):
/// [`EntriesReply`](crate::lists::EntriesReply).
pub const ENTRIES: &str = "/v1/entries";
/// `POST` [`AddRequest`](crate::lists::AddRequest): [`AddReply`](crate::lists::AddReply).
pub const BLOCK: &str = "/v1/block";
/// `POST` [`RemoveRequest`](crate::lists::RemoveRequest):
/// [`RemoveReply`](crate::lists::RemoveReply).
pub const UNBLOCK: &str = "/v1/unblock";
/// `POST` [`AddRequest`](crate::lists::AddRequest): [`AddReply`](crate::lists::AddReply).
pub const ALLOW: &str = "/v1/allow";
/// `POST` [`RemoveRequest`](crate::lists::RemoveRequest):
/// [`RemoveReply`](crate::lists::RemoveReply).
pub const UNALLOW: &str = "/v1/unallow";
/// `GET`, the route pattern: [`WhyReply`](crate::lists::WhyReply). See [`why`].
pub const WHY: &str = "/v1/why/{address}";
/// `GET`: [`GuardReply`](crate::guard::GuardReply).
pub const GUARD: &str = "/v1/guard";
/// `PUT` [`MonitorRequest`](crate::status::MonitorRequest):
/// [`MonitorReply`](crate::status::MonitorReply).
pub const MONITOR: &str = "/v1/monitor";
/// `POST` [`ImportRequest`](crate::feeds::ImportRequest):
/// [`ImportReply`](crate::feeds::ImportReply).
pub const IMPORT: &str = "/v1/import";
/// `GET`: [`FeedsReply`](crate::feeds::FeedsReply).
pub const FEEDS: &str = "/v1/feeds";
/// `GET`: [`CrowdsecReply`](crate::crowdsec::CrowdsecReply).
pub const CROWDSEC: &str = "/v1/crowdsec";
/// `POST`, the route pattern: [`RefreshReply`](crate::feeds::RefreshReply). See
/// [`feed_refresh`].
pub const FEED_REFRESH: &str = "/v1/feeds/{name}/refresh";
/// `GET`: [`JourneySummary`](crate::journey::JourneySummary); `PUT`
/// [`TracingRequest`](crate::journey::TracingRequest):
/// [`TracingReply`](crate::journey::TracingReply).
pub const JOURNEY: &str = "/v1/journey";
/// `GET` with [`RecentQuery`](crate::journey::RecentQuery):
/// [`RecentReply`](crate::journey::RecentReply).
pub const JOURNEY_RECENT: &str = "/v1/journey/recent";
/// `GET`: a `text/event-stream` of [`EventKind`](crate::journey::EventKind)s.
pub const JOURNEY_EVENTS: &str = "/v1/journey/events";
/// `GET`: [`HistoryReply`](crate::journey::HistoryReply).
pub const JOURNEY_HISTORY: &str = "/v1/journey/history";
/// `GET`: [`AbReply`](crate::journey_ab::AbReply); `POST`
/// [`AbRequest`](crate::journey_ab::AbRequest) runs one (lab interfaces only):
/// [`AbReport`](crate::journey_ab::AbReport).
pub const JOURNEY_AB: &str = "/v1/journey/ab";
/// `GET`: [`ClaimsReply`](crate::journey_claims::ClaimsReply).
pub const JOURNEY_CLAIMS: &str = "/v1/journey/claims";

/// `GET` with [`CaptureQuery`](crate::capture::CaptureQuery): a pcapng stream
/// ([`PCAPNG_CONTENT_TYPE`](crate::capture::PCAPNG_CONTENT_TYPE)).
pub const CAPTURE: &str = "/v1/capture";

/// The path of `GET /v1/why/{address}` for `address` (an address needs no encoding).
pub fn why(address: impl std::fmt::Display) -> String {
    format!("/v1/why/{address}")
}

/// The path of `POST /v1/feeds/{name}/refresh` for `name`.
pub fn feed_refresh(name: &str) -> String {
    format!("/v1/feeds/{name}/refresh")
}

/// Every route with its methods: what the router serves.
pub const ALL: &[(&str, &[&str])] = &[
    (HEALTH, &["GET"]),
    (STATS, &["GET"]),
    (ENTRIES, &["GET"]),
    (BLOCK, &["POST"]),
    (UNBLOCK, &["POST"]),
    (ALLOW, &["POST"]),
    (UNALLOW, &["POST"]),
    (WHY, &["GET"]),
    (GUARD, &["GET"]),
    (MONITOR, &["PUT"]),
    (IMPORT, &["POST"]),
    (FEEDS, &["GET"]),
    (CROWDSEC, &["GET"]),
    (JOURNEY, &["GET", "PUT"]),
    (JOURNEY_RECENT, &["GET"]),
    (JOURNEY_EVENTS, &["GET"]),
    (JOURNEY_HISTORY, &["GET"]),
    (JOURNEY_AB, &["GET", "POST"]),
    (JOURNEY_CLAIMS, &["GET"]),
    (FEED_REFRESH, &["POST"]),
    (CAPTURE, &["GET"]),
];
