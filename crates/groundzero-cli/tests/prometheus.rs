//! A real Prometheus scrapes `/metrics` while known traffic crosses a veth between two network
//! namespaces; then every PromQL expression of the deployed alert rules and Grafana dashboard is
//! run against it, and the traffic panels must show exactly what was sent.
//!
//! Needs root (XDP, namespaces) and Debian's `prometheus` package (`scripts/setup.sh`).
mod common;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use groundzero::{parse_entry, AttachMode, Reason, Shield, ShieldOptions};
use groundzero_daemon::metrics::{self, MetricsSnapshot, SnapshotProvider};
use groundzero_lab::netns::{veth, Netns};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
/// The window substituted for Grafana's `$__rate_interval` and `$__range`: it reaches back past
/// the first scrape (all counters 0), so `rate()` evaluated at a scrape's timestamp is exactly
/// the increase since the start divided by this, with no extrapolation.
const WINDOW_SECONDS: f64 = 60.0;
const IFACE: &str = "gzprm-t";
const TARGET_IP: &str = "198.18.3.1";
const TARGET_MAC: &str = "02:00:00:00:03:01";
const PEER_MAC: &str = "02:00:00:00:03:02";
/// UDP payload sent; every frame is Ethernet + IPv4 + UDP + this.
const PAYLOAD: usize = 32;
const FRAME: u64 = (14 + 20 + 8 + PAYLOAD) as u64;

/// Source address, packets sent from it, and the reason they must be counted under.
const TRAFFIC: [(&str, u64, Reason); 4] = [
    ("198.18.3.2", 20, Reason::NoMatch),
    ("198.18.3.3", 30, Reason::BlockedExact),
    ("198.18.3.4", 10, Reason::Allowlisted),
    ("198.18.3.130", 15, Reason::BlockedCidr),
];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("gz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    /// Scrapes `target` every second as job `groundzero`, evaluating the deployed rules.
    fn start(target: SocketAddr, rules: &Path) -> Self {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: groundzero\n    static_configs:\n      - targets: [\"{target}\"]\n",
                rules.display()
            ),
        )
        .unwrap();
        let out = Command::new(PROMTOOL)
            .args(["check", "config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "test config: {out:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.0.join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {PROMETHEUS}: {e}"));
        let prometheus = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(20), || {
            ureq::get(&format!("{}/-/ready", prometheus.base))
                .timeout(Duration::from_secs(1))
                .call()
                .is_ok()
        });
        assert!(
            ready,
            "Prometheus never became ready:\n{}",
            prometheus.logs()
        );
        prometheus
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut request =
            ureq::get(&format!("{}{path}", self.base)).timeout(Duration::from_secs(5));
        for (k, v) in params {
            request = request.query(k, v);
        }
        let body: Value = match request.call() {
            Ok(r) => r.into_json().unwrap(),
            Err(ureq::Error::Status(_, r)) => r.into_json().unwrap(),
            Err(e) => panic!("{path} {params:?}: {e}\n{}", self.logs()),
        };
        assert_eq!(body["status"], "success", "{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// Runs an instant query (at `time`, or now) and returns its result.
    fn query(&self, expr: &str, time: Option<f64>) -> Value {
        let time = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", expr)];
        if let Some(t) = &time {
            params.push(("time", t));
        }
        self.get("/api/v1/query", &params)
    }

    /// The value of every series of an instant vector, keyed by its labels (without `__name__`,
    /// `instance`, `job`).
    fn vector(&self, expr: &str, time: Option<f64>) -> BTreeMap<String, f64> {
        let data = self.query(expr, time);
        series_values(&data).unwrap_or_else(|| panic!("`{expr}` is not a vector: {data}"))
    }

    /// The single value of `expr`.
    fn scalar(&self, expr: &str, time: Option<f64>) -> f64 {
        let v = self.vector(expr, time);
        assert_eq!(v.len(), 1, "`{expr}` returned {v:?}");
        *v.values().next().unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `{label="value",...}` → value, for a vector result (scalars become one series `{}`).
fn series_values(data: &Value) -> Option<BTreeMap<String, f64>> {
    let number = |v: &Value| v[1].as_str().unwrap().parse::<f64>().unwrap();
    match data["resultType"].as_str()? {
        "vector" => Some(
            data["result"]
                .as_array()?
                .iter()
                .map(|s| {
                    let labels: Vec<String> = s["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job"))
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
                        .collect();
                    (format!("{{{}}}", labels.join(",")), number(&s["value"]))
                })
                .collect(),
        ),
        "scalar" => Some(BTreeMap::from([(
            "{}".to_string(),
            number(&data["result"]),
        )])),
        _ => None,
    }
}

/// Prometheus scrapes every second: polling it faster would only add queries.
fn wait_for(limit: Duration, ok: impl FnMut() -> bool) -> bool {
    common::wait_for(limit, Duration::from_millis(200), ok)
}

fn promtool(args: &[&str], file: &Path) {
    let out = Command::new(PROMTOOL)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("running {PROMTOOL}: {e}"));
    assert!(
        out.status.success(),
        "promtool {args:?} {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every PromQL expression of the dashboard: panel targets (`expr`, anywhere, rows included) and
/// the selectors inside the template variables' `label_values(...)`, with the panel title.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String, String)>) {
        match v {
            Value::Object(map) => {
                let title = map
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or(title)
                    .to_string();
                if let Some(Value::String(expr)) = map.get("expr") {
                    let ref_id = map.get("refId").and_then(Value::as_str).unwrap_or("A");
                    out.push((title.clone(), ref_id.to_string(), expr.clone()));
                }
                for (k, child) in map {
                    if k != "templating" {
                        walk(child, &title, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let definition = var["definition"].as_str().unwrap();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query `{definition}` is not label_values(...)"));
        // label_values(selector, label) or label_values(label).
        let selector = match inner.rsplit_once(',') {
            Some((selector, _label)) => selector.trim().to_string(),
            None => format!("{{{}=~\".+\"}}", inner.trim()),
        };
        out.push((
            format!("variable {}", var["name"].as_str().unwrap()),
            "A".into(),
            selector,
        ));
    }
    out
}

/// Grafana's variables, replaced as Grafana would for this test's selection.
fn substitute(expr: &str) -> String {
    let window = format!("{WINDOW_SECONDS}s");
    let out = expr
        .replace("$__rate_interval", &window)
        .replace("$__range", &window)
        .replace("$__interval", "1s")
        .replace("$instance", ".*")
        .replace("$interface", IFACE);
    assert!(!out.contains('$'), "unhandled Grafana variable in `{expr}`");
    out
}

#[test]
fn prometheus_scrapes_metrics_during_namespace_traffic() {
    common::require_root();
    for tool in [PROMETHEUS, PROMTOOL] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: run scripts/setup.sh (Debian's prometheus package)"
        );
    }

    // The deployed configuration is valid.
    let config = deploy().join("prometheus/prometheus.yml");
    let rules = deploy().join("prometheus/groundzero.rules.yml");
    promtool(&["check", "config"], &config);
    promtool(&["check", "rules"], &rules);
    let rules_text = std::fs::read_to_string(&rules).unwrap();
    let alerts: Vec<&str> = rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:").map(str::trim))
        .collect();
    for wanted in [
        "GroundzeroProgramDetached",
        "GroundzeroDropRateSpike",
        "GroundzeroMapNearlyFull",
        "GroundzeroFeedStale",
        "GroundzeroFailedInserts",
        "GroundzeroFeedDropsNothing",
        "GroundzeroCrowdsecLapiUnreachable",
        "GroundzeroCrowdsecNoPull",
        "GroundzeroCrowdsecPushFailing",
    ] {
        assert!(alerts.contains(&wanted), "no alert {wanted} in {rules:?}");
    }
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy().join("grafana/dashboards/groundzero.json")).unwrap(),
    )
    .expect("the dashboard is valid JSON");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in [
        "Packet flow",
        "Verdicts by reason",
        "Top blocked sources",
        "XDP cost per packet",
        "Map fill",
        "Drops by origin",
        "Packet journey",
        "CrowdSec",
        "CrowdSec decisions by origin and scope",
        "CrowdSec pushed alerts",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    let provisioning = deploy().join("grafana/provisioning");
    let datasource =
        std::fs::read_to_string(provisioning.join("datasources/groundzero.yml")).unwrap();
    assert!(datasource.contains("type: prometheus"));
    let provider = std::fs::read_to_string(provisioning.join("dashboards/groundzero.yml")).unwrap();
    assert!(provider.contains("providers:") && provider.contains("type: file"));

    // Two namespaces joined by a veth; the shield filters what arrives in `target`. IPv6 off and
    // static neighbours both ways: the only packets the program sees are the ones sent below.
    let peer = Netns::create("prm-p").unwrap();
    let target = Netns::create("prm-t").unwrap();
    for ns in [&peer, &target] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .unwrap();
    }
    veth(&peer, "gzprm-p", &target, IFACE).unwrap();
    peer.ip(&["link", "set", "gzprm-p", "address", PEER_MAC])
        .unwrap();
    target
        .ip(&["link", "set", IFACE, "address", TARGET_MAC])
        .unwrap();
    target
        .ip(&["addr", "add", &format!("{TARGET_IP}/24"), "dev", IFACE])
        .unwrap();
    peer.ip(&[
        "neigh",
        "add",
        TARGET_IP,
        "lladdr",
        TARGET_MAC,
        "dev",
        "gzprm-p",
        "nud",
        "permanent",
    ])
    .unwrap();
    for (source, _, _) in TRAFFIC {
        peer.ip(&["addr", "add", &format!("{source}/24"), "dev", "gzprm-p"])
            .unwrap();
        target
            .ip(&[
                "neigh",
                "add",
                source,
                "lladdr",
                PEER_MAC,
                "dev",
                IFACE,
                "nud",
                "permanent",
            ])
            .unwrap();
    }

    // A small exact map, filled, so "map nearly full" has something to say.
    common::require_root();
    const EXACT_CAPACITY: u32 = 4;
    let mut shield = Shield::load(ShieldOptions {
        exact_capacity: EXACT_CAPACITY,
        ..ShieldOptions::default()
    })
    .unwrap();
    shield.enable_run_stats().unwrap();
    for entry in [
        "198.18.3.3",
        "198.18.3.4",
        "198.18.3.200",
        "198.18.3.201",
        "198.18.3.128/25",
        "2001:2::bad",
    ] {
        shield.block(parse_entry(entry).unwrap()).unwrap();
    }
    shield.allow(parse_entry("198.18.3.4").unwrap()).unwrap();
    let refused = shield.block(parse_entry("198.18.3.202").unwrap());
    assert!(
        matches!(refused, Err(groundzero::Error::MapFull { .. })),
        "{refused:?}"
    );
    let mode = target
        .run(|| shield.attach(IFACE, AttachMode::Auto))
        .unwrap();
    let shield = Arc::new(Mutex::new(shield));

    // The exporter, in process, on an ephemeral port.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let provider: SnapshotProvider = {
        let shield = shield.clone();
        Arc::new(move || {
            MetricsSnapshot::from_shield(&shield.lock().unwrap(), metrics::DEFAULT_TOP_N)
        })
    };
    runtime.spawn(metrics::serve(listener, provider));

    let prometheus_started = unix_now();
    let prometheus = Prometheus::start(metrics_addr, &rules.canonicalize().unwrap());
    // At least two scrapes before any traffic: every counter's first sample is 0.
    let scraped = wait_for(Duration::from_secs(15), || {
        prometheus
            .vector("count_over_time(up{job=\"groundzero\"}[1m])", None)
            .values()
            .any(|&n| n >= 2.0)
            && prometheus.scalar("up{job=\"groundzero\"}", None) == 1.0
    });
    assert!(
        scraped,
        "no scrapes of {metrics_addr}:\n{}",
        prometheus.logs()
    );
    let before = prometheus.vector(
        &format!("groundzero_packets_total{{interface=\"{IFACE}\"}}"),
        None,
    );
    assert_eq!(before.len(), Reason::ALL.len(), "{before:?}");
    assert!(before.values().all(|&v| v == 0.0), "{before:?}");

    // The traffic.
    peer.run(|| {
        for (source, count, _) in TRAFFIC {
            let socket = UdpSocket::bind(format!("{source}:0")).unwrap();
            for _ in 0..count {
                socket
                    .send_to(&[7u8; PAYLOAD], format!("{TARGET_IP}:9"))
                    .unwrap();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let sent_at = unix_now();

    // Two scrapes after the traffic; evaluate everything at the last one's timestamp.
    let mut last_scrape = 0.0;
    let after = wait_for(Duration::from_secs(15), || {
        let data = prometheus.query(
            &format!("groundzero_packets_total{{interface=\"{IFACE}\",reason=\"no_match\"}}[30s]"),
            None,
        );
        let times: Vec<f64> = data["result"][0]["values"]
            .as_array()
            .map(|v| v.iter().map(|s| s[0].as_f64().unwrap()).collect())
            .unwrap_or_default();
        last_scrape = times.last().copied().unwrap_or(0.0);
        times.iter().filter(|&&t| t > sent_at).count() >= 2
    });
    assert!(
        after,
        "no scrapes after the traffic:\n{}",
        prometheus.logs()
    );
    // The rate queries below divide by WINDOW_SECONDS, which is exact only if the window at
    // `last_scrape` reaches back to the first scrape (all zeros), made after Prometheus started.
    assert!(
        last_scrape - prometheus_started < WINDOW_SECONDS,
        "the last scrape came {:.0} s after Prometheus started: the {WINDOW_SECONDS} s window \
         no longer holds the first, all-zero scrape",
        last_scrape - prometheus_started
    );
    let at = Some(last_scrape);

    // What Prometheus stored is exactly what was sent.
    let sent_total: u64 = TRAFFIC.iter().map(|t| t.1).sum();
    for reason in Reason::ALL {
        let sent: u64 = TRAFFIC.iter().filter(|t| t.2 == reason).map(|t| t.1).sum();
        let selector = format!(
            "{{interface=\"{IFACE}\",verdict=\"{}\",reason=\"{}\"}}",
            reason.action().label(),
            reason.label()
        );
        assert_eq!(
            prometheus.scalar(&format!("groundzero_packets_total{selector}"), at),
            sent as f64,
            "{reason:?}"
        );
        assert_eq!(
            prometheus.scalar(&format!("groundzero_bytes_total{selector}"), at),
            (sent * FRAME) as f64,
            "{reason:?}"
        );
    }
    assert_eq!(
        prometheus.scalar("sum(groundzero_program_packets_total)", at),
        sent_total as f64
    );
    assert_eq!(
        prometheus.scalar("groundzero_xdp_runs_total", at),
        sent_total as f64,
        "the kernel ran the program once per packet"
    );
    assert!(prometheus.scalar("groundzero_xdp_run_time_seconds_total", at) > 0.0);
    assert_eq!(
        prometheus.vector("groundzero_interface_attached", at),
        BTreeMap::from([(format!("{{interface={IFACE},mode={mode}}}"), 1.0)])
    );
    assert_eq!(prometheus.scalar("groundzero_monitor_mode", at), 0.0);
    assert_eq!(
        prometheus.vector("groundzero_list_entries", at),
        BTreeMap::from([
            ("{family=ipv4,list=allow,source=manual}".to_string(), 1.0),
            ("{family=ipv4,list=block,source=manual}".to_string(), 5.0),
            ("{family=ipv6,list=allow,source=manual}".to_string(), 0.0),
            ("{family=ipv6,list=block,source=manual}".to_string(), 1.0),
        ])
    );
    assert_eq!(
        prometheus.scalar(
            "groundzero_map_entries{map=\"block_exact\",family=\"ipv4\"}",
            at
        ),
        4.0
    );
    assert_eq!(
        prometheus.scalar(
            "groundzero_map_max_entries{map=\"block_exact\",family=\"ipv4\"}",
            at
        ),
        f64::from(EXACT_CAPACITY)
    );
    let failed_inserts = shield.lock().unwrap().failed_inserts();
    assert_eq!(
        prometheus.scalar("groundzero_failed_inserts_total", at),
        failed_inserts as f64
    );
    assert_eq!(
        prometheus.vector("groundzero_build_info", at),
        BTreeMap::from([(format!("{{version={}}}", env!("CARGO_PKG_VERSION")), 1.0)])
    );
    let top = prometheus.vector("groundzero_top_blocked_hits_total", at);
    assert_eq!(top["{entry=198.18.3.3/32}"], 30.0, "{top:?}");
    assert_eq!(top["{entry=198.18.3.128/25}"], 15.0, "{top:?}");
    assert_eq!(
        top["{entry=198.18.3.4/32}"], 0.0,
        "allowlisted wins: {top:?}"
    );
    // Without a daemon every entry is the operator's: its drops are all the entries' hits.
    assert_eq!(
        prometheus.vector("groundzero_origin_dropped_packets", at),
        BTreeMap::from([("{origin=manual}".to_string(), top.values().sum::<f64>())])
    );
    assert!(top.values().sum::<f64>() >= 45.0, "{top:?}");

    // Every expression of the alert rules, as Prometheus loaded them, runs; the rules are healthy.
    let mut rules_seen = Vec::new();
    let healthy = wait_for(Duration::from_secs(10), || {
        let data = prometheus.get("/api/v1/rules", &[]);
        rules_seen = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        rules_seen.len() == alerts.len() && rules_seen.iter().all(|r| r["health"] == "ok")
    });
    assert!(healthy, "rules not all healthy: {rules_seen:#?}");
    for rule in &rules_seen {
        let expr = rule["query"].as_str().unwrap();
        prometheus.query(expr, None);
    }
    let state = |name: &str| {
        rules_seen
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("GroundzeroDown"), "inactive");
    assert_eq!(state("GroundzeroProgramDetached"), "inactive");
    // The exact map is full: pending (it has a `for:`), not silent.
    assert_eq!(state("GroundzeroMapNearlyFull"), "pending");
    if failed_inserts > 0 {
        assert_eq!(state("GroundzeroFailedInserts"), "firing");
    }

    // Every expression of the dashboard runs; the traffic panels show exactly what was sent.
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut panels: BTreeMap<(String, String), BTreeMap<String, f64>> = BTreeMap::new();
    for (title, ref_id, expr) in &exprs {
        let data = prometheus.query(&substitute(expr), at);
        let values = series_values(&data)
            .unwrap_or_else(|| panic!("{title} {ref_id}: `{expr}` gave {data}"));
        panels.insert((title.clone(), ref_id.clone()), values);
    }
    let panel = |title: &str, ref_id: &str| -> BTreeMap<String, f64> {
        panels
            .get(&(title.to_string(), ref_id.to_string()))
            .unwrap_or_else(|| panic!("no panel {title} {ref_id}"))
            .clone()
    };
    // Per-second rates over the window: times the window, the packets sent.
    let sent = |values: BTreeMap<String, f64>| -> BTreeMap<String, u64> {
        values
            .into_iter()
            .map(|(k, v)| {
                let n = v * WINDOW_SECONDS;
                assert!((n - n.round()).abs() < 1e-6, "{k}: {n} is not a count");
                (k, n.round() as u64)
            })
            .collect()
    };
    let one = |values: BTreeMap<String, u64>| -> u64 {
        assert_eq!(values.len(), 1, "{values:?}");
        values.into_values().next().unwrap()
    };
    let dropped: u64 = TRAFFIC
        .iter()
        .filter(|t| t.2.action() == groundzero::Action::Drop)
        .map(|t| t.1)
        .sum();
    assert_eq!(one(sent(panel("Packet flow", "A"))), sent_total, "arrivals");
    assert_eq!(one(sent(panel("Packet flow", "B"))), dropped, "dropped");
    assert_eq!(
        one(sent(panel("Packet flow", "C"))),
        sent_total - dropped,
        "passed"
    );
    assert_eq!(one(sent(panel("Drop rate", "A"))), dropped);
    let by_reason = sent(panel("Verdicts by reason", "A"));
    let expected: BTreeMap<String, u64> = Reason::ALL
        .iter()
        .map(|r| {
            let n = TRAFFIC.iter().filter(|t| t.2 == *r).map(|t| t.1).sum();
            (
                format!("{{reason={},verdict={}}}", r.label(), r.action().label()),
                n,
            )
        })
        .collect();
    assert_eq!(by_reason, expected);
    let throughput = sent(panel("Throughput by verdict", "A"));
    assert_eq!(
        throughput,
        BTreeMap::from([
            ("{verdict=drop}".to_string(), dropped * FRAME * 8),
            (
                "{verdict=pass}".to_string(),
                (sent_total - dropped) * FRAME * 8
            ),
        ])
    );
    let top = sent(panel("Top blocked sources", "A"));
    assert_eq!(top["{entry=198.18.3.3/32}"], 30, "{top:?}");
    assert_eq!(top["{entry=198.18.3.128/25}"], 15, "{top:?}");
    let hits = panel("Top blocked sources (hits since added)", "A");
    assert_eq!(hits["{entry=198.18.3.3/32}"], 30.0, "{hits:?}");
    let cost = one(panel("XDP cost per packet", "A")
        .into_iter()
        .map(|(k, v)| (k, (v * 1e9) as u64))
        .collect());
    assert!(
        (1..1_000_000).contains(&cost),
        "XDP cost {cost} ns per packet"
    );
    let fill = panel("Map fill", "A");
    assert_eq!(fill["{family=ipv4,map=block_exact}"], 1.0, "{fill:?}");
    assert_eq!(fill.len(), 6, "{fill:?}");
    assert_eq!(
        panel("Attached", "A"),
        BTreeMap::from([(format!("{{interface={IFACE},mode={mode}}}"), 1.0)])
    );
    assert!(!panel("variable interface", "A").is_empty());

    drop(prometheus);
    runtime.shutdown_timeout(Duration::from_secs(2));
}
