//! The daemon's TOML configuration. Every field has a documented default; unknown keys are an
//! error (a typo must not silently do nothing); semantic errors name file, line and field.
//!
//! See `deploy/groundzero.toml` for an annotated example.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use groundzero::{parse_entry, pins::DEFAULT_PIN_DIR, ShieldOptions};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// toml's own message already says "line N, column M" and shows the line.
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}:{line}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        field: String,
        message: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interfaces to protect. Default: none (the API still runs; attach later by config).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `auto` (native, else generic), `native` or `generic`. Default `auto`.
    #[serde(default)]
    pub attach_mode: AttachModeConfig,
    /// Monitor (dry-run) mode at start. Default false.
    #[serde(default)]
    pub monitor: bool,
    /// bpffs directory for pinned maps and links. Default `/sys/fs/bpf/groundzero`.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// Where the journal of entries and feed caches live. Default `/var/lib/groundzero`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub capacity: CapacityConfig,
    #[serde(default)]
    pub guard: GuardConfig,
    #[serde(default)]
    pub journey: JourneyConfig,
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
    /// Blocklist feeds, refreshed on an interval.
    #[serde(default, rename = "feed")]
    pub feeds: Vec<FeedConfig>,
    /// Pull ban decisions from a CrowdSec Local API (groundzero as a bouncer). Default: off.
    #[serde(default)]
    pub crowdsec: Option<CrowdsecConfig>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachModeConfig {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the management API (mode 0600: root only). Default `/run/groundzero/api.sock`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Also serve the API on TCP (e.g. `127.0.0.1:9478`); requires `token_file`. Default: off.
    #[serde(default)]
    pub tcp_listen: Option<Spanned<String>>,
    /// File holding the bearer token TCP clients must send. Default: none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes. Default 64 MiB (a 1M-entry import fits).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Every listener (Unix socket, TCP, metrics): time a client has to send a request's head,
    /// after connecting or between requests on a kept-alive connection. Default 10s.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Spanned<String>,
    /// Every listener: time from a request's head to its answer's head, the body upload
    /// included. Default 60s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Spanned<String>,
    /// Every listener: connections open at once; more wait to be accepted. Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Prometheus `/metrics` listener (e.g. `127.0.0.1:9477`). Default: off.
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// How long one scrape's result answers later scrapes (reading a million entries takes
    /// about a second). `0s`: every scrape reads anew, still one at a time. Default 1s.
    #[serde(default = "default_metrics_cache_for")]
    pub cache_for: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// Exact blocked addresses per family. Default 1048576.
    #[serde(default = "default_exact")]
    pub exact: u32,
    /// Blocked prefixes per family. Default 262144.
    #[serde(default = "default_cidr")]
    pub cidr: u32,
    /// Allowlist entries per family. Default 16384.
    #[serde(default = "default_allow")]
    pub allow: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Prefixes that can never be blocked without `force`. Default: none.
    #[serde(default)]
    pub protected: Vec<Spanned<String>>,
    /// Also protect this host's own addresses and the peers of established SSH sessions.
    /// Default true.
    #[serde(default = "yes")]
    pub protect_management: bool,
    /// The port whose established peers count as management sessions. Default 22.
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JourneyConfig {
    /// Follow sampled packets from XDP to the application. Default false (then the XDP program
    /// does no tracing work and no observer is attached).
    #[serde(default)]
    pub enabled: bool,
    /// Sample one packet in this many (of those the filter admits). Default 64.
    #[serde(default = "default_sample_every")]
    pub sample_every: Spanned<u32>,
    /// Which packets may be sampled: `tcp`, `udp`, `icmp`, `port N`, `src PREFIX`, or `any`.
    /// Default `any`.
    #[serde(default = "default_filter")]
    pub filter: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Packets per second allowed per source address; 0 turns the rate limit off. Default 0.
    #[serde(default)]
    pub rate: u32,
    /// Packets a source may send at once before the rate applies. Default: 2 × rate.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Prefixes never rate-limited (the allowlist and guard.protected are exempt too).
    #[serde(default)]
    pub exempt: Vec<Spanned<String>>,
    /// How long a source over the limit stays blocked. Default 10m.
    #[serde(default = "default_ban_ttl")]
    pub ban_ttl: Spanned<String>,
    /// IPv4 sources share one bucket per prefix of this length (and are banned as that
    /// prefix). Default 32: every address its own bucket.
    #[serde(default = "default_prefix_v4")]
    pub prefix_v4: u8,
    /// IPv6 sources share one bucket per prefix of this length. Default 64: a host is handed
    /// a whole /64, so a per-address bucket would let it rotate through 2^64 addresses.
    #[serde(default = "default_prefix_v6")]
    pub prefix_v6: u8,
}

fn default_prefix_v4() -> u8 {
    32
}
fn default_prefix_v6() -> u8 {
    64
}

impl Default for JourneyConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty journey section is valid")
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty metrics section is valid")
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        toml::from_str("").expect("the empty ratelimit section is valid")
    }
}

fn default_sample_every() -> Spanned<u32> {
    Spanned::new(0..0, 64)
}
fn default_filter() -> Spanned<String> {
    Spanned::new(0..0, "any".into())
}
fn default_ban_ttl() -> Spanned<String> {
    Spanned::new(0..0, "10m".into())
}
fn default_header_read_timeout() -> Spanned<String> {
    Spanned::new(0..0, "10s".into())
}
fn default_request_timeout() -> Spanned<String> {
    Spanned::new(0..0, "60s".into())
}
fn default_max_connections() -> usize {
    crate::serve::Limits::default().max_connections
}
fn default_metrics_cache_for() -> Spanned<String> {
    Spanned::new(0..0, "1s".into())
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Name, used as the entries' source (`feed:<name>`). Letters, digits, `-`, `_`.
    pub name: Spanned<String>,
    /// `http://` or `https://` URL, or a local file path.
    pub url: Spanned<String>,
    /// `plain` (one address/prefix per line), `spamhaus` (DROP/EDROP: `prefix ; SBL id`) or
    /// `firehol` (netset). Default `plain`.
    #[serde(default)]
    pub format: crate::feeds::FeedFormat,
    /// Refresh interval, e.g. `1h`, `15m`. Default `1h`.
    #[serde(default = "default_refresh")]
    pub refresh: Spanned<String>,
    /// Accept prefixes wider than /8 (IPv4) or /32 (IPv6) from this feed. Default false: such
    /// a line refuses the whole refresh (a typo like `198.51.100.7/0` must never block the
    /// Internet).
    #[serde(default)]
    pub allow_wide: bool,
    /// Refuse a refresh that adds plus removes more than this share of the current set, and
    /// keep the old set (a truncated or hijacked feed must not swap the list wholesale). The
    /// first load of a feed is not limited. Default 0.5.
    #[serde(default = "default_max_change")]
    pub max_change: Spanned<f64>,
}

/// `[crowdsec]`: groundzero as a CrowdSec bouncer (pull, with `api_key_file`) and/or watcher
/// (push, `[crowdsec.push]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecConfig {
    /// The Local API, e.g. `http://127.0.0.1:8080`. Required to pull; the push's default.
    pub lapi_url: Option<Spanned<String>>,
    /// File holding this host's bouncer key (`cscli bouncers add NAME`). One key per host: the
    /// LAPI keeps one pull position per key, so two hosts sharing one steal each other's deltas.
    /// Without it nothing is pulled (a push-only `[crowdsec]`).
    pub api_key_file: Option<PathBuf>,
    /// `[crowdsec.push]`: push the bans made here to the LAPI as alerts.
    pub push: Option<CrowdsecPushConfig>,
    /// Time between pulls. Default `10s`.
    #[serde(default = "default_pull_interval")]
    pub pull_interval: Spanned<String>,
    /// Longest one pull may take before it counts as failed. Default `60s`.
    #[serde(default = "default_pull_timeout")]
    pub timeout: Spanned<String>,
    /// Pull the whole set again (a startup pull) this often: a LAPI can leave a decision
    /// created during a pull out of every delta. Default `10m`.
    #[serde(default = "default_resync_interval")]
    pub resync_interval: Spanned<String>,
    /// Apply only decisions of these origins (`crowdsec`, `cscli`, `CAPI`, `lists`, ...).
    /// Default: all.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Apply only decisions whose scenario contains one of these. Default: all.
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// `ip` (exact map) and/or `range` (prefix map). Default both.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<crate::crowdsec_stream::Scope>,
    /// Accept ranges wider than /8 (IPv4) or /32 (IPv6). Default false: refused by the guard.
    #[serde(default)]
    pub allow_wide: bool,
    /// Refuse a startup pull that adds plus removes more than this share of what crowdsec
    /// decisions hold now, keeping the current set (as `feed.max_change`). Default 0.5.
    #[serde(default = "default_max_change")]
    pub max_change: Spanned<f64>,
}

/// `[crowdsec.push]`: groundzero as a CrowdSec watcher (machine).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrowdsecPushConfig {
    /// The machine registered with `cscli machines add <machine_id> --password ...`.
    pub machine_id: String,
    /// File holding the machine's password.
    pub password_file: PathBuf,
    /// Which bans are pushed: `auto-ban`, `app` (every `app:<name>`), `api`, `manual`.
    /// Default `["auto-ban", "app"]`. `crowdsec:*` entries are never pushed back.
    #[serde(default = "default_push_sources")]
    pub sources: Vec<String>,
    /// Bans made within one interval go out as one `POST /v1/alerts`. Default `2s`.
    #[serde(default = "default_push_interval")]
    pub interval: Spanned<String>,
    /// Default: `[crowdsec].lapi_url`.
    pub lapi_url: Option<Spanned<String>>,
    /// Bans held while the LAPI cannot be reached; beyond, the oldest are dropped (counted).
    /// Default 10000.
    #[serde(default = "default_push_queue")]
    pub queue: usize,
}

fn default_push_sources() -> Vec<String> {
    vec!["auto-ban".into(), "app".into()]
}

fn default_push_interval() -> Spanned<String> {
    Spanned::new(0..0, "2s".to_string())
}

fn default_push_queue() -> usize {
    10_000
}

/// `[crowdsec.push]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPush {
    /// Without a trailing `/`.
    pub lapi_url: String,
    pub machine_id: String,
    pub password_file: PathBuf,
    /// Source kinds pushed (`auto-ban`, `app`, `api`, `manual`).
    pub sources: Vec<String>,
    pub interval: Duration,
    pub queue: usize,
    /// Each request's timeout (`[crowdsec].timeout`).
    pub timeout: Duration,
}

fn default_pull_interval() -> Spanned<String> {
    Spanned::new(0..0, "10s".to_string())
}

fn default_pull_timeout() -> Spanned<String> {
    Spanned::new(0..0, "60s".to_string())
}

fn default_resync_interval() -> Spanned<String> {
    Spanned::new(0..0, "10m".to_string())
}

fn default_scopes() -> Vec<crate::crowdsec_stream::Scope> {
    vec![
        crate::crowdsec_stream::Scope::Ip,
        crate::crowdsec_stream::Scope::Range,
    ]
}

/// `[crowdsec]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidCrowdsec {
    /// Without a trailing `/`.
    pub lapi_url: String,
    pub api_key_file: PathBuf,
    pub pull_interval: Duration,
    pub timeout: Duration,
    pub resync_interval: Duration,
    pub filter: crate::crowdsec_stream::Filter,
    pub allow_wide: bool,
    pub max_change: f64,
}

fn default_max_change() -> Spanned<f64> {
    Spanned::new(0..0, 0.5)
}

fn yes() -> bool {
    true
}
fn default_pin_dir() -> PathBuf {
    DEFAULT_PIN_DIR.into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/groundzero".into()
}
fn default_socket() -> PathBuf {
    "/run/groundzero/api.sock".into()
}
fn default_max_body() -> usize {
    64 << 20
}
fn default_exact() -> u32 {
    ShieldOptions::default().exact_capacity
}
fn default_cidr() -> u32 {
    ShieldOptions::default().cidr_capacity
}
fn default_allow() -> u32 {
    ShieldOptions::default().allow_capacity
}
fn default_ssh_port() -> u16 {
    22
}
fn default_refresh() -> Spanned<String> {
    Spanned::new(0..0, "1h".to_string())
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            tcp_listen: None,
            token_file: None,
            max_body_bytes: default_max_body(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
        }
    }
}
impl Default for CapacityConfig {
    fn default() -> Self {
        Self {
            exact: default_exact(),
            cidr: default_cidr(),
            allow: default_allow(),
        }
    }
}
impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            protected: Vec::new(),
            protect_management: true,
            ssh_port: default_ssh_port(),
        }
    }
}

/// A config that parsed and passed every check, with its values in usable types.
#[derive(Clone, Debug)]
pub struct Validated {
    pub raw: Config,
    pub source: PathBuf,
    pub tcp_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub protected: Vec<IpNet>,
    pub feeds: Vec<ValidFeed>,
    pub journey_filter: groundzero::journey::FlowFilter,
    pub rate_exempt: Vec<IpNet>,
    pub ban_ttl: Duration,
    /// Timeouts and the connection cap of every listener (`[api]`).
    pub listener_limits: crate::serve::Limits,
    /// `metrics.cache_for`.
    pub metrics_cache: Duration,
    /// `[crowdsec]` pulling (`api_key_file` set), if configured.
    pub crowdsec: Option<ValidCrowdsec>,
    /// `[crowdsec.push]`, if configured.
    pub crowdsec_push: Option<ValidPush>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValidFeed {
    pub name: String,
    pub url: String,
    pub format: crate::feeds::FeedFormat,
    pub refresh: Duration,
    pub allow_wide: bool,
    pub max_change: f64,
}

impl Default for Config {
    fn default() -> Self {
        toml::from_str("").expect("the empty config is valid")
    }
}

impl Validated {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text` as if read from `path` (used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // Messages quote values from the file, and TOML escapes can put any character there:
        // escaped, so that `check-config` and the daemon's log never print a raw control.
        let raw: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: groundzero::text::for_terminal_lines(&e.to_string()),
        })?;
        let invalid =
            |span: std::ops::Range<usize>, field: &str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                line: text[..span.start.min(text.len())].matches('\n').count() + 1,
                field: field.to_string(),
                message: groundzero::text::for_terminal(&message).into_owned(),
            };
        let socket_addr = |value: &Option<Spanned<String>>,
                           field: &str|
         -> Result<Option<SocketAddr>, ConfigError> {
            value
                .as_ref()
                .map(|v| {
                    v.get_ref().parse::<SocketAddr>().map_err(|_| {
                        invalid(
                            v.span(),
                            field,
                            format!(
                                "`{}` is not an address:port like 127.0.0.1:9477",
                                v.get_ref()
                            ),
                        )
                    })
                })
                .transpose()
        };
        let tcp_listen = socket_addr(&raw.api.tcp_listen, "api.tcp_listen")?;
        if let (Some(listen), None) = (&raw.api.tcp_listen, &raw.api.token_file) {
            return Err(invalid(
                listen.span(),
                "api.tcp_listen",
                "a TCP API needs api.token_file (a bearer token); it would otherwise be open to anyone who can connect".into(),
            ));
        }
        let metrics_listen = socket_addr(&raw.metrics.listen, "metrics.listen")?;
        let mut protected = Vec::new();
        for p in &raw.guard.protected {
            protected.push(
                parse_entry(p.get_ref())
                    .map_err(|e| invalid(p.span(), "guard.protected", e.to_string()))?,
            );
        }
        for (field, value) in [
            ("capacity.exact", raw.capacity.exact),
            ("capacity.cidr", raw.capacity.cidr),
            ("capacity.allow", raw.capacity.allow),
        ] {
            if value == 0 {
                return Err(invalid(0..0, field, "must be at least 1".into()));
            }
        }
        let mut feeds = Vec::new();
        for feed in &raw.feeds {
            let name = feed.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    feed.name.span(),
                    "feed.name",
                    format!("`{name}`: use letters, digits, `-` and `_`"),
                ));
            }
            if feeds.iter().any(|f: &ValidFeed| &f.name == name) {
                return Err(invalid(
                    feed.name.span(),
                    "feed.name",
                    format!("`{name}` is used by two feeds"),
                ));
            }
            let refresh = humantime::parse_duration(feed.refresh.get_ref()).map_err(|e| {
                invalid(
                    feed.refresh.span(),
                    "feed.refresh",
                    format!("`{}`: {e} (e.g. 15m, 1h)", feed.refresh.get_ref()),
                )
            })?;
            if refresh < Duration::from_secs(1) {
                return Err(invalid(
                    feed.refresh.span(),
                    "feed.refresh",
                    "must be at least 1s".into(),
                ));
            }
            let max_change = *feed.max_change.get_ref();
            if !(max_change > 0.0 && max_change.is_finite()) {
                return Err(invalid(
                    feed.max_change.span(),
                    "feed.max_change",
                    format!("`{max_change}`: a share above 0, e.g. 0.5 for 50%"),
                ));
            }
            feeds.push(ValidFeed {
                name: name.clone(),
                url: feed.url.get_ref().clone(),
                format: feed.format,
                refresh,
                allow_wide: feed.allow_wide,
                max_change,
            });
        }
        if *raw.journey.sample_every.get_ref() == 0 {
            return Err(invalid(
                raw.journey.sample_every.span(),
                "journey.sample_every",
                "must be at least 1 (1 = every packet)".into(),
            ));
        }
        let journey_filter = groundzero::journey::parse_filter(raw.journey.filter.get_ref())
            .map_err(|e| invalid(raw.journey.filter.span(), "journey.filter", e))?;
        let mut rate_exempt = Vec::new();
        for p in &raw.ratelimit.exempt {
            rate_exempt.push(
                parse_entry(p.get_ref())
                    .map_err(|e| invalid(p.span(), "ratelimit.exempt", e.to_string()))?,
            );
        }
        let ban_ttl = humantime::parse_duration(raw.ratelimit.ban_ttl.get_ref()).map_err(|e| {
            invalid(
                raw.ratelimit.ban_ttl.span(),
                "ratelimit.ban_ttl",
                format!("`{}`: {e} (e.g. 10m, 1h)", raw.ratelimit.ban_ttl.get_ref()),
            )
        })?;
        for (field, value, max) in [
            ("ratelimit.prefix_v4", raw.ratelimit.prefix_v4, 32),
            ("ratelimit.prefix_v6", raw.ratelimit.prefix_v6, 128),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(
                    0..0,
                    field,
                    format!("`{value}`: a prefix length from 1 to {max}"),
                ));
            }
        }
        if raw.ratelimit.burst == Some(0) {
            return Err(invalid(
                0..0,
                "ratelimit.burst",
                "must be at least 1".into(),
            ));
        }
        let duration = |value: &Spanned<String>, field: &str, at_least: Duration| {
            let parsed = humantime::parse_duration(value.get_ref()).map_err(|e| {
                invalid(
                    value.span(),
                    field,
                    format!("`{}`: {e} (e.g. 10s, 1m)", value.get_ref()),
                )
            })?;
            if parsed < at_least {
                return Err(invalid(
                    value.span(),
                    field,
                    format!("must be at least {}", humantime::format_duration(at_least)),
                ));
            }
            Ok(parsed)
        };
        let a_moment = Duration::from_millis(1);
        let listener_limits = crate::serve::Limits {
            header_read_timeout: duration(
                &raw.api.header_read_timeout,
                "api.header_read_timeout",
                a_moment,
            )?,
            request_timeout: duration(&raw.api.request_timeout, "api.request_timeout", a_moment)?,
            max_connections: match raw.api.max_connections {
                0 => {
                    return Err(invalid(
                        0..0,
                        "api.max_connections",
                        "must be at least 1".into(),
                    ))
                }
                n => n,
            },
            ..Default::default()
        };
        let metrics_cache = duration(&raw.metrics.cache_for, "metrics.cache_for", Duration::ZERO)?;
        let lapi_url = |value: &Spanned<String>, field: &str| {
            let url = value.get_ref().trim_end_matches('/');
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(
                    value.span(),
                    field,
                    format!("`{url}`: an http:// or https:// URL"),
                ));
            }
            Ok(url.to_string())
        };
        let crowdsec_push = match &raw.crowdsec {
            Some(cs) => match &cs.push {
                None => None,
                Some(push) => {
                    let url = match (&push.lapi_url, &cs.lapi_url) {
                        (Some(u), _) => lapi_url(u, "crowdsec.push.lapi_url")?,
                        (None, Some(u)) => lapi_url(u, "crowdsec.lapi_url")?,
                        (None, None) => {
                            return Err(invalid(
                                0..0,
                                "crowdsec.push.lapi_url",
                                "set it or crowdsec.lapi_url".into(),
                            ))
                        }
                    };
                    for source in &push.sources {
                        if !crate::crowdsec_push::PUSHABLE.contains(&source.as_str()) {
                            return Err(invalid(
                                0..0,
                                "crowdsec.push.sources",
                                format!(
                                    "`{source}`: one of {}",
                                    crate::crowdsec_push::PUSHABLE.join(", ")
                                ),
                            ));
                        }
                    }
                    if push.machine_id.trim().is_empty() {
                        return Err(invalid(
                            0..0,
                            "crowdsec.push.machine_id",
                            "must not be empty".into(),
                        ));
                    }
                    if push.queue == 0 {
                        return Err(invalid(
                            0..0,
                            "crowdsec.push.queue",
                            "must be at least 1".into(),
                        ));
                    }
                    Some(ValidPush {
                        lapi_url: url,
                        machine_id: push.machine_id.clone(),
                        password_file: push.password_file.clone(),
                        sources: push.sources.clone(),
                        interval: duration(
                            &push.interval,
                            "crowdsec.push.interval",
                            Duration::from_millis(100),
                        )?,
                        queue: push.queue,
                        timeout: duration(
                            &cs.timeout,
                            "crowdsec.timeout",
                            Duration::from_millis(100),
                        )?,
                    })
                }
            },
            None => None,
        };
        let crowdsec = match &raw.crowdsec {
            None => None,
            Some(cs) if cs.api_key_file.is_none() && cs.push.is_some() => None,
            Some(cs) => {
                let Some(api_key_file) = cs.api_key_file.clone() else {
                    return Err(invalid(
                        0..0,
                        "crowdsec.api_key_file",
                        "required to pull (or configure only [crowdsec.push])".into(),
                    ));
                };
                let Some(url) = &cs.lapi_url else {
                    return Err(invalid(
                        0..0,
                        "crowdsec.lapi_url",
                        "required to pull".into(),
                    ));
                };
                let url = lapi_url(url, "crowdsec.lapi_url")?;
                let url = url.as_str();
                let max_change = *cs.max_change.get_ref();
                if !(max_change > 0.0 && max_change.is_finite()) {
                    return Err(invalid(
                        cs.max_change.span(),
                        "crowdsec.max_change",
                        format!("`{max_change}`: a share above 0, e.g. 0.5 for 50%"),
                    ));
                }
                if cs.scopes.is_empty() {
                    return Err(invalid(
                        0..0,
                        "crowdsec.scopes",
                        "name at least one of `ip`, `range`".into(),
                    ));
                }
                Some(ValidCrowdsec {
                    lapi_url: url.to_string(),
                    api_key_file,
                    pull_interval: duration(
                        &cs.pull_interval,
                        "crowdsec.pull_interval",
                        Duration::from_millis(100),
                    )?,
                    timeout: duration(&cs.timeout, "crowdsec.timeout", Duration::from_millis(100))?,
                    resync_interval: duration(
                        &cs.resync_interval,
                        "crowdsec.resync_interval",
                        Duration::from_secs(1),
                    )?,
                    filter: crate::crowdsec_stream::Filter {
                        origins: cs.origins.clone(),
                        scenarios: cs.scenarios.clone(),
                        scopes: cs.scopes.clone(),
                    },
                    allow_wide: cs.allow_wide,
                    max_change,
                })
            }
        };
        Ok(Validated {
            raw,
            source: path.to_path_buf(),
            tcp_listen,
            metrics_listen,
            protected,
            feeds,
            journey_filter,
            rate_exempt,
            ban_ttl,
            listener_limits,
            metrics_cache,
            crowdsec,
            crowdsec_push,
        })
    }

    /// The hosts of http(s) feeds and of the CrowdSec LAPI: the guard protects their servers.
    pub fn feed_hosts(&self) -> Vec<String> {
        self.feeds
            .iter()
            .map(|f| f.url.as_str())
            .chain(self.crowdsec.iter().map(|c| c.lapi_url.as_str()))
            .chain(self.crowdsec_push.iter().map(|c| c.lapi_url.as_str()))
            .filter_map(|url| {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))?;
                let authority = rest.split(['/', '?', '#']).next()?;
                let host = authority.rsplit('@').next()?;
                // `[2001:db8::1]:8080`, `example.org:8080`, `example.org`
                let host = if let Some(v6) = host.strip_prefix('[') {
                    v6.split(']').next()?
                } else {
                    host.split(':').next()?
                };
                (!host.is_empty()).then(|| host.to_string())
            })
            .collect()
    }

    /// The rate limit's bucket size.
    pub fn rate_burst(&self) -> u32 {
        self.raw
            .ratelimit
            .burst
            .unwrap_or(self.raw.ratelimit.rate.saturating_mul(2))
            .max(1)
    }

    pub fn shield_options(&self) -> ShieldOptions {
        ShieldOptions {
            exact_capacity: self.raw.capacity.exact,
            cidr_capacity: self.raw.capacity.cidr,
            allow_capacity: self.raw.capacity.allow,
            pin_dir: Some(self.raw.pin_dir.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Validated, ConfigError> {
        Validated::parse(text, Path::new("gz.toml"))
    }

    #[test]
    fn empty_config_gets_documented_defaults() {
        let c = check("").unwrap();
        assert_eq!(c.raw.pin_dir, PathBuf::from("/sys/fs/bpf/groundzero"));
        assert_eq!(c.raw.api.socket, PathBuf::from("/run/groundzero/api.sock"));
        assert_eq!(c.raw.capacity.exact, 1 << 20);
        assert!(c.raw.guard.protect_management);
        assert!(c.tcp_listen.is_none() && c.metrics_listen.is_none());
        assert_eq!(c.listener_limits, crate::serve::Limits::default());
        assert_eq!(c.metrics_cache, Duration::from_secs(1));
    }

    #[test]
    fn crowdsec_section_defaults_and_checks() {
        assert!(check("").unwrap().crowdsec.is_none());
        let c = check(
            "[crowdsec]\nlapi_url = \"http://127.0.0.1:8080/\"\napi_key_file = \"/etc/groundzero/crowdsec.key\"\n",
        )
        .unwrap();
        let cs = c.crowdsec.clone().unwrap();
        assert_eq!(cs.lapi_url, "http://127.0.0.1:8080");
        assert_eq!(cs.pull_interval, Duration::from_secs(10));
        assert_eq!(cs.timeout, Duration::from_secs(60));
        assert_eq!(cs.resync_interval, Duration::from_secs(600));
        assert_eq!(cs.max_change, 0.5);
        assert!(!cs.allow_wide);
        assert_eq!(
            cs.filter.scopes,
            [
                crate::crowdsec_stream::Scope::Ip,
                crate::crowdsec_stream::Scope::Range
            ]
        );
        assert!(cs.filter.origins.is_empty() && cs.filter.scenarios.is_empty());
        assert_eq!(c.feed_hosts(), ["127.0.0.1"], "the guard protects the LAPI");
        let c = check(
            "[crowdsec]\nlapi_url = \"http://lapi:8080\"\napi_key_file = \"k\"\npull_interval = \"2s\"\n\
             origins = [\"crowdsec\", \"cscli\"]\nscenarios = [\"ssh\"]\nscopes = [\"ip\"]\n",
        )
        .unwrap()
        .crowdsec
        .unwrap();
        assert_eq!(c.pull_interval, Duration::from_secs(2));
        assert_eq!(c.filter.origins, ["crowdsec", "cscli"]);
        assert_eq!(c.filter.scopes, [crate::crowdsec_stream::Scope::Ip]);
        for (bad, field) in [
            (
                "lapi_url = \"127.0.0.1:8080\"\napi_key_file = \"k\"",
                "crowdsec.lapi_url",
            ),
            (
                "lapi_url = \"http://x\"\napi_key_file = \"k\"\npull_interval = \"soon\"",
                "crowdsec.pull_interval",
            ),
            (
                "lapi_url = \"http://x\"\napi_key_file = \"k\"\nmax_change = 0.0",
                "crowdsec.max_change",
            ),
            (
                "lapi_url = \"http://x\"\napi_key_file = \"k\"\nscopes = []",
                "crowdsec.scopes",
            ),
        ] {
            let err = check(&format!("[crowdsec]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
        assert!(check(
            "[crowdsec]\nlapi_url = \"http://x\"\napi_key_file = \"k\"\nscopes = [\"country\"]\n"
        )
        .is_err());
        assert!(
            check("[crowdsec]\nlapi_url = \"http://x\"\n").is_err(),
            "the key file is required"
        );
    }

    #[test]
    fn crowdsec_push_defaults_and_checks() {
        let c = check(
            "[crowdsec]\nlapi_url = \"http://lapi:8080/\"\napi_key_file = \"k\"\n\
             [crowdsec.push]\nmachine_id = \"node-a\"\npassword_file = \"p\"\n",
        )
        .unwrap();
        let p = c.crowdsec_push.unwrap();
        assert_eq!(p.lapi_url, "http://lapi:8080");
        assert_eq!(p.sources, ["auto-ban", "app"]);
        assert_eq!(p.interval, Duration::from_secs(2));
        assert!(c.crowdsec.is_some());
        // Push only: no pull.
        let c = check(
            "[crowdsec.push]\nmachine_id = \"node-a\"\npassword_file = \"p\"\n\
             lapi_url = \"http://lapi:8080\"\nsources = [\"api\", \"manual\"]\ninterval = \"500ms\"\n",
        )
        .unwrap();
        assert!(c.crowdsec.is_none());
        assert!(c.feed_hosts().contains(&"lapi".to_string()));
        let p = c.crowdsec_push.unwrap();
        assert_eq!(p.sources, ["api", "manual"]);
        assert_eq!(p.interval, Duration::from_millis(500));
        for (bad, field) in [
            ("machine_id = \"a\"\npassword_file = \"p\"", "crowdsec.push.lapi_url"),
            (
                "machine_id = \"a\"\npassword_file = \"p\"\nlapi_url = \"http://x\"\nsources = [\"feed\"]",
                "crowdsec.push.sources",
            ),
            (
                "machine_id = \"a\"\npassword_file = \"p\"\nlapi_url = \"x:1\"",
                "crowdsec.push.lapi_url",
            ),
        ] {
            let err = check(&format!("[crowdsec.push]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }

    #[test]
    fn listener_limits_and_the_metrics_cache_are_settable_and_checked() {
        let c = check(
            "[api]\nheader_read_timeout = \"2s\"\nrequest_timeout = \"5m\"\nmax_connections = 8\n\
             [metrics]\ncache_for = \"0s\"\n",
        )
        .unwrap();
        assert_eq!(
            c.listener_limits.header_read_timeout,
            Duration::from_secs(2)
        );
        assert_eq!(c.listener_limits.request_timeout, Duration::from_secs(300));
        assert_eq!(c.listener_limits.max_connections, 8);
        assert_eq!(c.metrics_cache, Duration::ZERO);
        let err = check("[api]\nheader_read_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("gz.toml:2: api.header_read_timeout: must be at least"),
            "{err}"
        );
        let err = check("[api]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.max_connections"), "{err}");
        let err = check("[metrics]\ncache_for = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("gz.toml:2: metrics.cache_for: `soon`"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let c = check(include_str!("../../../deploy/groundzero.toml")).unwrap();
        assert_eq!(c.raw.interfaces, ["eth0"]);
        assert_eq!(c.feeds.len(), 1);
        assert_eq!(c.feeds[0].refresh, Duration::from_secs(12 * 3600));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_line() {
        let err = check("interfaces = [\"eth0\"]\nmonitr = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gz.toml") && err.contains("line 2") && err.contains("monitr"),
            "{err}"
        );
    }

    #[test]
    fn values_quoted_in_errors_are_escaped() {
        let err = check("[[feed]]\nname = \"a\\u001b[2Jb\"\nurl = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\u{1b}'), "{err:?}");
        assert!(err.contains("feed.name"), "{err}");
    }

    #[test]
    fn semantic_errors_name_file_line_and_field() {
        let err =
            check("[guard]\nprotected = [\n  \"203.0.113.0/24\",\n  \"203.0.113.7/24\",\n]\n")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "gz.toml:4: guard.protected: `203.0.113.7/24` has host bits set after /24; did you mean 203.0.113.0/24?"
        );
        let err = check("[api]\ntcp_listen = \"127.0.0.1:9478\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("gz.toml:2: api.tcp_listen: a TCP API needs api.token_file"),
            "{err}"
        );
        let err = check("[[feed]]\nname = \"x\"\nurl = \"/tmp/x\"\nrefresh = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gz.toml:4: feed.refresh: `soon`"), "{err}");
        let err = check("[metrics]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gz.toml:2: metrics.listen"), "{err}");
    }
}
