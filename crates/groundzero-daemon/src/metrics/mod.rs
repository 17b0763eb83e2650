//! Prometheus metrics: a plain-data [`MetricsSnapshot`], its OpenMetrics text ([`encode`]) and
//! an HTTP `/metrics` endpoint ([`router`], [`serve`]).
//!
//! The exporter does not own the [`Shield`]: whoever does (the `attach` command, the daemon)
//! hands [`router`] a [`SnapshotProvider`], a function that reads the BPF maps at scrape time
//! and returns a snapshot. [`MetricsSnapshot::from_shield`] fills everything a [`Shield`] knows;
//! an owner with more to say (list sources, feeds) adds it to the snapshot before returning it.
//!
//! Every metric is named `groundzero_*`, in base units (seconds, bytes), counters end in
//! `_total`, and every label comes from a bounded set: interface names, reasons, list sides,
//! address families, list sources and feed names from the configuration, and at most
//! [`MAX_TOP_N`] blocked entries.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `groundzero_build_info` | info (gauge 1) | `version` |
//! | `groundzero_packets_total` | counter | `interface`, `verdict`, `reason` |
//! | `groundzero_bytes_total` | counter | `interface`, `verdict`, `reason` |
//! | `groundzero_program_packets_total` | counter | `verdict`, `reason` (every interface together) |
//! | `groundzero_program_bytes_total` | counter | `verdict`, `reason` |
//! | `groundzero_interface_attached` | gauge 0/1 | `interface`, `mode` (`native`, `generic`, `none`) |
//! | `groundzero_monitor_mode` | gauge 0/1 | |
//! | `groundzero_list_entries` | gauge | `list` (`block`, `allow`), `family`, `source` |
//! | `groundzero_map_entries` | gauge | `map` (`block_exact`, `block_cidr`, `allow`), `family` |
//! | `groundzero_map_max_entries` | gauge | `map`, `family` |
//! | `groundzero_failed_inserts_total` | counter | |
//! | `groundzero_xdp_run_time_seconds_total` | counter | (kernel BPF run-time stats) |
//! | `groundzero_xdp_runs_total` | counter | |
//! | `groundzero_feed_refresh_success` | gauge 0/1 | `feed` |
//! | `groundzero_feed_last_success_timestamp_seconds` | gauge | `feed` (0: never) |
//! | `groundzero_feed_refresh_interval_seconds` | gauge | `feed` (feeds on a schedule) |
//! | `groundzero_feed_entries` | gauge | `feed` |
//! | `groundzero_feed_refusals_total` | counter | `feed` (refreshes refused: bad line, guard, too large a change) |
//! | `groundzero_crowdsec_up` | gauge 0/1 | (1: the last pull of the CrowdSec LAPI succeeded) |
//! | `groundzero_crowdsec_decisions` | gauge | `source` (`crowdsec:<origin>`), `scope` (`ip`, `range`) |
//! | `groundzero_crowdsec_pulls_total` | counter | (successful pulls) |
//! | `groundzero_crowdsec_pull_errors_total` | counter | |
//! | `groundzero_crowdsec_last_success_timestamp_seconds` | gauge | (0: never) |
//! | `groundzero_crowdsec_pull_interval_seconds` | gauge | |
//! | `groundzero_guard_refusals_total` | counter | `source` (`api`, `feed`, `auto-ban`, `app`, ...: blocks the lockout guard refused) |
//! | `groundzero_journal_damaged_ranges` | gauge | (damaged journal ranges moved aside at start-up) |
//! | `groundzero_top_blocked_hits_total` | counter | `entry` (the top N blocked entries by hits) |
//! | `groundzero_origin_dropped_packets` | gauge | `origin` (`feed:<name>`, `auto-ban`, `app:<name>`, `api`, ...: the hits of the entries it holds) |
//!
//! Seconds per packet of the XDP program: `rate(groundzero_xdp_run_time_seconds_total[1m]) /
//! rate(groundzero_xdp_runs_total[1m])`.//!
//! The parts: [`snapshot`] (the data and what a [`Shield`](groundzero::Shield) fills in),
//! [`encode`] (the text format), [`scrape`] (the endpoint) and the daemon's own assembly.

mod daemon;
pub mod encode;
pub mod scrape;
pub mod snapshot;

pub(crate) use daemon::daemon_snapshot;
pub use encode::{encode, CONTENT_TYPE};
pub use scrape::{router, router_with_cache, serve, SnapshotProvider, DEFAULT_CACHE_FOR};
pub use snapshot::{
    top_blocked, BlockedSource, CrowdsecMetrics, Family, FeedMetrics, InterfaceSnapshot,
    JourneyHistograms, ListCount, MapFill, MetricsSnapshot, Side, DEFAULT_TOP_N, MAX_TOP_N,
};

#[cfg(test)]
mod tests;
