//! "Nothing acknowledged is lost": the real `groundzero run` binary is SIGKILLed at random
//! points (right after an acknowledged change, or while a request is in flight) and restarted on
//! the same state and pin directories; then the kernel maps, the API and the journal must all
//! hold exactly what was acknowledged. And a "reboot": pins removed, journal kept, every
//! acknowledged entry comes back into fresh maps with its metadata.
//!
//! Seeded: `GZ_CRASH_SEED=<n>` replays a run (the seed is printed); `GZ_CRASH_ROUNDS=<n>`.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::state::{self, Hold, Kernel, Key, View};
use groundzero::{pins, IpNet};
use groundzero_lab::harness::{self, ChildDaemon, DaemonConfig, Workdir};
use nix::sys::signal::Signal;
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// A state directory and a pin directory of our own, removed on drop (panic included), after
/// the daemon child (if any) is stopped.
struct Lab {
    daemon: Option<ChildDaemon>,
    pin_dir: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    work: Workdir,
}

impl Lab {
    /// `extra`: more TOML tables for the config (merged with `[guard]`).
    fn new(tag: &str, extra: &str) -> Self {
        common::require_root();
        let mut work = Workdir::create(&format!("gz-{tag}")).expect("the test's directory");
        let pin_dir = work.pin_dir("pins").expect("a pin directory");
        let socket = work.path("api.sock");
        let config = work.path("gz.toml");
        // No interfaces: the maps, registry and journal are what is under test, and a daemon
        // with no attachment touches no link. The guard's management protection is off so that
        // test addresses are judged only by the allowlist (kept disjoint from the blocks).
        DaemonConfig::with_paths(&pin_dir, &work.path("state"), &socket)
            .set("guard.protect_management", false)
            .merge_toml(extra)
            .write(&config)
            .unwrap_or_else(|e| panic!("{e}"));
        Lab {
            daemon: None,
            log: work.path("daemon.log"),
            pin_dir,
            socket,
            config,
            work,
        }
    }

    /// The state directory, where the journal lives.
    fn journal(&self) -> PathBuf {
        self.work.path("state")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Starts `groundzero run` and waits until it answers `/v1/health`.
    fn start(&mut self) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        let _ = std::fs::remove_file(&self.socket);
        let launch = harness::ChildDaemon::command(
            env!("CARGO_BIN_EXE_groundzero"),
            &self.config,
            &self.log,
        )
        .append_log_to(&self.log);
        let started = ChildDaemon::start(&launch, &self.socket);
        self.daemon = Some(started.unwrap_or_else(|e| panic!("{e}")));
    }

    fn signal(&mut self, signal: Signal) {
        if let Some(mut daemon) = self.daemon.take() {
            let status = daemon
                .stop_with(signal)
                .unwrap_or_else(|e| panic!("{e}; log:\n{}", self.log_tail()));
            if signal == Signal::SIGTERM {
                assert!(
                    status.success(),
                    "the daemon stopped with {status}; log:\n{}",
                    self.log_tail()
                );
            }
        }
    }

    /// API view, kernel keys and journal view, read until they agree with each other (an
    /// expiry may run between the reads), at most ~3 s. Returns the API view and the time span
    /// (Unix seconds) it was read in, or what disagreed.
    fn settled(&self) -> Result<(View, u64, u64), String> {
        let mut last = String::new();
        for _ in 0..15 {
            let t0 = state::now_unix();
            let api = state::api_view(&self.socket)?;
            let t1 = state::now_unix();
            let kernel = Kernel::open(&self.pin_dir).keys();
            let journal = state::journal_view(&self.journal())?;
            let api_keys = state::keys(&api);
            if kernel == api_keys
                && state::without_created(&journal) == state::without_created(&api)
            {
                return Ok((api, t0, t1));
            }
            last = format!(
                "kernel maps and API disagree: only in kernel {:?}, only in API {:?}; \
                 journal and API disagree: only in journal {:?}, only in API {:?}",
                kernel.difference(&api_keys).collect::<Vec<_>>(),
                api_keys.difference(&kernel).collect::<Vec<_>>(),
                diff(&journal, &api),
                diff(&api, &journal),
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    }
}

/// Holders of `a` that `b` lacks or has differently (ignoring `created`).
fn diff(a: &View, b: &View) -> Vec<String> {
    let (a, b) = (state::without_created(a), state::without_created(b));
    let mut out = Vec::new();
    for (k, hs) in &a {
        for (s, h) in hs {
            if b.get(k).and_then(|x| x.get(s)) != Some(h) {
                out.push(format!("{} {} {s} {h:?}", k.0, k.1));
            }
        }
    }
    out
}

/// One management request of a burst.
#[derive(Clone, Debug)]
enum Op {
    Add {
        list: &'static str,
        nets: Vec<IpNet>,
        source: Option<String>,
        reason: Option<String>,
        ttl: Option<u64>,
    },
    Remove {
        list: &'static str,
        nets: Vec<IpNet>,
        source: Option<String>,
    },
}

impl Op {
    fn request(&self) -> (String, Value) {
        let strings = |nets: &[IpNet]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        match self {
            Op::Add {
                list,
                nets,
                source,
                reason,
                ttl,
            } => {
                let mut body = json!({ "entries": strings(nets) });
                if let Some(s) = source {
                    body["source"] = json!(s);
                }
                if let Some(r) = reason {
                    body["reason"] = json!(r);
                }
                if let Some(t) = ttl {
                    body["ttl"] = json!(format!("{t}s"));
                }
                (format!("/v1/{list}"), body)
            }
            Op::Remove { list, nets, source } => {
                let mut body = json!({ "entries": strings(nets) });
                if let Some(s) = source {
                    body["source"] = json!(s);
                }
                let path = if *list == "block" {
                    "/v1/unblock"
                } else {
                    "/v1/unallow"
                };
                (path.to_string(), body)
            }
        }
    }

    fn keys(&self) -> Vec<Key> {
        match self {
            Op::Add { list, nets, .. } | Op::Remove { list, nets, .. } => {
                nets.iter().map(|n| (list.to_string(), *n)).collect()
            }
        }
    }

    /// What an acknowledgement (200 with `answer`) commits the daemon to.
    fn apply(&self, model: &mut View, answer: &Value) {
        match self {
            Op::Add {
                list,
                nets,
                source,
                reason,
                ..
            } => {
                let source = source.clone().unwrap_or_else(|| "api".into());
                for n in nets {
                    model.entry((list.to_string(), *n)).or_default().insert(
                        source.clone(),
                        Hold {
                            reason: reason.clone(),
                            expires: answer["expires"].as_u64(),
                            created: 0,
                        },
                    );
                }
            }
            Op::Remove { list, nets, source } => {
                for n in nets {
                    let key = (list.to_string(), *n);
                    if let Some(hs) = model.get_mut(&key) {
                        match source {
                            Some(s) => {
                                hs.remove(s);
                            }
                            None => hs.retain(|s, _| s.starts_with("feed:")),
                        }
                        if hs.is_empty() {
                            model.remove(&key);
                        }
                    }
                }
            }
        }
    }
}

/// Blocks come from 198.18.0.0/16 and 2001:2::/64, allows from 198.19.0.0/16 and
/// 2001:2:0:ff::/64: disjoint, so the lockout guard never refuses a block.
fn pools() -> (Vec<IpNet>, Vec<IpNet>) {
    let p = |s: String| -> IpNet { s.parse().unwrap() };
    let mut block: Vec<IpNet> = (1..=16).map(|i| p(format!("198.18.0.{i}/32"))).collect();
    block.extend((1..=4).map(|i| p(format!("198.18.{i}.0/24"))));
    block.extend((1..=4).map(|i| p(format!("2001:2::{i}/128"))));
    block.push(p("2001:2:0:1::/64".into()));
    let mut allow: Vec<IpNet> = (1..=6).map(|i| p(format!("198.19.0.{i}/32"))).collect();
    allow.push(p("198.19.1.0/24".into()));
    allow.push(p("2001:2:0:ff::/64".into()));
    (block, allow)
}

fn random_op(rng: &mut ChaCha8Rng, block: &[IpNet], allow: &[IpNet]) -> Op {
    let (list, pool): (&'static str, &[IpNet]) = if rng.gen_bool(0.8) {
        ("block", block)
    } else {
        ("allow", allow)
    };
    let n = rng.gen_range(1..=4);
    let nets: Vec<IpNet> = pool.choose_multiple(rng, n).copied().collect();
    let source = [
        None,
        Some("api"),
        Some("manual"),
        Some("app:x"),
        Some("app:crash-test"),
    ]
    .choose(rng)
    .unwrap()
    .map(str::to_string);
    if rng.gen_bool(0.7) {
        let reason = rng
            .gen_bool(0.6)
            .then(|| format!("reason {} ✓", rng.gen_range(0..1000)));
        let ttl = match rng.gen_range(0..10) {
            0..=3 => Some(rng.gen_range(1..=3)),
            4 => Some(3600),
            _ => None,
        };
        Op::Add {
            list,
            nets,
            source,
            reason,
            ttl,
        }
    } else {
        Op::Remove { list, nets, source }
    }
}

/// The acknowledged state and the one request that may be in flight.
#[derive(Default)]
struct Shared {
    model: View,
    in_flight: Option<Op>,
    refused: Vec<String>,
}

/// Compares `view` (read between `t0` and `t1`) with the model, skipping `uncertain` keys.
/// `strict_expiry`: a hold whose TTL ended more than 2 s before `t0` must be gone.
fn check_model(
    what: &str,
    view: &View,
    model: &View,
    uncertain: &BTreeSet<Key>,
    t0: u64,
    t1: u64,
    strict_expiry: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, holds) in model {
        if uncertain.contains(key) {
            continue;
        }
        for (source, hold) in holds {
            let got = view.get(key).and_then(|hs| hs.get(source));
            let must_be_there = hold.expires.is_none_or(|e| e > t1);
            let must_be_gone = strict_expiry && hold.expires.is_some_and(|e| e + 2 < t0);
            match got {
                None if must_be_there => problems.push(format!(
                    "{what}: acknowledged {} {} by {source} ({hold:?}) is missing",
                    key.0, key.1
                )),
                Some(h) if must_be_gone => problems.push(format!(
                    "{what}: {} {} by {source} expired at {:?} but is still held at {t0} ({h:?})",
                    key.0, key.1, hold.expires
                )),
                Some(h)
                    if (h.reason.as_ref(), h.expires) != (hold.reason.as_ref(), hold.expires) =>
                {
                    problems.push(format!(
                        "{what}: {} {} by {source}: acknowledged {hold:?}, holds {h:?}",
                        key.0, key.1
                    ))
                }
                _ => {}
            }
        }
    }
    for (key, holds) in view {
        if uncertain.contains(key) {
            continue;
        }
        for (source, h) in holds {
            if model.get(key).and_then(|m| m.get(source)).is_none() {
                problems.push(format!(
                    "{what}: {} {} held by {source} ({h:?}) was never acknowledged (or was removed)",
                    key.0, key.1
                ));
            }
        }
    }
    problems
}

fn seed() -> u64 {
    let seed = std::env::var("GZ_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(state::now_unix);
    eprintln!("crash_consistency seed: {seed} (GZ_CRASH_SEED={seed} replays it)");
    seed
}

#[test]
fn kill_9_at_random_points_loses_nothing_acknowledged() {
    // Each round restarts the daemon (2-3 s on a loaded 2-core machine), so 20 rounds take
    // about a minute. `GZ_CRASH_ROUNDS` changes it.
    let rounds: usize = std::env::var("GZ_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lab = Lab::new("crash", "");
    let (block, allow) = pools();
    let mut model = View::new();
    let mut problems: Vec<String> = Vec::new();
    let started = Instant::now();
    lab.start();
    for round in 0..rounds {
        let burst: Vec<Op> = (0..rng.gen_range(3..=12))
            .map(|_| random_op(&mut rng, &block, &allow))
            .collect();
        // Kill right after the burst was acknowledged, or at a random moment in it.
        let kill_after = rng
            .gen_bool(0.6)
            .then(|| Duration::from_millis(rng.gen_range(0..40)));
        let shared = Arc::new(Mutex::new(Shared {
            model: std::mem::take(&mut model),
            ..Default::default()
        }));
        let worker = {
            let (shared, socket, burst) = (shared.clone(), lab.socket.clone(), burst.clone());
            std::thread::spawn(move || {
                for op in burst {
                    shared.lock().unwrap().in_flight = Some(op.clone());
                    let (path, body) = op.request();
                    let Some(answer) = state::request(&socket, "POST", &path, Some(&body)) else {
                        return; // killed: the op stays in flight (either outcome is fine)
                    };
                    let mut s = shared.lock().unwrap();
                    if answer.status == 200 {
                        op.apply(&mut s.model, &answer.json().unwrap_or_default());
                    } else {
                        s.refused.push(format!(
                            "{path} {body} answered {} {}",
                            answer.status,
                            answer.text()
                        ));
                    }
                    s.in_flight = None;
                }
            })
        };
        match kill_after {
            Some(delay) => std::thread::sleep(delay),
            None => {
                while !worker.is_finished() {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        lab.signal(Signal::SIGKILL);
        worker.join().expect("the request thread");
        let shared = Arc::try_unwrap(shared)
            .ok()
            .expect("the worker is done")
            .into_inner()
            .unwrap();
        model = shared.model;
        for r in shared.refused {
            problems.push(format!("round {round}: a valid request was refused: {r}"));
        }
        let uncertain: BTreeSet<Key> = shared.in_flight.iter().flat_map(Op::keys).collect();

        // The journal as the killed daemon left it holds every acknowledged change.
        let now = state::now_unix();
        match state::journal_view(&lab.journal()) {
            Ok(j) => problems.extend(check_model(
                &format!("round {round}: journal after kill"),
                &j,
                &model,
                &uncertain,
                now,
                now,
                false,
            )),
            Err(e) => problems.push(format!("round {round}: journal unreadable after kill: {e}")),
        }

        let t_start = Instant::now();
        lab.start();
        let restart = t_start.elapsed();
        match lab.settled() {
            Ok((api, t0, t1)) => {
                let found = check_model(
                    &format!("round {round}: after restart"),
                    &api,
                    &model,
                    &uncertain,
                    t0,
                    t1,
                    true,
                );
                let failed = !found.is_empty();
                problems.extend(found);
                // Carry on from what the daemon holds for keys in doubt (the request in flight,
                // or a failure already reported), and forget holds that have expired.
                for key in &uncertain {
                    match api.get(key) {
                        Some(hs) => {
                            model.insert(key.clone(), hs.clone());
                        }
                        None => {
                            model.remove(key);
                        }
                    }
                }
                if failed {
                    model = api.clone();
                }
                for (key, holds) in model.iter_mut() {
                    holds.retain(|source, h| {
                        api.get(key).is_some_and(|a| a.contains_key(source))
                            || h.expires.is_none_or(|e| e > t1)
                    });
                }
                model.retain(|_, hs| !hs.is_empty());
            }
            Err(e) => {
                problems.push(format!("round {round}: after restart: {e}"));
                if let Ok(api) = state::api_view(&lab.socket) {
                    model = api;
                }
            }
        }
        eprintln!(
            "round {round}: {} ops, kill {}, in flight {:?}, {} entries held, restart {restart:.1?}, {:.1} s",
            burst.len(),
            kill_after.map_or("after the last ack".to_string(), |d| format!("at {d:?}")),
            shared.in_flight.is_some(),
            model.len(),
            started.elapsed().as_secs_f64()
        );
    }
    lab.signal(Signal::SIGTERM);
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn reboot_restores_every_acknowledged_entry_into_fresh_maps() {
    let mut lab = Lab::new("reboot", "");
    lab.start();
    let requests = [
        (
            "/v1/block",
            json!({"entries": ["198.18.0.1", "198.18.1.0/24"], "reason": "scanner", "ttl": "1h", "source": "app:x"}),
        ),
        (
            "/v1/block",
            json!({"entries": ["198.18.0.1", "2001:2::7"], "reason": "by hand", "source": "manual"}),
        ),
        (
            "/v1/block",
            json!({"entries": ["2001:2:0:1::/64", "198.18.0.2"]}),
        ),
        (
            "/v1/allow",
            json!({"entries": ["198.19.0.0/24", "2001:2:0:ff::1"], "reason": "partners", "ttl": "7d"}),
        ),
        // Acknowledged removals stay removed across the reboot.
        ("/v1/unblock", json!({"entries": ["198.18.0.2"]})),
        (
            "/v1/unblock",
            json!({"entries": ["198.18.0.1"], "source": "manual"}),
        ),
    ];
    let mut before = BTreeMap::new();
    for (path, body) in &requests {
        let r = state::request(&lab.socket, "POST", path, Some(body)).expect("an answer");
        assert_eq!(r.status, 200, "{path} {body}: {}", r.text());
    }
    let (api, _, _) = lab
        .settled()
        .unwrap_or_else(|e| panic!("before the reboot: {e}"));
    before.extend(api);
    let expected_keys: BTreeSet<Key> = [
        ("block", "198.18.0.1/32"),
        ("block", "198.18.1.0/24"),
        ("block", "2001:2::7/128"),
        ("block", "2001:2:0:1::/64"),
        ("allow", "198.19.0.0/24"),
        ("allow", "2001:2:0:ff::1/128"),
    ]
    .into_iter()
    .map(|(l, n)| (l.to_string(), n.parse().unwrap()))
    .collect();
    assert_eq!(state::keys(&before), expected_keys, "what was acknowledged");

    lab.signal(Signal::SIGTERM);
    // The "reboot": bpffs is empty again, the state directory survives.
    let out = Command::new(env!("CARGO_BIN_EXE_groundzero"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(["cleanup", "--pin-dir"])
        .arg(&lab.pin_dir)
        .output()
        .expect("running groundzero cleanup");
    assert!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !lab.pin_dir.join("maps").exists(),
        "cleanup left the maps pinned in {}",
        lab.pin_dir.display()
    );
    assert!(lab.journal().exists(), "the journal survives a reboot");

    lab.start();
    let (after, _, _) = lab
        .settled()
        .unwrap_or_else(|e| panic!("after the reboot: {e}"));
    let kernel = Kernel::open(&lab.pin_dir).keys();
    assert_eq!(
        kernel, expected_keys,
        "the fresh kernel maps hold every acknowledged entry"
    );
    assert_eq!(
        after, before,
        "every entry is back with its holders (source, reason, created, expires)"
    );
    lab.signal(Signal::SIGTERM);
}

/// A block the map cannot take (507) must leave earlier acknowledged holds alone, in memory
/// and in the journal: after a SIGKILL the earlier hold is back with its reason and expiry,
/// and after a reboot (pins removed) it is back in the maps at all.
#[test]
fn a_refused_block_keeps_earlier_acknowledged_holds_across_kill_and_reboot() {
    let mut lab = Lab::new("refused", "[capacity]\nexact = 8\n");
    lab.start();
    let first = json!({"entries": ["198.18.0.1"], "reason": "first", "ttl": "1h"});
    let r = state::request(&lab.socket, "POST", "/v1/block", Some(&first)).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let expires = r.json().unwrap_or_default()["expires"].as_u64();
    // The same source again, with more addresses than the map holds: refused, all or nothing.
    let many: Vec<String> = (1..=20).map(|i| format!("198.18.0.{i}")).collect();
    let r = state::request(
        &lab.socket,
        "POST",
        "/v1/block",
        Some(&json!({"entries": many, "reason": "second"})),
    )
    .expect("an answer");
    assert_eq!(r.status, 507, "{}", r.text());
    let want: View = [(
        ("block".to_string(), "198.18.0.1/32".parse().unwrap()),
        [(
            "api".to_string(),
            Hold {
                reason: Some("first".into()),
                expires,
                created: 0,
            },
        )]
        .into_iter()
        .collect(),
    )]
    .into_iter()
    .collect();
    let check = |lab: &Lab, when: &str| {
        let (api, _, _) = lab
            .settled()
            .unwrap_or_else(|e| panic!("{when}: kernel, API and journal disagree: {e}"));
        assert_eq!(
            state::without_created(&api),
            want,
            "{when}: the hold acknowledged before the refused request"
        );
    };
    check(&lab, "after the 507");
    lab.signal(Signal::SIGKILL);
    lab.start();
    check(&lab, "after kill -9");
    lab.signal(Signal::SIGTERM);
    pins::remove_all(&lab.pin_dir).expect("removing the pins");
    lab.start();
    check(&lab, "after a reboot");
    lab.signal(Signal::SIGTERM);
}
