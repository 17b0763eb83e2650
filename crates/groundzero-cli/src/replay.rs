//! `groundzero replay FILE`: what would these lists do to this capture? Every packet of a pcap or
//! pcapng file goes through the real XDP program (BPF_PROG_TEST_RUN, root) or, with `--model`,
//! through the host model (same parser, same decision); each verdict is printed with its reason
//! and the list entry that decided it, then a summary.
use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure, Context, Result};
use groundzero::{model::ModelLists, IpNet, Reason, Shield, ShieldOptions};
use groundzero_common::parse::{parse, Parsed};
use groundzero_lab::capture_file::{read_frames, Frame};

use crate::check::load_list;

/// BPF_PROG_TEST_RUN refuses a frame shorter than an Ethernet header.
const ETH_HLEN: usize = 14;
/// Frames are cut to this many bytes before either engine sees them. Captures taken on a host
/// with GRO/TSO hold 64 KiB super-packets that no wire carries and that BPF_PROG_TEST_RUN
/// refuses (one page at most); the program reads only the headers (at most two VLAN tags, an
/// IPv4 header with options or the fixed IPv6 header), all within the first 100 bytes, so the
/// verdict of the cut frame is the verdict of the whole one.
const MAX_FRAME: usize = 2048;

#[derive(clap::Args)]
pub struct Args {
    /// The capture: pcap or pcapng (Ethernet, VLAN, Linux cooked SLL/SLL2 or raw IP).
    file: PathBuf,
    /// A blocklist file (one address or prefix per line); repeatable.
    #[arg(long = "blocklist", value_name = "FILE")]
    blocklists: Vec<PathBuf>,
    /// An allowlist file; repeatable.
    #[arg(long = "allowlist", value_name = "FILE")]
    allowlists: Vec<PathBuf>,
    /// Block this address or prefix; repeatable.
    #[arg(long = "block", value_name = "ADDR")]
    block: Vec<String>,
    /// Allow this address or prefix; repeatable.
    #[arg(long = "allow", value_name = "ADDR")]
    allow: Vec<String>,
    /// Take monitor mode, the rate limit and its exemptions (`ratelimit.exempt`,
    /// `guard.protected`) from this daemon config. The rate limit sees the packets back to back,
    /// not at their capture times.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Decide with the host model instead of the kernel program (no root needed).
    #[arg(long)]
    model: bool,
    /// Print one JSON object per packet (`index`, `action`, `reason`, `entry`) and nothing else.
    #[arg(long)]
    json: bool,
    /// How many matched entries the summary lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// What the packets are judged against.
#[derive(Default)]
struct Policy {
    allow: Vec<IpNet>,
    block: Vec<IpNet>,
    monitor: bool,
    /// Packets per second, burst, IPv4 and IPv6 bucket prefix lengths.
    rate: Option<(u32, u32, u8, u8)>,
    rate_exempt: Vec<IpNet>,
}

impl Policy {
    fn from_args(args: &Args) -> Result<Self> {
        let mut policy = Policy::default();
        for path in &args.blocklists {
            policy.block.extend(load_list(path)?);
        }
        for path in &args.allowlists {
            policy.allow.extend(load_list(path)?);
        }
        for s in &args.block {
            policy
                .block
                .push(groundzero::parse_entry(s).with_context(|| format!("--block {s}"))?);
        }
        for s in &args.allow {
            policy
                .allow
                .push(groundzero::parse_entry(s).with_context(|| format!("--allow {s}"))?);
        }
        if let Some(path) = &args.config {
            let config = groundzero_daemon::config::Validated::load(path)
                .with_context(|| format!("loading {}", path.display()))?;
            policy.monitor = config.raw.monitor;
            let r = &config.raw.ratelimit;
            if r.rate > 0 {
                policy.rate = Some((r.rate, config.rate_burst(), r.prefix_v4, r.prefix_v6));
            }
            policy.rate_exempt = config
                .rate_exempt
                .iter()
                .chain(&config.protected)
                .copied()
                .collect();
        }
        Ok(policy)
    }

    /// The entry behind `reason` for the packet from `src`: the longest allow prefix holding it,
    /// the exact block entry, or the longest block prefix (as the LPM tries answer).
    fn entry(&self, src: Option<IpNet>, reason: Reason) -> Option<IpNet> {
        let src = src?;
        let longest = |list: &[IpNet], exact: bool| {
            list.iter()
                .filter(|n| groundzero_common::lists::is_exact_net(n) == exact && n.contains(&src))
                .max_by_key(|n| n.prefix_len())
                .copied()
        };
        match reason {
            Reason::Allowlisted => self
                .allow
                .iter()
                .filter(|n| n.contains(&src))
                .max_by_key(|n| n.prefix_len())
                .copied(),
            Reason::BlockedExact | Reason::MonitorExact => longest(&self.block, true),
            Reason::BlockedCidr | Reason::MonitorCidr => longest(&self.block, false),
            _ => None,
        }
    }

    fn model(&self) -> ModelLists {
        let mut m = ModelLists::new();
        self.allow.iter().for_each(|n| m.allow(*n));
        self.block.iter().for_each(|n| m.block(*n));
        if let Some((rate, burst, p4, p6)) = self.rate {
            m.rate_limit(rate, burst, p4, p6);
        }
        self.rate_exempt.iter().for_each(|n| m.rate_exempt(*n));
        m
    }
}

/// The source address of a frame, as a host entry, when it is IP.
fn source(frame: &[u8]) -> Option<IpNet> {
    match parse(frame) {
        Parsed::V4 { src, .. } => Some(IpNet::from(std::net::IpAddr::from(src))),
        Parsed::V6 { src, .. } => Some(IpNet::from(std::net::IpAddr::from(src))),
        _ => None,
    }
}

/// Something that gives a packet its reason: the kernel program or the host model.
enum Engine {
    Kernel(Box<Shield>),
    Model(Box<ModelLists>, bool),
}

impl Engine {
    fn kernel(policy: &Policy) -> Result<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!("replaying through the kernel program needs root (or use --model)");
        }
        let defaults = ShieldOptions::default();
        let need = |n: usize, d: u32| d.max(u32::try_from(n).unwrap_or(u32::MAX));
        // No pin directory: a private copy of the program and maps, never the daemon's.
        let options = ShieldOptions {
            exact_capacity: need(policy.block.len(), defaults.exact_capacity),
            cidr_capacity: need(policy.block.len(), defaults.cidr_capacity),
            allow_capacity: need(policy.allow.len(), defaults.allow_capacity),
            pin_dir: None,
        };
        let mut shield = Shield::load(options).context("loading the XDP program")?;
        shield
            .block_all(&policy.block)
            .context("writing the blocklist")?;
        shield
            .allow_all(&policy.allow)
            .context("writing the allowlist")?;
        shield.set_monitor(policy.monitor)?;
        for net in &policy.rate_exempt {
            shield.rate_exempt(*net)?;
        }
        if let Some((rate, burst, p4, p6)) = policy.rate {
            shield
                .set_rate_limit(rate, burst, p4, p6)
                .context("setting the rate limit")?;
        }
        Ok(Engine::Kernel(Box::new(shield)))
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Kernel(_) => "the XDP program (BPF_PROG_TEST_RUN)",
            Engine::Model(..) => "the host model",
        }
    }

    /// The reason `frame` gets. The kernel's reason is the one counter the run moved; its
    /// action must be that reason's action.
    fn reason(&mut self, frame: &[u8], index: usize) -> Result<Reason> {
        match self {
            Engine::Model(lists, monitor) => Ok(lists.verdict(frame, *monitor)),
            // The kernel cannot be handed a runt; the shared parser calls it malformed, and a
            // real interface never delivers one.
            Engine::Kernel(_) if frame.len() < ETH_HLEN => Ok(Reason::Malformed),
            Engine::Kernel(shield) => {
                let before = shield.counters()?;
                let action = shield
                    .test_run(frame)
                    .with_context(|| format!("packet {index}: BPF_PROG_TEST_RUN"))?;
                let delta = shield.counters()?.since(&before);
                let moved: Vec<Reason> = delta
                    .iter()
                    .filter(|(_, c)| c.packets > 0)
                    .map(|(r, _)| r)
                    .collect();
                let [reason] = moved[..] else {
                    bail!("packet {index}: the program counted {moved:?}, not one reason");
                };
                ensure!(
                    reason.action() == action,
                    "packet {index}: the program returned {action:?} but counted {reason:?}"
                );
                Ok(reason)
            }
        }
    }
}

/// One packet's verdict.
struct Verdict {
    index: usize,
    reason: Reason,
    source: Option<IpNet>,
    entry: Option<IpNet>,
}

pub fn run(args: Args) -> Result<()> {
    let policy = Policy::from_args(&args)?;
    let frames = read_frames(&args.file)?;
    let mut engine = if args.model {
        Engine::Model(Box::new(policy.model()), policy.monitor)
    } else {
        Engine::kernel(&policy)?
    };
    let verdicts = judge(&mut engine, &policy, &frames)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        for v in &verdicts {
            let line = serde_json::json!({
                "index": v.index,
                "action": v.reason.action().label(),
                "reason": v.reason.label(),
                "entry": v.entry.map(|e| e.to_string()),
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    for v in &verdicts {
        writeln!(
            out,
            "#{:<6} {:<4}  {:<14} src {:<40} entry {}",
            v.index,
            v.reason.action().label(),
            v.reason.label(),
            v.source.map_or("-".to_string(), |s| s.addr().to_string()),
            v.entry.map_or("-".to_string(), |e| e.to_string()),
        )?;
    }
    summary(
        &mut out,
        &args.file,
        engine.name(),
        &frames,
        &verdicts,
        args.top,
    )?;
    Ok(())
}

fn judge(engine: &mut Engine, policy: &Policy, frames: &[Frame]) -> Result<Vec<Verdict>> {
    frames
        .iter()
        .map(|f| {
            let frame = &f.ethernet[..f.ethernet.len().min(MAX_FRAME)];
            let reason = engine.reason(frame, f.index)?;
            let source = source(frame);
            Ok(Verdict {
                index: f.index,
                reason,
                source,
                entry: policy.entry(source, reason),
            })
        })
        .collect()
}

fn summary(
    out: &mut impl Write,
    file: &Path,
    engine: &str,
    frames: &[Frame],
    verdicts: &[Verdict],
    top: usize,
) -> Result<()> {
    let dropped = verdicts
        .iter()
        .filter(|v| v.reason.action() == groundzero::Action::Drop)
        .count();
    writeln!(out)?;
    writeln!(
        out,
        "{}: {} packets through {engine}: {dropped} dropped, {} passed",
        groundzero::text::for_terminal(&file.display().to_string()),
        verdicts.len(),
        verdicts.len() - dropped
    )?;
    let truncated = frames.iter().filter(|f| f.truncated).count();
    if truncated > 0 {
        writeln!(
            out,
            "{truncated} packets were cut short by the capture's snap length"
        )?;
    }
    let mut by_reason: BTreeMap<Reason, usize> = BTreeMap::new();
    let mut by_entry: BTreeMap<IpNet, usize> = BTreeMap::new();
    for v in verdicts {
        *by_reason.entry(v.reason).or_default() += 1;
        if let Some(e) = v.entry {
            *by_entry.entry(e).or_default() += 1;
        }
    }
    writeln!(out, "by reason:")?;
    for (reason, n) in &by_reason {
        writeln!(
            out,
            "  {:<14} {:<4} {n}",
            reason.label(),
            reason.action().label()
        )?;
    }
    if !by_entry.is_empty() {
        let mut entries: Vec<(IpNet, usize)> = by_entry.into_iter().collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        writeln!(out, "top matched entries:")?;
        for (entry, n) in entries.iter().take(top) {
            writeln!(out, "  {:<43} {n}", entry.to_string())?;
        }
    }
    Ok(())
}
