//! Part 5: groundzero beside Debian's crowdsec-firewall-bouncer (nftables mode), both pulling
//! the same decisions from one real CrowdSec LAPI.
//!
//! One LAPI ([`Lapi`]), two bouncer keys. The startup set ([`Sizes::decisions`] IPv4 /32 bans,
//! the flood's attacker among them, the rest from 198.18.64.0 on: never routed here, only map
//! keys) is imported before either bouncer starts; then both start from an empty state at the
//! same moment, each in a network namespace of its own (so the firewall bouncer's nftables
//! table never touches the host's ruleset): groundzero's daemon (this workspace's release
//! binary) attached to a veth, and crowdsec-firewall-bouncer. Then a delta of
//! [`Sizes::delta`] more bans, then their deletion.
//!
//! "Enforced" is read from the kernel, never from a bouncer's own records: for groundzero, a
//! lookup of every expected key in the pinned exact map, repeated until none is missing; for
//! the firewall bouncer, its log line `N decisions added` (written after its netlink batch was
//! acknowledged), summed until it covers the change, and then the element count of its nft set
//! (`nft -j list set`, too slow to poll: seconds for 100,000 elements). CPU is the bouncer
//! process's user+sys time (`/proc/<pid>/stat`) over the same interval.
//!
//! Both bouncers reach the LAPI through a relay of ours in their namespace (the LAPI listens on
//! the host's loopback). The relay has a gate: it is closed while a delta is imported or
//! deleted, so no pull can see half of it (a real LAPI can leave decisions created during a
//! pull out of every later delta), and opening it starts the clock: the pulls held at the gate
//! go on at once, so both bouncers see the change at the same moment.
//!
//! Then the flood of part 3 ([`crate::flood`]), from the attacker in the banned set, with each
//! bouncer's own enforcement in place: groundzero's daemon pulling the set into its XDP maps,
//! and the firewall bouncer's nftables table (its `input` hook chain, rule and set) exactly as
//! it built and filled it above, copied into the flood's namespace (`nft list table`, then
//! `nft -f`): a second fill would take the bouncer as long as its startup.

use std::{
    any::Any,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use groundzero::{IpNet, Shield, ShieldOptions};
use groundzero_lab::{
    crowdsec::{Install, Lapi, NewDecision},
    harness::{ChildDaemon, DaemonConfig, Launch, Supervised, Workdir},
    netns::{veth, Netns},
};

use crate::{
    flood::{self, Defence, FloodResult},
    Config,
};

const GZ_KEY: &str = "groundzero-bench-key-0123456789abcdef";
const FW_KEY: &str = "firewall-bench-key-0123456789abcdef";
/// How often both bouncers pull (the daemon's lowest allowed interval is 100 ms).
const PULL_INTERVAL: &str = "250ms";
/// The firewall bouncer's nftables table, chain and set (its defaults).
const FW_TABLE: &str = "crowdsec";
const FW_SET: &str = "crowdsec-blacklists";
/// The scenario of the delta's decisions: `cscli decisions delete --scenario` removes them.
const DELTA_SCENARIO: &str = "groundzero-bench-delta";

/// How many decisions, and how long a bouncer may take.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// The startup set.
    pub decisions: usize,
    /// Added, then deleted.
    pub delta: usize,
    /// Longest wait for one change to be enforced; a bouncer still short of it is reported
    /// as not done, with the count it reached.
    pub limit: Duration,
}

/// One change applied by one bouncer.
#[derive(Clone, Debug)]
pub struct Phase {
    /// From start (startup) or from the gate opening (delta) until enforced; None: not
    /// within the limit.
    pub seconds: Option<f64>,
    /// The bouncer's CPU time (user+sys) over the same interval.
    pub cpu_seconds: f64,
    /// Entries of the range in the kernel afterwards, counted independently (the map walked,
    /// `nft -j list set`).
    pub kernel_entries: Option<usize>,
    /// groundzero only: its own account of this pull (`GET /v1/crowdsec`), seconds to fetch
    /// (HTTP and JSON) and to apply (registry, journal, maps).
    pub own_fetch_apply: Option<(f64, f64)>,
    /// False when the change could not be timed: a bouncer still applying its startup set
    /// when a delta comes would have its startup's log lines counted for the delta.
    pub measured: bool,
}

/// One bouncer's three changes.
#[derive(Clone, Debug)]
pub struct Bouncer {
    pub name: &'static str,
    pub startup: Phase,
    pub add: Phase,
    pub delete: Phase,
}

/// Part 5's results.
#[derive(Clone, Debug)]
pub struct Crowdsec {
    pub sizes: Sizes,
    pub pull_interval: &'static str,
    /// groundzero, then the firewall bouncer.
    pub bouncers: Vec<Bouncer>,
    /// The flood with each bouncer's enforcement ([`Defence::CROWDSEC`]).
    pub flood: Vec<FloodResult>,
    pub flood_packets: u64,
    pub flood_repeats: usize,
    /// Why the part did not run, if it did not.
    pub skipped: Option<String>,
}

/// The decisions: the attacker of the flood first, then addresses from 198.18.64.0 on.
fn addresses(n: usize, skip: usize) -> Vec<Ipv4Addr> {
    let first = u32::from(Ipv4Addr::new(198, 18, 64, 0));
    let mut out = Vec::with_capacity(n);
    if skip == 0 && n > 0 {
        out.push(flood::ATTACKER_ADDR);
    }
    let from = if skip == 0 { 0 } else { skip - 1 };
    let want = n - out.len();
    out.extend((0..want as u32).map(|i| Ipv4Addr::from(first + from as u32 + i)));
    out
}

fn decisions(addrs: &[Ipv4Addr], scenario: &str) -> Vec<NewDecision> {
    addrs
        .iter()
        .map(|a| {
            NewDecision::ip(a.to_string())
                .duration("4h")
                .reason(scenario)
        })
        .collect()
}

pub fn run(config: &Config) -> Result<Crowdsec> {
    let sizes = Sizes {
        decisions: config.crowdsec_decisions,
        delta: config.crowdsec_delta,
        limit: Duration::from_secs(if config.smoke { 60 } else { 900 }),
    };
    let mut out = Crowdsec {
        sizes: sizes.clone(),
        pull_interval: PULL_INTERVAL,
        bouncers: Vec::new(),
        flood: Vec::new(),
        flood_packets: config.flood_packets,
        flood_repeats: config.crowdsec_flood_repeats,
        skipped: None,
    };
    let install = match Install::locate() {
        Ok(i) => i,
        Err(e) => {
            out.skipped = Some(format!("no crowdsec: {e}"));
            return Ok(out);
        }
    };
    let Some(fw_bin) = install.firewall_bouncer.clone() else {
        out.skipped = Some("crowdsec-firewall-bouncer is not unpacked (scripts/setup.sh)".into());
        return Ok(out);
    };
    let gz_bin = daemon_binary()?;

    let lapi = Lapi::start().context("starting the CrowdSec LAPI")?;
    lapi.add_bouncer("groundzero-bench", GZ_KEY)?;
    lapi.add_bouncer("firewall-bench", FW_KEY)?;
    let startup = addresses(sizes.decisions, 0);
    let delta = addresses(sizes.delta, sizes.decisions);
    crate::progress(&format!(
        "part 5: importing {} decisions into the LAPI",
        startup.len()
    ));
    lapi.import_decisions(&decisions(&startup, "groundzero-bench"))?;
    let mut work = Workdir::create("gzbench-cs")?;
    let key_file = work.path("gz-key");
    std::fs::write(&key_file, GZ_KEY)?;

    let gate = Arc::new(AtomicBool::new(true));
    let fw_table;
    {
        let pid = std::process::id() % 100_000;
        let gz_ns = Netns::create("csg")?;
        let peer = Netns::create("csp")?;
        let gz_if = format!("csg{pid}");
        veth(&peer, &format!("csp{pid}"), &gz_ns, &gz_if)?;
        let fw_ns = Netns::create("csf")?;
        let gz_relay = Relay::start(&gz_ns, lapi.addr(), gate.clone())?;
        let fw_relay = Relay::start(&fw_ns, lapi.addr(), gate.clone())?;

        crate::progress("part 5: both bouncers start (startup pull)");
        let t0 = Instant::now();
        let mut gz = GzDaemon::start(
            &gz_bin,
            &mut work,
            "scale",
            &gz_ns,
            &gz_if,
            gz_relay.port,
            &key_file,
        )?;
        let mut fw = FwBouncer::start(&fw_bin, &work, "scale", &fw_ns, fw_relay.port)?;
        let gz_want = nets(&startup);
        let (gz_startup, fw_startup) = race(
            true,
            &mut gz,
            &gz_want,
            true,
            &mut fw,
            Want::Added(startup.len()),
            true,
            t0,
            &sizes,
        )?;
        report_phase("startup", &gz_startup, &fw_startup);
        let fw_ok = fw_startup.seconds.is_some();

        // The delta: imported behind the closed gate, enforced from its opening on.
        let (gz_add, fw_add) = gated(&gate, || {
            lapi.import_decisions(&decisions(&delta, DELTA_SCENARIO))
                .map_err(Into::into)
        })
        .and_then(|t0| {
            race(
                false,
                &mut gz,
                &nets(&delta),
                true,
                &mut fw,
                Want::Added(delta.len()),
                fw_ok,
                t0,
                &sizes,
            )
        })?;
        report_phase("delta add", &gz_add, &fw_add);

        let (gz_del, fw_del) = gated(&gate, || {
            lapi.cscli(&["decisions", "delete", "--scenario", DELTA_SCENARIO])?;
            Ok(())
        })
        .and_then(|t0| {
            race(
                false,
                &mut gz,
                &nets(&delta),
                false,
                &mut fw,
                Want::Deleted(delta.len()),
                fw_ok,
                t0,
                &sizes,
            )
        })?;
        report_phase("delta delete", &gz_del, &fw_del);
        // The firewall bouncer's table as it built and filled it, for the flood: refilling it
        // in the flood's namespace would take it as long as its startup again.
        fw_table = Some(fw.table_text()?);
        out.bouncers = vec![
            Bouncer {
                name: "groundzero (XDP)",
                startup: gz_startup,
                add: gz_add,
                delete: gz_del,
            },
            Bouncer {
                name: "crowdsec-firewall-bouncer (nftables)",
                startup: fw_startup,
                add: fw_add,
                delete: fw_del,
            },
        ];
        // Processes before relays before namespaces.
        drop(gz);
        drop(fw);
        drop(gz_relay);
        drop(fw_relay);
    }

    if config.crowdsec_flood_repeats > 0 && config.flood_packets > 0 {
        let ctx = FloodContext {
            lapi_addr: lapi.addr(),
            gz_bin,
            key_file: key_file.clone(),
            fw_table,
            startup: startup.clone(),
            sizes: sizes.clone(),
        };
        let installer = |defence: Defence, ns: &Netns, iface: &str| -> Result<Box<dyn Any>> {
            ctx.install(defence, ns, iface)
        };
        out.flood = flood::run_custom(
            config,
            &Defence::CROWDSEC,
            &startup,
            config.crowdsec_flood_repeats,
            &installer,
        )?;
    }
    drop(work);
    Ok(out)
}

fn report_phase(what: &str, gz: &Phase, fw: &Phase) {
    let s = |p: &Phase| match p.seconds {
        Some(s) => format!("{s:.2} s, CPU {:.2} s", p.cpu_seconds),
        None => format!("not done, CPU {:.2} s", p.cpu_seconds),
    };
    crate::progress(&format!(
        "part 5: {what}: groundzero {} (kernel {:?}); firewall bouncer {} (nft set {:?})",
        s(gz),
        gz.kernel_entries,
        s(fw),
        fw.kernel_entries
    ));
}

fn nets(addrs: &[Ipv4Addr]) -> Vec<IpNet> {
    addrs.iter().map(|a| IpNet::from(IpAddr::V4(*a))).collect()
}

/// This workspace's `groundzero` binary, beside this one (`target/release/`).
fn daemon_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating groundzero-bench")?;
    let bin = exe
        .parent()
        .context("groundzero-bench has no directory")?
        .join("groundzero");
    ensure!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build --release -p groundzero-cli`)",
        bin.display()
    );
    Ok(bin)
}

/// Closes the gate, lets pulls in flight finish, runs `change` on the LAPI, and opens the
/// gate again: the moment it opens (returned) is when both bouncers may see the change.
fn gated(gate: &AtomicBool, change: impl FnOnce() -> Result<()>) -> Result<Instant> {
    gate.store(false, Ordering::SeqCst);
    // A pull already past the gate: an empty delta takes milliseconds.
    std::thread::sleep(Duration::from_millis(500));
    let result = change();
    let opened = Instant::now();
    gate.store(true, Ordering::SeqCst);
    result.map(|()| opened)
}

/// What the firewall bouncer must log before its change is done.
#[derive(Clone, Copy)]
enum Want {
    Added(usize),
    Deleted(usize),
}

/// Both bouncers on one change from `t0`, polled in turn until both are done or the limit.
/// `startup`: the change is the startup pull (else a delta).
#[allow(clippy::too_many_arguments)]
fn race(
    startup: bool,
    gz: &mut GzDaemon,
    gz_nets: &[IpNet],
    present: bool,
    fw: &mut FwBouncer,
    want: Want,
    fw_on: bool,
    t0: Instant,
    sizes: &Sizes,
) -> Result<(Phase, Phase)> {
    let gz_cpu0 = cpu_seconds(gz.daemon.pid()).unwrap_or(0.0);
    let fw_cpu0 = cpu_seconds(fw.process.pid()).unwrap_or(0.0);
    let fw_log0 = fw.logged()?;
    let mut pending = Pending::new(gz_nets, present);
    // When each was done: (seconds from t0, CPU seconds over the change).
    let mut gz_done: Option<(f64, f64)> = None;
    let mut fw_done: Option<(f64, f64)> = None;
    while t0.elapsed() < sizes.limit && (gz_done.is_none() || (fw_on && fw_done.is_none())) {
        if gz_done.is_none() && pending.pass(gz)? {
            gz_done = Some((
                t0.elapsed().as_secs_f64(),
                cpu_seconds(gz.daemon.pid())? - gz_cpu0,
            ));
        }
        if fw_on && fw_done.is_none() {
            let (added, deleted) = fw.logged()?;
            let done = match want {
                Want::Added(n) => added - fw_log0.0 >= n,
                Want::Deleted(n) => deleted - fw_log0.1 >= n,
            };
            if done {
                fw_done = Some((
                    t0.elapsed().as_secs_f64(),
                    cpu_seconds(fw.process.pid())? - fw_cpu0,
                ));
            }
        }
        if let Some(status) = fw.process.exited() {
            bail!(
                "crowdsec-firewall-bouncer exited ({status}):\n{}",
                fw.process.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let gz_phase = Phase {
        seconds: gz_done.map(|d| d.0),
        cpu_seconds: gz_done
            .map(|d| d.1)
            .unwrap_or_else(|| cpu_seconds(gz.daemon.pid()).unwrap_or(0.0) - gz_cpu0),
        kernel_entries: gz.count().ok(),
        own_fetch_apply: gz.own(startup),
        measured: true,
    };
    let fw_phase = Phase {
        seconds: fw_done.map(|d| d.0),
        cpu_seconds: fw_done
            .map(|d| d.1)
            .unwrap_or_else(|| cpu_seconds(fw.process.pid()).unwrap_or(0.0) - fw_cpu0),
        kernel_entries: fw.count().ok(),
        own_fetch_apply: None,
        measured: fw_on,
    };
    Ok((gz_phase, fw_phase))
}

/// Keys still to check, in order: a pass stops at the first key not yet as wanted (cheap while
/// a bouncer has not begun, exact once it has finished).
struct Pending {
    nets: Vec<IpNet>,
    next: usize,
    present: bool,
}

impl Pending {
    fn new(nets: &[IpNet], present: bool) -> Self {
        Pending {
            nets: nets.to_vec(),
            next: 0,
            present,
        }
    }

    /// Whether every key is now as wanted.
    fn pass(&mut self, gz: &mut GzDaemon) -> Result<bool> {
        let Some(maps) = gz.maps()? else {
            return Ok(false);
        };
        while self.next < self.nets.len() {
            let here = maps.blocked_entry(self.nets[self.next])?.is_some();
            if here != self.present {
                return Ok(false);
            }
            self.next += 1;
        }
        Ok(true)
    }
}

/// CPU time (user+sys) of a process so far, seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the command name (in parentheses, may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("parsing /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("parsing /proc/<pid>/stat")
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// groundzero's daemon in a namespace, with the pinned maps opened once it has made them.
struct GzDaemon {
    daemon: ChildDaemon,
    pin_dir: PathBuf,
    maps: Option<Shield>,
}

impl GzDaemon {
    fn start(
        bin: &Path,
        work: &mut Workdir,
        name: &str,
        ns: &Netns,
        iface: &str,
        relay_port: u16,
        key_file: &Path,
    ) -> Result<Self> {
        let pin_dir = work.pin_dir(name)?;
        let state = work.path(&format!("{name}-state"));
        let socket = work.path(&format!("{name}.sock"));
        let config = DaemonConfig::with_paths(&pin_dir, &state, &socket)
            .interfaces(&[iface])
            .set("attach_mode", "native")
            .set(
                "crowdsec.lapi_url",
                format!("http://127.0.0.1:{relay_port}"),
            )
            .set_path("crowdsec.api_key_file", key_file)
            .set("crowdsec.pull_interval", PULL_INTERVAL)
            // A pull held at the relay's closed gate must not time out (a failed pull makes the
            // next one a startup pull of the whole set).
            .set("crowdsec.timeout", "5m");
        let config_path = work.path(&format!("{name}.toml"));
        config.write(&config_path)?;
        let launch = ChildDaemon::command(bin, &config_path, &work.path(&format!("{name}.log")))
            .in_netns(ns.name())
            .die_with_parent();
        Ok(GzDaemon {
            daemon: ChildDaemon::spawn(&launch, &socket)?,
            pin_dir,
            maps: None,
        })
    }

    /// The pinned maps, once the daemon answers (it pins them before it serves).
    fn maps(&mut self) -> Result<Option<&Shield>> {
        if self.maps.is_none() {
            if let Some(status) = self.daemon.exited() {
                bail!(
                    "the groundzero daemon exited ({status}):\n{}",
                    self.daemon.log_text()
                );
            }
            if !self.daemon.healthy() {
                return Ok(None);
            }
            self.maps = Some(
                Shield::load(ShieldOptions {
                    pin_dir: Some(self.pin_dir.clone()),
                    ..Default::default()
                })
                .context("opening the daemon's pinned maps")?,
            );
        }
        Ok(self.maps.as_ref())
    }

    /// Its own account of its last startup pull or last non-empty delta: fetch and apply
    /// seconds.
    fn own(&self, startup: bool) -> Option<(f64, f64)> {
        let status = self.daemon.request("GET", "/v1/crowdsec", None)?.json()?;
        let kind = if startup { "startup" } else { "delta" };
        Some((
            status[format!("{kind}_fetch_seconds")].as_f64()?,
            status[format!("{kind}_apply_seconds")].as_f64()?,
        ))
    }

    /// Blocked entries in 198.18.0.0/15, walked in the kernel map.
    fn count(&mut self) -> Result<usize> {
        let range: IpNet = "198.18.0.0/15".parse().context("a valid prefix")?;
        let maps = self.maps()?.context("the daemon never answered")?;
        Ok(maps
            .blocked()?
            .iter()
            .filter(|e| range.contains(&e.net))
            .count())
    }
}

/// crowdsec-firewall-bouncer in nftables mode in a namespace, its log on stdout.
struct FwBouncer {
    process: Supervised,
    ns: String,
}

impl FwBouncer {
    fn start(bin: &Path, work: &Workdir, name: &str, ns: &Netns, relay_port: u16) -> Result<Self> {
        let dir = work.path(&format!("fw-{name}"));
        std::fs::create_dir_all(&dir)?;
        // Only IPv4 (the decisions are IPv4): `disable_ipv6` alone would disable IPv4 too in
        // this version (its nftablesConfig), so each family is set explicitly. No metrics
        // (they run `nft -j list set` every few seconds).
        let yaml = format!(
            "mode: nftables\npid_dir: {dir}/\nupdate_frequency: {PULL_INTERVAL}\n\
             daemonize: false\nlog_mode: stdout\nlog_dir: {dir}/\nlog_level: info\n\
             api_url: http://127.0.0.1:{relay_port}/\napi_key: {FW_KEY}\n\
             insecure_skip_verify: false\ndisable_ipv6: false\ndeny_action: DROP\n\
             deny_log: false\nsupported_decisions_types:\n  - ban\n\
             blacklists_ipv4: {FW_SET}\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: {FW_TABLE}\n    \
             chain: crowdsec-chain\n  ipv6:\n    enabled: false\n\
             prometheus:\n  enabled: false\n",
            dir = dir.display()
        );
        let config = dir.join("crowdsec-firewall-bouncer.yaml");
        std::fs::write(&config, yaml)?;
        let launch = Launch::new("crowdsec-firewall-bouncer", bin)
            .arg("-c")
            .arg(&config)
            .in_netns(ns.name())
            .log_to(&dir.join("bouncer.log"))
            .die_with_parent();
        Ok(FwBouncer {
            process: launch.spawn()?,
            ns: ns.name().to_string(),
        })
    }

    /// Decisions it has logged as added and as deleted (`N decisions added`, after each
    /// acknowledged commit).
    fn logged(&self) -> Result<(usize, usize)> {
        let text = self.process.log_text();
        let (mut added, mut deleted) = (0, 0);
        for line in text.lines() {
            let Some(msg) = line.split("msg=\"").nth(1) else {
                continue;
            };
            let mut words = msg.split_whitespace();
            let (Some(n), Some(_noun), Some(verb)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            match verb.trim_end_matches('"') {
                "added" => added += n,
                "deleted" => deleted += n,
                _ => {}
            }
        }
        Ok((added, deleted))
    }

    /// Its whole table, as `nft list table` prints it (loadable with `nft -f`).
    fn table_text(&self) -> Result<String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "nft", "list", "table", "ip", FW_TABLE,
            ])
            .output()
            .context("running nft")?;
        ensure!(
            out.status.success(),
            "nft list table: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Elements of its set, as the kernel lists them.
    fn count(&self) -> Result<usize> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "-j", "list", "set", "ip"])
            .args([FW_TABLE, FW_SET])
            .output()
            .context("running nft")?;
        ensure!(
            out.status.success(),
            "nft list set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing nft -j")?;
        Ok(json["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["set"]["elem"].as_array())
            .map(|e| e.len())
            .sum())
    }
}

/// A TCP relay from `127.0.0.1:<port>` in a namespace to the LAPI on the host's loopback,
/// holding requests while its gate is closed. Stops accepting on drop.
struct Relay {
    port: u16,
    listener: Arc<TcpListener>,
}

impl Relay {
    fn start(ns: &Netns, upstream: SocketAddr, gate: Arc<AtomicBool>) -> Result<Self> {
        // The socket is the namespace's for its whole life, whichever thread uses it.
        let listener = ns.try_run(|| TcpListener::bind("127.0.0.1:0"))??;
        let port = listener.local_addr()?.port();
        let listener = Arc::new(listener);
        let accepting = listener.clone();
        std::thread::spawn(move || {
            for client in accepting.incoming() {
                let Ok(client) = client else { return };
                let gate = gate.clone();
                std::thread::spawn(move || {
                    let _ = pipe(client, upstream, &gate);
                });
            }
        });
        Ok(Relay { port, listener })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Wakes the blocked accept with an error: the thread ends.
        // SAFETY: the listener's descriptor is open (this Arc keeps it).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

fn pipe(mut client: TcpStream, upstream: SocketAddr, gate: &AtomicBool) -> Result<()> {
    let mut server = TcpStream::connect(upstream)?;
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut s_read, mut c_write) = (server.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            let _ = server.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        while !gate.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        server.write_all(&buf[..n])?;
    }
}

/// What the flood's two CrowdSec defences need.
struct FloodContext {
    lapi_addr: SocketAddr,
    gz_bin: PathBuf,
    key_file: PathBuf,
    /// `nft list table` of the firewall bouncer's table after part 5's changes.
    fw_table: Option<String>,
    startup: Vec<Ipv4Addr>,
    sizes: Sizes,
}

impl FloodContext {
    /// Starts `defence`'s bouncer in the flood's target namespace (groundzero attached to
    /// `iface`) and waits until it enforces the whole startup set. The returned value holds
    /// it, then its relay, then its directory (dropped in that order) until the flood is over.
    fn install(&self, defence: Defence, ns: &Netns, iface: &str) -> Result<Box<dyn Any>> {
        // A directory per flood run: pins and the daemon's state start empty each time.
        let mut work = Workdir::create("gzbench-csf")?;
        let gate = Arc::new(AtomicBool::new(true));
        let relay = Relay::start(ns, self.lapi_addr, gate)?;
        let t0 = Instant::now();
        match defence {
            Defence::CrowdsecGroundzero => {
                let mut gz = GzDaemon::start(
                    &self.gz_bin,
                    &mut work,
                    "flood",
                    ns,
                    iface,
                    relay.port,
                    &self.key_file,
                )?;
                let mut pending = Pending::new(&nets(&self.startup), true);
                while !pending.pass(&mut gz)? {
                    ensure!(
                        t0.elapsed() < self.sizes.limit,
                        "groundzero did not enforce the set"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(Box::new((gz, relay, work)))
            }
            Defence::CrowdsecFirewall => {
                // The bouncer's own table (hook, chain, rule, timeout set and its elements),
                // copied from where it built it; the namespace takes it away.
                let table = self
                    .fw_table
                    .as_deref()
                    .context("the firewall bouncer's table was not saved")?;
                flood::netns_exec(ns.name(), &["nft", "-f", "-"], Some(table.as_bytes()))?;
                Ok(Box::new((relay, work)))
            }
            other => bail!("{} is not a CrowdSec defence", other.label()),
        }
    }
}
