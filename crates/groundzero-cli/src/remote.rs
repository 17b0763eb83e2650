//! Subcommands that talk to a running daemon through its API.
use std::{borrow::Cow, path::PathBuf};

use anyhow::{Context, Result};
use groundzero::text::{for_terminal, for_terminal_lines};
use groundzero_api::client::{Client, Endpoint};
use hyper::Method;
use serde_json::{json, Value};

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

/// Turns an API answer into the text a person reads. Every string in the answer came from the
/// daemon, and through it from API callers and feed files: renderers print them through [`txt`]
/// (or [`for_terminal_lines`]), never raw, so a stored reason cannot drive the terminal.
type Render = Box<dyn Fn(&Value) -> String>;

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

pub fn run(target: Target, command: Remote) -> Result<()> {
    let endpoint = match (&target.api, &target.token_file) {
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
    };
    let client = Client::new(endpoint);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let call = |method: Method, path: &str, body: Option<Value>| -> Result<Value> {
        // The daemon's error messages echo what callers and feeds sent: escape them too.
        runtime
            .block_on(client.call(method, path, body.as_ref()))
            .map_err(|e| anyhow::anyhow!(for_terminal_lines(&e.to_string())))
    };
    let (value, text): (Value, Render) = match command {
        Remote::Block(a) => (
            call(Method::POST, "/v1/block", Some(add_body(&a)?))?,
            Box::new(added),
        ),
        Remote::Allow(a) => (
            call(Method::POST, "/v1/allow", Some(add_body(&a)?))?,
            Box::new(added),
        ),
        Remote::Unblock(r) => (
            call(Method::POST, "/v1/unblock", Some(remove_body(&r)))?,
            Box::new(removed),
        ),
        Remote::Unallow(r) => (
            call(Method::POST, "/v1/unallow", Some(remove_body(&r)))?,
            Box::new(removed),
        ),
        Remote::List {
            allow,
            block,
            source,
            limit,
        } => {
            let mut path = format!("/v1/entries?limit={limit}");
            if allow {
                path.push_str("&list=allow");
            }
            if block {
                path.push_str("&list=block");
            }
            if let Some(s) = source {
                path.push_str(&format!("&source={}", s.replace(':', "%3A")));
            }
            (call(Method::GET, &path, None)?, Box::new(list))
        }
        Remote::Stats => (call(Method::GET, "/v1/stats", None)?, Box::new(stats)),
        Remote::Guard => (call(Method::GET, "/v1/guard", None)?, Box::new(guard)),
        Remote::Journey {
            watch,
            mermaid,
            recent,
            enable,
            disable,
            sample_every,
            filter,
        } => {
            if enable || disable {
                let mut body = json!({ "enabled": enable });
                if let Some(n) = sample_every {
                    body["sample_every"] = json!(n);
                }
                if let Some(f) = filter {
                    body["filter"] = json!(f);
                }
                call(Method::PUT, "/v1/journey", Some(body))?;
            }
            let fetch = || -> Result<Value> {
                let summary = call(Method::GET, "/v1/journey", None)?;
                let recent = call(
                    Method::GET,
                    &format!("/v1/journey/recent?limit={recent}"),
                    None,
                )?;
                Ok(json!({ "summary": summary, "recent": recent }))
            };
            if watch {
                loop {
                    let v = fetch()?;
                    // Clear the screen and draw again: a live view without a TUI library.
                    print!("\x1b[2J\x1b[H");
                    if target.json {
                        println!("{v}");
                    } else {
                        print!("{}", crate::journey_view::text(&v["summary"], &v["recent"]));
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
            let v = fetch()?;
            if mermaid {
                (
                    v,
                    Box::new(|v: &Value| crate::journey_view::mermaid(&v["summary"])),
                )
            } else {
                (
                    v,
                    Box::new(|v: &Value| crate::journey_view::text(&v["summary"], &v["recent"])),
                )
            }
        }
        Remote::Why { address } => (
            call(Method::GET, &format!("/v1/why/{address}"), None)?,
            Box::new(why),
        ),
        Remote::Import {
            file,
            name,
            format,
            force,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let body = json!({"name": name, "format": format, "text": text, "force": force});
            (
                call(Method::POST, "/v1/import", Some(body))?,
                Box::new(imported),
            )
        }
        Remote::Monitor { state } => (
            call(
                Method::PUT,
                "/v1/monitor",
                Some(json!({"enabled": state == "on"})),
            )?,
            Box::new(|v: &Value| {
                format!(
                    "monitor mode {}",
                    if v["monitor"].as_bool() == Some(true) {
                        "on: nothing is dropped"
                    } else {
                        "off: blocks are enforced"
                    }
                )
            }),
        ),
        Remote::Feeds { refresh } => match refresh {
            Some(name) => (
                call(Method::POST, &format!("/v1/feeds/{name}/refresh"), None)?,
                Box::new(|v: &Value| feed_line(&v["feed"])),
            ),
            None => (
                call(Method::GET, "/v1/feeds", None)?,
                Box::new(|v: &Value| {
                    v["feeds"]
                        .as_array()
                        .map(|a| a.iter().map(feed_line).collect::<Vec<_>>().join("\n"))
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "no feeds".into())
                }),
            ),
        },
    };
    if target.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", text(&value));
    }
    Ok(())
}

/// A string field of an API answer, escaped for the terminal ("" when absent or not a string).
pub fn txt(v: &Value) -> Cow<'_, str> {
    for_terminal(v.as_str().unwrap_or(""))
}

fn imported(v: &Value) -> String {
    format!(
        "imported {} entries as feed:{} (+{} -{}) in {:.2}s",
        v["entries"],
        txt(&v["name"]),
        v["added"],
        v["removed"],
        v["seconds"].as_f64().unwrap_or(0.0)
    )
}

fn add_body(a: &AddArgs) -> Result<Value> {
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
    Ok(json!({"entries": entries, "reason": a.reason, "ttl": a.ttl, "force": a.force}))
}

fn remove_body(r: &RemoveArgs) -> Value {
    json!({"entries": r.entries, "source": r.source})
}

fn added(v: &Value) -> String {
    let expires = v["expires"]
        .as_u64()
        .map(|t| {
            let left = t.saturating_sub(groundzero_daemon::registry::now_unix());
            format!(
                ", expiring in {}",
                humantime::format_duration(std::time::Duration::from_secs(left))
            )
        })
        .unwrap_or_default();
    let n = v["applied"].as_u64().unwrap_or(0);
    let mut text = format!(
        "{n} {} applied, {} new in the map{expires}",
        if n == 1 { "entry" } else { "entries" },
        v["added"]
    );
    // Entries the lockout guard refused: the rest of the request was applied.
    for r in v["results"].as_array().into_iter().flatten() {
        if r["status"] == "refused" {
            text.push_str(&format!(
                "\n  refused {}: {}",
                txt(&r["entry"]),
                txt(&r["why"])
            ));
        }
    }
    text
}

fn guard(v: &Value) -> String {
    let mut out = String::new();
    let list = |v: &Value| -> String {
        let items: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| txt(e).into_owned())
            .collect();
        if items.is_empty() {
            "(none)".into()
        } else {
            items.join(", ")
        }
    };
    out.push_str(&format!(
        "protected by the config: {}\n",
        list(&v["configured"])
    ));
    out.push_str(&format!(
        "allowlisted entries (always protected): {}\n",
        v["allowlist_entries"]
    ));
    out.push_str(&format!(
        "prefixes wider than /{} (IPv4) or /{} (IPv6): refused unless forced\n",
        v["widest_v4"], v["widest_v6"]
    ));
    if v["protect_management"] == true {
        match v["error"].as_str() {
            Some(e) => out.push_str(&format!(
                "management addresses: UNREADABLE ({}): every block is refused\n",
                for_terminal(e)
            )),
            None => out.push_str(&format!(
                "management addresses (read {:.0} s ago, ssh port {}):\n",
                v["read_seconds_ago"].as_f64().unwrap_or(f64::NAN),
                v["ssh_port"]
            )),
        }
        for m in v["management"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {:<40} {}\n", txt(&m["entry"]), txt(&m["why"])));
        }
    } else {
        out.push_str("management addresses: not protected (guard.protect_management = false)\n");
    }
    out.push_str(&format!(
        "exempt from the XDP rate limit: {}\n",
        list(&v["rate_exempt"])
    ));
    let refusals: Vec<String> = v["refusals"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{} {n}", for_terminal(k)))
        .collect();
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

fn removed(v: &Value) -> String {
    let names = |k: &str| {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(for_terminal)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut out = format!(
        "removed: {}",
        if names("removed").is_empty() {
            "nothing".into()
        } else {
            names("removed")
        }
    );
    if !names("still_held").is_empty() {
        out.push_str(&format!(
            "\nstill listed by another source (see `groundzero list`): {}",
            names("still_held")
        ));
    }
    out
}

fn holders(e: &Value) -> String {
    e["holders"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    let mut s = for_terminal(h["source"].as_str().unwrap_or("?")).into_owned();
                    if let Some(r) = h["reason"].as_str() {
                        s.push_str(&format!(" \"{}\"", for_terminal(r)));
                    }
                    if let Some(t) = h["expires"].as_u64() {
                        let left = t.saturating_sub(groundzero_daemon::registry::now_unix());
                        s.push_str(&format!(
                            " ttl {}",
                            humantime::format_duration(std::time::Duration::from_secs(left))
                        ));
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn list(v: &Value) -> String {
    let mut out = format!(
        "{:<6} {:<7} {:<40} {:>10}  {}\n",
        "list", "kind", "entry", "hits", "held by"
    );
    for e in v["entries"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<6} {:<7} {:<40} {:>10}  {}\n",
            txt(&e["list"]),
            txt(&e["kind"]),
            txt(&e["entry"]),
            // A JSON value's Display ignores width: make it a string first so the column lines up.
            e["hits"].to_string(),
            holders(e)
        ));
    }
    out.trim_end().to_string()
}

fn why(v: &Value) -> String {
    let mut out = format!(
        "{}: {} ({}){}",
        txt(&v["address"]),
        txt(&v["verdict"]).to_uppercase(),
        txt(&v["reason"]),
        if v["monitor"].as_bool() == Some(true) {
            ", monitor mode is on"
        } else {
            ""
        }
    );
    match v.get("matched") {
        Some(m) => out.push_str(&format!(
            "\n  matched {} {} ({}), {} hits{}\n  held by: {}",
            txt(&m["list"]),
            txt(&m["entry"]),
            txt(&m["kind"]),
            m["hits"],
            m["last_hit_seconds_ago"]
                .as_f64()
                .map(|s| format!(", last {s:.0}s ago"))
                .unwrap_or_default(),
            holders(m)
        )),
        None => out.push_str("\n  no list entry covers this address"),
    }
    for other in v["also_matching"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  also covered by block {} (did not decide)",
            txt(&other["entry"])
        ));
    }
    out
}

fn stats(v: &Value) -> String {
    let mut out = format!(
        "monitor: {}   uptime: {}s   failed inserts: {}\n",
        v["monitor"], v["uptime_seconds"], v["failed_inserts"]
    );
    for i in v["interfaces"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "attached: {} (ifindex {}, {} XDP{})\n",
            txt(&i["interface"]),
            i["ifindex"],
            txt(&i["mode"]),
            if i["adopted"].as_bool() == Some(true) {
                ", adopted"
            } else {
                ""
            }
        ));
    }
    out.push_str(&format!(
        "{:<14} {:>14} {:>16}\n",
        "reason", "packets", "bytes"
    ));
    if let Some(c) = v["counters"].as_object() {
        for (reason, n) in c {
            out.push_str(&format!(
                "{:<14} {:>14} {:>16}\n",
                for_terminal(reason),
                n["packets"].to_string(),
                n["bytes"].to_string()
            ));
        }
    }
    for e in v["entries"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} {}: {} entries\n",
            txt(&e["list"]),
            txt(&e["source"]),
            txt(&e["family"]),
            e["entries"]
        ));
    }
    out.trim_end().to_string()
}

fn feed_line(f: &Value) -> String {
    format!(
        "{:<20} {:>8} entries  last success {}  {}",
        txt(&f["name"]),
        f["entries"].to_string(),
        f["last_success"]
            .as_u64()
            .map(|t| format!(
                "{}s ago",
                groundzero_daemon::registry::now_unix().saturating_sub(t)
            ))
            .unwrap_or_else(|| "never".into()),
        f["error"]
            .as_str()
            // A feed error lists its bad lines, one per line: keep those, escaped, indented.
            .map(|e| format!("ERROR: {}", for_terminal_lines(e).replace('\n', "\n    ")))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn list_columns_line_up() {
        let v = json!({"entries": [
            {"list": "block", "kind": "exact", "entry": "198.18.0.63/32", "hits": 152, "holders": []},
            {"list": "block", "kind": "cidr", "entry": "2001:2::/48", "hits": 0, "holders": []},
        ]});
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
    fn list_and_why_escape_reasons_sources_and_entries() {
        let holder = json!({"source": format!("app:{EVIL}"), "reason": EVIL, "expires": null});
        let entry = json!({"list": "block", "kind": EVIL, "entry": EVIL, "hits": 1,
                           "holders": [holder]});
        let text = super::list(&json!({ "entries": [entry.clone()] }));
        assert_clean(&text);
        assert!(
            text.contains("\"\\u{1b}[2J\\u{1b}[31mPWNED\\u{9b}0m\\u{202e}\""),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");

        let why = super::why(&json!({"address": EVIL, "verdict": "drop", "reason": EVIL,
            "matched": entry, "also_matching": [{"entry": EVIL}]}));
        assert_clean(&why);
        assert!(why.contains("app:\\u{1b}[2J"), "{why}");
    }

    #[test]
    fn feeds_removed_stats_and_import_escape_daemon_strings() {
        let error = format!("feed: 1 bad line(s), nothing applied\n  feed:1: `{EVIL}`\r");
        let line = super::feed_line(&json!({"name": EVIL, "entries": 0, "error": error}));
        assert_clean(&line);
        // The error's own line structure is kept, indented under the feed.
        assert_eq!(line.lines().count(), 2, "{line}");
        assert!(line.contains("\n      feed:1: `\\u{1b}[2J"), "{line}");

        let removed = super::removed(&json!({"removed": [EVIL], "still_held": [EVIL]}));
        assert_clean(&removed);
        let stats = super::stats(&json!({"interfaces": [{"interface": EVIL, "mode": EVIL}],
            "counters": {EVIL: {"packets": 1, "bytes": 2}},
            "entries": [{"list": EVIL, "source": EVIL, "family": EVIL, "entries": 1}]}));
        assert_clean(&stats);
        let imported = super::imported(&json!({"name": EVIL, "entries": 1}));
        assert_clean(&imported);
        assert!(!imported.contains("normalised"), "{imported}");
    }
}
