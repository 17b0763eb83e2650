//! Subcommands that talk to a running daemon through its API.
use std::path::PathBuf;

use anyhow::{Context, Result};
use groundzero::text::{for_terminal, for_terminal_lines};
use groundzero_api::{
    client::{Client, ClientError, Endpoint},
    crowdsec::{CrowdsecReply, CrowdsecSummary},
    feeds::{FeedFormat, FeedStatus, FeedsReply, ImportReply, ImportRequest},
    guard::GuardReply,
    journey::{JourneySummary, RecentQuery, RecentReply, TracingRequest},
    journey_ab::{AbReport, AbRequest},
    journey_claims::ClaimsReply,
    lists::{
        AddReply, AddRequest, EntriesQuery, EntriesReply, EntryStatus, Holder, RemoveReply,
        RemoveRequest, Side, WhyReply,
    },
    status::{MonitorReply, StatsReply},
};
use serde::Serialize;

/// Where to find the daemon (shared by every client subcommand).
#[derive(clap::Args, Clone)]
pub struct Target {
    /// The daemon's Unix socket [default: /run/groundzero/api.sock]; for `run`, overrides api.socket.
    #[arg(long, global = true, env = "GROUNDZERO_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Use the TCP API at HOST:PORT instead of the socket (needs --token-file).
    #[arg(long, global = true, env = "GROUNDZERO_API")]
    api: Option<String>,
    /// File with the bearer token for --api.
    #[arg(long, global = true, env = "GROUNDZERO_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

impl Target {
    pub fn socket_or_default(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| DEFAULT_SOCKET.into())
    }
}

/// An answer, ready to print: the API's JSON (`--json`) and the text a person reads. Every
/// string in an answer came from the daemon, and through it from API callers and feed files:
/// renderers print them through [`for_terminal`] (or [`for_terminal_lines`]), never raw, so a
/// stored reason cannot drive the terminal.
struct Answer {
    json: String,
    text: String,
}

impl Answer {
    /// `reply` as JSON, and as `render` writes it.
    fn of<T: Serialize>(reply: &T, render: impl FnOnce(&T) -> String) -> Result<Answer> {
        Ok(Answer {
            json: serde_json::to_string_pretty(reply).context("writing the answer as JSON")?,
            text: render(reply),
        })
    }
}

pub const DEFAULT_SOCKET: &str = "/run/groundzero/api.sock";

#[derive(clap::Subcommand)]
pub enum Remote {
    /// Block addresses or prefixes.
    Block(AddArgs),
    /// Remove blocks.
    Unblock(RemoveArgs),
    /// Allow addresses or prefixes (the allowlist wins over every block).
    Allow(AddArgs),
    /// Remove allowlist entries.
    Unallow(RemoveArgs),
    /// List entries with their sources, reasons, expiry and hits.
    List {
        /// Only the allowlist.
        #[arg(long, conflicts_with = "block")]
        allow: bool,
        /// Only the blocklist.
        #[arg(long)]
        block: bool,
        /// Only entries held by this source (api, manual, feed, feed:NAME, auto-ban, app:NAME).
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Counters, attachments, list sizes.
    Stats,
    /// What the lockout guard protects right now (config, allowlist, management addresses)
    /// and how many blocks it refused.
    Guard,
    /// Explain the verdict packets from ADDRESS get right now.
    Why { address: String },
    /// Load a list file as a named set (source feed:NAME); importing the same name again
    /// replaces the set atomically.
    Import {
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// plain, spamhaus or firehol.
        #[arg(long, default_value = "plain")]
        format: String,
        /// Override the lockout guard.
        #[arg(long)]
        force: bool,
    },
    /// Monitor (dry-run) mode on or off.
    Monitor {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Each stage of a packet's journey, measured on this host: rates, per-stage p50/p99,
    /// outcomes and recent sampled journeys.
    Journey {
        /// Refresh every second until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Print the measured flowchart and timeline as Mermaid (for docs and reports).
        #[arg(long, conflicts_with = "watch")]
        mermaid: bool,
        /// Recent journeys to show.
        #[arg(long, default_value_t = 10)]
        recent: usize,
        /// Run the A/B in the lab: the same probes with the XDP program attached, then
        /// detached; per-stage p50/p99, CPU per packet, and what a blocked packet costs. Lab
        /// interfaces only (a daemon protecting a real interface refuses).
        #[arg(long, conflicts_with_all = ["watch", "mermaid"])]
        compare: bool,
        /// UDP probes per run of --compare (1 ms apart).
        #[arg(long, requires = "compare")]
        probes: Option<u32>,
        /// Turn tracing on (optionally with --sample-every / --filter) before showing.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Turn tracing off.
        #[arg(long)]
        disable: bool,
        /// Sample one packet in N (with --enable).
        #[arg(long, requires = "enable")]
        sample_every: Option<u32>,
        /// Which packets to sample: tcp, udp, icmp, port N, src PREFIX, any (with --enable).
        #[arg(long, requires = "enable")]
        filter: Option<String>,
    },
    /// Feed status; --refresh NAME refreshes one now.
    Feeds {
        #[arg(long)]
        refresh: Option<String>,
    },
    /// The CrowdSec bouncer (`[crowdsec]`): last pulls, errors, decisions by origin and scope.
    Crowdsec,
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// Addresses or prefixes.
    #[arg(required_unless_present = "file")]
    entries: Vec<String>,
    /// Also read entries from a list file.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    reason: Option<String>,
    /// Time to live, e.g. 90s, 1h, 7d.
    #[arg(long)]
    ttl: Option<String>,
    /// Override the lockout guard (protected prefixes, allowlist, management addresses).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    #[arg(required = true)]
    entries: Vec<String>,
    /// Only remove this source's hold.
    #[arg(long)]
    source: Option<String>,
}

/// Where `target` says the daemon is (with the token read for TCP).
pub fn endpoint(target: &Target) -> Result<Endpoint> {
    Ok(match (&target.api, &target.token_file) {
        (Some(address), Some(file)) => Endpoint::Tcp {
            address: address
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            token: std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim()
                .to_string(),
        },
        (Some(_), None) => anyhow::bail!("--api needs --token-file"),
        (None, _) => Endpoint::Unix(target.socket_or_default()),
    })
}

pub fn run(target: Target, command: Remote) -> Result<()> {
    let client = Client::new(endpoint(&target)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The daemon's error messages echo what callers and feeds sent: escape them too.
    let wait = |e: ClientError| anyhow::anyhow!(for_terminal_lines(&e.to_string()));
    macro_rules! call {
        ($call:expr) => {
            runtime.block_on($call).map_err(wait)?
        };
    }
    let answer = match command {
        Remote::Block(a) => Answer::of(&call!(client.add(Side::Block, &add_request(&a)?)), added)?,
        Remote::Allow(a) => Answer::of(&call!(client.add(Side::Allow, &add_request(&a)?)), added)?,
        Remote::Unblock(r) => Answer::of(
            &call!(client.remove(Side::Block, &remove_request(&r))),
            removed,
        )?,
        Remote::Unallow(r) => Answer::of(
            &call!(client.remove(Side::Allow, &remove_request(&r))),
            removed,
        )?,
        Remote::List {
            allow,
            block,
            source,
            limit,
        } => {
            let query = EntriesQuery {
                list: if allow {
                    Some(Side::Allow)
                } else if block {
                    Some(Side::Block)
                } else {
                    None
                },
                source,
                limit,
            };
            Answer::of(&call!(client.entries(&query)), list)?
        }
        Remote::Stats => Answer::of(&call!(client.stats()), stats)?,
        Remote::Guard => Answer::of(&call!(client.guard()), guard)?,
        Remote::Journey {
            watch,
            mermaid,
            recent,
            compare,
            probes,
            enable,
            disable,
            sample_every,
            filter,
        } => {
            if enable || disable {
                let request = TracingRequest {
                    enabled: enable,
                    sample_every,
                    filter,
                };
                call!(client.configure_journey(&request));
            }
            if compare {
                let request = AbRequest {
                    probes,
                    flood_packets: None,
                };
                let report: AbReport = call!(client.request(
                    hyper::Method::POST,
                    groundzero_api::endpoints::JOURNEY_AB,
                    Some(&request)
                ));
                Answer::of(&report, crate::journey_compare::text)?
            } else {
                let query = RecentQuery {
                    limit: recent,
                    outcome: None,
                };
                // The claims are extra: a daemon from before them answers 404, and the
                // journey is shown without them; the Mermaid export never needs them.
                let fetch = || -> Result<JourneyAnswer> {
                    Ok(JourneyAnswer {
                        claims: if mermaid {
                            None
                        } else {
                            unless_missing(runtime.block_on(client.request::<(), ClaimsReply>(
                                hyper::Method::GET,
                                groundzero_api::endpoints::JOURNEY_CLAIMS,
                                None,
                            )))
                            .map_err(wait)?
                        },
                        recent: call!(client.journey_recent(&query)),
                        summary: call!(client.journey()),
                    })
                };
                if watch {
                    loop {
                        let v = fetch()?;
                        // Clear the screen and draw again: a live view without a TUI library.
                        print!("\x1b[2J\x1b[H");
                        if target.json {
                            println!("{}", groundzero_api::to_json(&v));
                        } else {
                            print!("{}", crate::journey_view::text(&v.summary, &v.recent));
                            print!("{}", claims_text(v.claims.as_ref()));
                        }
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    }
                }
                let v = fetch()?;
                if mermaid {
                    Answer::of(&v, |v| crate::journey_view::mermaid(&v.summary))?
                } else {
                    Answer::of(&v, |v| {
                        crate::journey_view::text(&v.summary, &v.recent)
                            + &claims_text(v.claims.as_ref())
                    })?
                }
            }
        }
        Remote::Why { address } => Answer::of(&call!(client.why(&address)), why)?,
        Remote::Import {
            file,
            name,
            format,
            force,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let format: FeedFormat = format
                .parse()
                .with_context(|| format!("--format {}", for_terminal(&format)))?;
            let request = ImportRequest {
                name,
                format,
                text,
                force,
            };
            Answer::of(&call!(client.import(&request)), imported)?
        }
        Remote::Monitor { state } => {
            Answer::of(&call!(client.set_monitor(state == "on")), monitor)?
        }
        Remote::Feeds { refresh } => match refresh {
            Some(name) => Answer::of(&call!(client.refresh_feed(&name)), |v| {
                v.feed.as_ref().map(feed_line).unwrap_or_default()
            })?,
            None => Answer::of(&call!(client.feeds()), feeds)?,
        },
        Remote::Crowdsec => Answer::of(&call!(client.crowdsec()), crowdsec)?,
    };
    if target.json {
        println!("{}", answer.json);
    } else {
        println!("{}", answer.text);
    }
    Ok(())
}

/// What `groundzero journey` shows: the summary and the recent journeys.
#[derive(Serialize)]
struct JourneyAnswer {
    /// `None`: not asked (`--mermaid`), or the daemon predates `/v1/journey/claims`.
    claims: Option<ClaimsReply>,
    recent: RecentReply,
    summary: JourneySummary,
}

/// `None` for an endpoint this daemon does not have (404), the answer otherwise.
fn unless_missing<T>(r: Result<T, ClientError>) -> Result<Option<T>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ClientError::Api { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn claims_text(c: Option<&ClaimsReply>) -> String {
    c.map_or_else(
        || "\nclaims: this daemon does not serve them (GET /v1/journey/claims: 404)\n".into(),
        crate::journey_compare::claims_text,
    )
}

/// Seconds from now until the Unix time `t`, for people (`1h 2m`).
fn time_left(t: u64) -> String {
    let left = t.saturating_sub(groundzero_daemon::registry::now_unix());
    humantime::format_duration(std::time::Duration::from_secs(left)).to_string()
}

fn imported(v: &ImportReply) -> String {
    format!(
        "imported {} entries as feed:{} (+{} -{}) in {:.2}s",
        v.entries,
        for_terminal(&v.name),
        v.added,
        v.removed,
        v.seconds
    )
}

fn add_request(a: &AddArgs) -> Result<AddRequest> {
    let mut entries = a.entries.clone();
    if let Some(file) = &a.file {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        entries.extend(
            groundzero::parse_list(&text, &file.display().to_string())?
                .iter()
                .map(|n| n.to_string()),
        );
    }
    Ok(AddRequest {
        entries,
        reason: a.reason.clone(),
        ttl: a.ttl.clone(),
        force: a.force,
        ..AddRequest::default()
    })
}

fn remove_request(r: &RemoveArgs) -> RemoveRequest {
    RemoveRequest {
        entries: r.entries.clone(),
        source: r.source.clone(),
    }
}

fn added(v: &AddReply) -> String {
    let expires = v
        .expires
        .map(|t| format!(", expiring in {}", time_left(t)))
        .unwrap_or_default();
    let n = v.applied;
    let mut text = format!(
        "{n} {} applied, {} new in the map{expires}",
        if n == 1 { "entry" } else { "entries" },
        v.added
    );
    // Entries the lockout guard refused: the rest of the request was applied.
    for r in &v.results {
        if let EntryStatus::Refused { why } = &r.status {
            text.push_str(&format!("\n  refused {}: {}", r.entry, for_terminal(why)));
        }
    }
    text
}

/// Items joined with `, `, or `(none)`.
fn joined<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(|i| for_terminal(&i.to_string()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn guard(v: &GuardReply) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "protected by the config: {}\n",
        joined(&v.configured)
    ));
    out.push_str(&format!(
        "allowlisted entries (always protected): {}\n",
        v.allowlist_entries
    ));
    out.push_str(&format!(
        "prefixes wider than /{} (IPv4) or /{} (IPv6): refused unless forced\n",
        v.widest_v4, v.widest_v6
    ));
    if v.protect_management {
        match &v.error {
            Some(e) => out.push_str(&format!(
                "management addresses: UNREADABLE ({}): every block is refused\n",
                for_terminal(e)
            )),
            None => out.push_str(&format!(
                "management addresses (read {:.0} s ago, ssh port {}):\n",
                v.read_seconds_ago.unwrap_or(f64::NAN),
                v.ssh_port
            )),
        }
        for m in &v.management {
            out.push_str(&format!(
                "  {:<40} {}\n",
                m.entry.to_string(),
                for_terminal(&m.why)
            ));
        }
    } else {
        out.push_str("management addresses: not protected (guard.protect_management = false)\n");
    }
    out.push_str(&format!(
        "exempt from the XDP rate limit: {}\n",
        joined(&v.rate_exempt)
    ));
    let refusals: Vec<String> = v.refusals.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push_str(&format!(
        "blocks refused since start: {}",
        if refusals.is_empty() {
            "none".to_string()
        } else {
            refusals.join(", ")
        }
    ));
    out
}

fn removed(v: &RemoveReply) -> String {
    let names = |nets: &[ipnet::IpNet]| {
        nets.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "removed: {}",
        if v.removed.is_empty() {
            "nothing".into()
        } else {
            names(&v.removed)
        }
    );
    if !v.still_held.is_empty() {
        out.push_str(&format!(
            "\nstill listed by another source (see `groundzero list`): {}",
            names(&v.still_held)
        ));
    }
    out
}

fn holders(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(|h| {
            let mut s = for_terminal(&h.source.to_string()).into_owned();
            if let Some(r) = &h.reason {
                s.push_str(&format!(" \"{}\"", for_terminal(r)));
            }
            if let Some(t) = h.expires {
                s.push_str(&format!(" ttl {}", time_left(t)));
            }
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn list(v: &EntriesReply) -> String {
    let mut out = format!(
        "{:<6} {:<7} {:<40} {:>10}  {}\n",
        "list", "kind", "entry", "hits", "held by"
    );
    for e in &v.entries {
        out.push_str(&format!(
            "{:<6} {:<7} {:<40} {:>10}  {}\n",
            e.list.label(),
            e.kind.label(),
            e.entry.to_string(),
            e.hits,
            holders(&e.holders)
        ));
    }
    out.trim_end().to_string()
}

fn why(v: &WhyReply) -> String {
    let mut out = format!(
        "{}: {} ({}){}",
        v.address,
        v.verdict.label().to_uppercase(),
        v.reason.label(),
        if v.monitor {
            ", monitor mode is on"
        } else {
            ""
        }
    );
    match &v.matched {
        Some(m) => out.push_str(&format!(
            "\n  matched {} {} ({}), {} hits{}\n  held by: {}",
            m.list.label(),
            m.entry,
            m.kind.label(),
            m.hits,
            m.last_hit_seconds_ago
                .map(|s| format!(", last {s:.0}s ago"))
                .unwrap_or_default(),
            holders(&m.holders)
        )),
        None => out.push_str("\n  no list entry covers this address"),
    }
    for other in &v.also_matching {
        out.push_str(&format!(
            "\n  also covered by block {} (did not decide)",
            other.entry
        ));
    }
    out
}

fn monitor(v: &MonitorReply) -> String {
    format!(
        "monitor mode {}",
        if v.monitor {
            "on: nothing is dropped"
        } else {
            "off: blocks are enforced"
        }
    )
}

fn stats(v: &StatsReply) -> String {
    let mut out = format!(
        "monitor: {}   uptime: {}s   failed inserts: {}\n",
        v.monitor, v.uptime_seconds, v.failed_inserts
    );
    for i in &v.interfaces {
        out.push_str(&format!(
            "attached: {} (ifindex {}, {} XDP{})\n",
            for_terminal(&i.interface),
            i.ifindex,
            i.mode,
            if i.adopted { ", adopted" } else { "" }
        ));
    }
    out.push_str(&format!(
        "{:<14} {:>14} {:>16}\n",
        "reason", "packets", "bytes"
    ));
    for (reason, n) in v.counters.by_label() {
        out.push_str(&format!(
            "{:<14} {:>14} {:>16}\n",
            reason.label(),
            n.packets,
            n.bytes
        ));
    }
    for e in &v.entries {
        out.push_str(&format!(
            "{} {} {}: {} entries\n",
            e.list, e.source, e.family, e.entries
        ));
    }
    if !v.drops_by_origin.is_empty() {
        out.push_str("drops by origin:\n");
        for o in &v.drops_by_origin {
            out.push_str(&format!(
                "  {:<40} {:>14}\n",
                for_terminal(&o.origin),
                o.packets
            ));
        }
    }
    if let Some(c) = &v.crowdsec {
        out.push_str(&crowdsec_line(c));
    }
    out.trim_end().to_string()
}

/// The CrowdSec bouncer and watcher in one line (two with errors), as `feeds` and `stats`
/// show them.
fn crowdsec_line(c: &CrowdsecSummary) -> String {
    let now = groundzero_daemon::registry::now_unix();
    let mut out = format!("{:<20} ", "crowdsec");
    if c.pull {
        out.push_str(&format!(
            "{:>8} decisions  last pull {}  {} failed pulls",
            c.decisions,
            c.last_success
                .map(|t| format!("{}s ago", now.saturating_sub(t)))
                .unwrap_or_else(|| "never".into()),
            c.pull_errors
        ));
    } else {
        out.push_str("no pull");
    }
    if let Some(pushed) = c.pushed_alerts {
        out.push_str(&format!(
            "  pushed {pushed}, {} queued, {} failed pushes",
            c.queued.unwrap_or(0),
            c.push_errors.unwrap_or(0)
        ));
    }
    out.push('\n');
    if let Some(e) = &c.error {
        out.push_str(&format!(
            "      pull ERROR ({} in a row; the set in force stays): {}\n",
            c.consecutive_errors,
            for_terminal(e)
        ));
    }
    if let Some(e) = &c.push_error {
        out.push_str(&format!(
            "      push ERROR (bans stay queued): {}\n",
            for_terminal(e)
        ));
    }
    out
}

fn feeds(v: &FeedsReply) -> String {
    let mut lines: Vec<String> = v.feeds.iter().map(feed_line).collect();
    if let Some(c) = &v.crowdsec {
        lines.push(crowdsec_line(c).trim_end().to_string());
    }
    if lines.is_empty() {
        "no feeds".into()
    } else {
        lines.join("\n")
    }
}

fn crowdsec(v: &CrowdsecReply) -> String {
    if !v.enabled && v.push.is_none() {
        return "crowdsec: not configured ([crowdsec] in the daemon's config)".into();
    }
    let now = groundzero_daemon::registry::now_unix();
    let ago = |t: Option<u64>| {
        t.map(|t| format!("{}s ago", now.saturating_sub(t)))
            .unwrap_or_else(|| "never".into())
    };
    let push = v.push.as_ref().map(|p| {
        let mut out = format!(
            "push to {} as {} ({}): {} alerts pushed, last {}, {} queued (max {}), {} dropped, {} failed\n",
            for_terminal(&p.lapi_url),
            for_terminal(&p.machine_id),
            for_terminal(&p.sources.join(", ")),
            p.pushed_alerts,
            ago(p.last_push),
            p.queued,
            p.queue_capacity,
            p.dropped,
            p.push_errors
        );
        if let Some(e) = &p.error {
            out.push_str(&format!(
                "PUSH ERROR ({} in a row; bans stay queued): {}\n",
                p.consecutive_errors,
                for_terminal(e)
            ));
        }
        out
    });
    if !v.enabled {
        let push = push.unwrap_or_default();
        return format!("crowdsec: no pull (no api_key_file)\n{push}")
            .trim_end()
            .to_string();
    }
    let mut out = format!(
        "crowdsec {}: {} live decisions, last success {}, {} pulls, {} failed, {} refused by the guard\n",
        for_terminal(&v.lapi_url),
        v.decisions,
        ago(v.last_success),
        v.pulls,
        v.pull_errors,
        v.guard_refusals
    );
    for (source, scopes) in &v.entries {
        for (scope, n) in scopes {
            out.push_str(&format!(
                "  {:<28} {:<6} {n}\n",
                for_terminal(source),
                for_terminal(scope)
            ));
        }
    }
    if let Some(e) = &v.error {
        out.push_str(&format!(
            "ERROR ({} in a row; the set in force stays): {}\n",
            v.consecutive_errors,
            for_terminal(e)
        ));
    }
    if let Some(push) = push {
        out.push_str(&push);
    }
    out.trim_end().to_string()
}

fn feed_line(f: &FeedStatus) -> String {
    format!(
        "{:<20} {:>8} entries  last success {}  {}",
        for_terminal(&f.name),
        f.entries,
        f.last_success
            .map(|t| format!(
                "{}s ago",
                groundzero_daemon::registry::now_unix().saturating_sub(t)
            ))
            .unwrap_or_else(|| "never".into()),
        f.error
            .as_deref()
            // A feed error lists its bad lines, one per line: keep those, escaped, indented.
            .map(|e| format!("ERROR: {}", for_terminal_lines(e).replace('\n', "\n    ")))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use groundzero_api::{
        counters::{CounterView, ReasonCounters},
        lists::{EntryKind, Family},
        sample::Sample,
        status::{InterfaceStats, ListCount, XdpMode},
        Reason, Source, SourceKind,
    };

    use super::*;
    use groundzero_api::{crowdsec::CrowdsecPushReply, lists::EntryView};

    #[test]
    fn a_missing_claims_endpoint_is_no_error_but_others_are() {
        let api = |status| ClientError::Api {
            status,
            message: "x".into(),
        };
        assert_eq!(unless_missing(Ok::<_, ClientError>(1)).unwrap(), Some(1));
        assert_eq!(unless_missing::<u8>(Err(api(404))).unwrap(), None);
        assert!(unless_missing::<u8>(Err(api(500))).is_err());
        assert!(unless_missing::<u8>(Err(api(401))).is_err());
        assert!(claims_text(None).contains("does not serve them"));
    }

    fn entry(net: &str, kind: EntryKind, hits: u64, holders: Vec<Holder>) -> EntryView {
        EntryView {
            entry: net.parse().unwrap(),
            hits,
            holders,
            kind,
            last_hit_seconds_ago: None,
            list: Side::Block,
        }
    }

    #[test]
    fn list_columns_line_up() {
        let v = EntriesReply {
            entries: vec![
                entry("198.18.0.63/32", EntryKind::Exact, 152, vec![]),
                entry("2001:2::/48", EntryKind::Prefix, 0, vec![]),
            ],
        };
        let text = super::list(&v);
        let lines: Vec<&str> = text.lines().collect();
        // The hits column is right-aligned: its last digit sits under the header's last letter.
        let end = lines[0].find("hits").unwrap() + "hits".len();
        assert_eq!(&lines[1][end - 3..end], "152", "{text}");
        assert_eq!(&lines[2][end - 1..end], "0", "{text}");
    }

    const EVIL: &str = "\u{1b}[2J\u{1b}[31mPWNED\u{9b}0m\u{202e}";

    fn assert_clean(text: &str) {
        assert!(
            !text.contains(['\u{1b}', '\u{9b}', '\u{202e}', '\r']),
            "raw control in {text:?}"
        );
    }

    #[test]
    fn list_and_why_escape_reasons_and_sources() {
        // Typed replies leave entries, kinds and labels no room for text; sources and
        // reasons still come from callers.
        let holder = Holder {
            created: 0,
            expires: None,
            reason: Some(EVIL.into()),
            source: Source::parse(&format!("app:{EVIL}")),
        };
        let e = entry("198.18.0.63/32", EntryKind::Exact, 1, vec![holder]);
        let text = super::list(&EntriesReply {
            entries: vec![e.clone()],
        });
        assert_clean(&text);
        assert!(
            text.contains("\"\\u{1b}[2J\\u{1b}[31mPWNED\\u{9b}0m\\u{202e}\""),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");

        let why = super::why(&WhyReply {
            matched: Some(e),
            ..WhyReply::sample()
        });
        assert_clean(&why);
        assert!(why.contains("app:\\u{1b}[2J"), "{why}");
    }

    #[test]
    fn crowdsec_status_is_shown_escaped() {
        let text = super::crowdsec(&CrowdsecReply {
            lapi_url: EVIL.into(),
            error: Some(EVIL.into()),
            entries: [(EVIL.to_string(), [("ip".to_string(), 2)].into())].into(),
            ..CrowdsecReply::sample()
        });
        assert_clean(&text);
        assert!(text.contains("3 live decisions"), "{text}");
        assert!(text.contains("ERROR (1 in a row"), "{text}");
        assert!(text.contains("7 alerts pushed"), "{text}");
        let push_only = super::crowdsec(&CrowdsecReply {
            enabled: false,
            push: Some(CrowdsecPushReply {
                error: Some(EVIL.into()),
                machine_id: EVIL.into(),
                ..CrowdsecPushReply::default()
            }),
            ..CrowdsecReply::default()
        });
        assert_clean(&push_only);
        assert!(push_only.starts_with("crowdsec: no pull"), "{push_only}");
        assert!(push_only.contains("PUSH ERROR"), "{push_only}");
        let summary = CrowdsecSummary::from(&CrowdsecReply {
            error: Some(EVIL.into()),
            ..CrowdsecReply::sample()
        });
        let feeds = super::feeds(&FeedsReply {
            crowdsec: Some(summary.clone()),
            feeds: vec![],
        });
        assert_clean(&feeds);
        assert!(
            feeds.starts_with("crowdsec") && feeds.contains("3 decisions"),
            "{feeds}"
        );
        assert!(feeds.contains("pushed 7, 0 queued"), "{feeds}");
        let stats = super::stats(&StatsReply {
            crowdsec: Some(summary),
            ..StatsReply::sample()
        });
        assert!(stats.contains("pull ERROR (1 in a row"), "{stats}");
        assert_eq!(
            super::crowdsec(&CrowdsecReply::default()),
            "crowdsec: not configured ([crowdsec] in the daemon's config)"
        );
    }

    #[test]
    fn feeds_stats_guard_and_import_escape_daemon_strings() {
        let error = format!("feed: 1 bad line(s), nothing applied\n  feed:1: `{EVIL}`\r");
        let line = super::feed_line(&FeedStatus {
            name: EVIL.into(),
            error: Some(error),
            last_success: None,
            ..FeedStatus::sample()
        });
        assert_clean(&line);
        // The error's own line structure is kept, indented under the feed.
        assert_eq!(line.lines().count(), 2, "{line}");
        assert!(line.contains("\n      feed:1: `\\u{1b}[2J"), "{line}");

        let mut counters = ReasonCounters::default();
        counters.set(
            Reason::NoMatch,
            CounterView {
                bytes: 2,
                packets: 1,
            },
        );
        let stats = super::stats(&StatsReply {
            interfaces: vec![InterfaceStats {
                adopted: false,
                counters,
                ifindex: 3,
                interface: EVIL.into(),
                mode: XdpMode::Generic,
            }],
            counters,
            entries: vec![ListCount {
                entries: 1,
                family: Family::V4,
                list: Side::Block,
                source: SourceKind::Api,
            }],
            ..StatsReply::sample()
        });
        assert_clean(&stats);
        assert!(stats.contains("block api ipv4: 1 entries"), "{stats}");
        assert!(stats.contains("no_match"), "{stats}");

        let guard = super::guard(&GuardReply {
            error: Some(EVIL.into()),
            ..GuardReply::sample()
        });
        assert_clean(&guard);
        assert!(
            guard.contains("blocks refused since start: api 2, auto-ban 14, feed 1"),
            "{guard}"
        );

        let imported = super::imported(&ImportReply {
            name: EVIL.into(),
            entries: 1,
            ..ImportReply::default()
        });
        assert_clean(&imported);
        assert!(!imported.contains("normalised"), "{imported}");
    }

    #[test]
    fn added_lists_each_refusal() {
        let text = super::added(&AddReply::sample());
        assert!(
            text.starts_with("2 entries applied, 1 new in the map, expiring in"),
            "{text}"
        );
        assert!(
            text.contains("\n  refused 2001:db8::/32: blocking 2001:db8::/32"),
            "{text}"
        );
    }
}
