//! The groundzero daemon's HTTP API as types: every request body, query and reply the daemon
//! speaks, shared by the server, the client, the CLI's renderers, the lab and (through the
//! contract tests) the journey page.
//!
//! The wire format is the contract, and these types *are* it: field names, string labels
//! (sources, list sides, stages, outcomes, reasons) and even the order of fields are what the
//! daemon has always sent. Every struct declares its fields in alphabetical order because the
//! daemon's replies used to be built as `serde_json::Value`s, whose objects are sorted maps;
//! keeping that order keeps the bytes on the wire identical (see `tests/contract.rs`).
//!
//! Modules, one per area of the API:
//! - [`lists`]: block/allow/unblock/unallow requests and replies, entry listings, `why`;
//! - [`source`]: who holds an entry ([`Source`]) and the kinds of holder ([`SourceKind`]);
//! - [`guard`]: what the lockout guard protects (`GET /v1/guard`);
//! - [`feeds`]: feed status, refresh and imports;
//! - [`crowdsec`]: the CrowdSec bouncer's state;
//! - [`status`]: health, monitor mode and `GET /v1/stats`;
//! - [`counters`]: the XDP counters by reason, as they travel;
//! - [`capture`]: the query of a pcapng capture;
//! - [`journey`]: journey tracing: summary, recent journeys, the live stream, configuration;
//! - [`journey_ab`]: the journey's A/B (XDP attached, then detached) and what drops cost;
//! - [`journey_claims`]: the project's claims held against this host's measurements;
//! - [`errors`]: the JSON body of every error;
//! - [`endpoints`]: every route, with its method;
//! - [`labels`]: the string labels of the kernel's own enums (reasons, verdicts, stages);
//! - [`sample`]: a typical value of every reply, for contract tests and documentation;
//! - [`client`] (feature `client`, on by default): the client for the daemon's Unix socket or
//!   TCP listener, returning these types.

#![warn(missing_docs)]

pub mod capture;
#[cfg(feature = "client")]
pub mod client;
pub mod counters;
pub mod crowdsec;
pub mod endpoints;
pub mod errors;
pub mod feeds;
pub mod guard;
pub mod journey;
pub mod journey_ab;
pub mod journey_claims;
pub mod labels;
pub mod lists;
pub mod sample;
pub mod source;
pub mod status;

pub use errors::ErrorBody;
pub use labels::UnknownLabel;
pub use source::{Source, SourceError, SourceKind};

/// A wire value as JSON text. Wire types always serialize (their map keys are strings and
/// none has a fallible `Serialize`), so this has no error to return.
pub fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("wire types serialize: string keys, no fallible impls")
}

/// The kernel's vocabulary, re-exported: the API's labels for these come from their `label()`.
pub use groundzero_common::{journey::Stage, Action, Reason};
