//! The Debian package (packaging/deb, cargo-deb) and the Ansible role (deploy/ansible), for
//! real on this machine: the package is built once, linted, installed with dpkg, used, upgraded
//! in place under a running daemon (restarted on the new binary while a blocked source floods:
//! not one packet leaks), and purged; the role installs it and templates the config
//! twice (the second run changes nothing) and refuses a bad value before the live config is
//! touched. Root only. Nothing stays installed: a guard purges the package even when a check
//! fails.
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use common::{
    child::{self, UdpTally},
    topology::{Topology, FLOOD, GOOD, NODE},
};
use groundzero_lab::{
    harness::{require_root, wait_for, ChildDaemon},
    netns::Netns,
};

const PACKAGE: &str = "groundzero";
const BIN: &str = "/usr/bin/groundzero";
const CONFIG: &str = "/etc/groundzero/groundzero.toml";
const UNIT: &str = "/lib/systemd/system/groundzero.service";
/// The paths of the shipped config (deploy/groundzero.toml's defaults).
const PIN_DIR: &str = "/sys/fs/bpf/groundzero";
const STATE_DIR: &str = "/var/lib/groundzero";
const SOCKET: &str = "/run/groundzero/api.sock";

/// The bouncer key the role test hands the role (a made-up one: no LAPI runs).
const CROWDSEC_KEY: &str = "gz-role-test-bouncer-key-0123456789";

/// Both tests install the same package: one at a time.
static DPKG: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (scripts/setup.sh installs it)"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The .deb, built once per test binary by packaging/deb/build.sh (a release build of the
/// binary: incremental when the tree is built already, then the man pages, completions and
/// `cargo deb --no-build`).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let started = Instant::now();
        // Without the variables `cargo test` sets for its tests (CARGO_*, LD_LIBRARY_PATH, ...):
        // with them the inner cargo sees a different environment and rebuilds the binary
        // (minutes) on every run instead of finding it fresh.
        let mut build = Command::new(repo().join("packaging/deb/build.sh"));
        build.env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "LANG"] {
            if let Some(v) = std::env::var_os(keep) {
                build.env(keep, v);
            }
        }
        let out = build.output().expect("running packaging/deb/build.sh");
        assert!(out.status.success(), "build.sh failed:\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = PathBuf::from(stdout.lines().last().expect("build.sh prints the .deb"));
        assert!(path.is_file(), "{} is not a file", path.display());
        eprintln!("built {} in {:?}", path.display(), started.elapsed());
        path
    })
}

fn installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    String::from_utf8_lossy(&out.stdout).contains("ok installed")
}

/// Purges the package on drop, so a failed check leaves nothing installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", PACKAGE]);
    }
}

/// Installs the package on a machine that does not have it (an operator's groundzero would be
/// replaced and then purged: refuse instead).
fn install() -> Purge {
    assert!(
        !installed(),
        "groundzero is installed on this machine already; this test would purge it"
    );
    assert!(
        !Path::new(PIN_DIR).exists(),
        "{PIN_DIR} exists: a groundzero runs here with the default pins; the test would remove them"
    );
    ok("dpkg", &["-i", deb().to_str().unwrap()]);
    Purge
}

fn purge_and_check_nothing_remains(guard: Purge) {
    drop(guard);
    assert!(!installed(), "dpkg --purge left the package installed");
    for path in [
        BIN,
        CONFIG,
        UNIT,
        PIN_DIR,
        STATE_DIR,
        SOCKET,
        "/etc/groundzero",
    ] {
        assert!(
            !Path::new(path).exists(),
            "{path} is still there after purge"
        );
    }
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    let out = run("ip", &["-n", ns.name(), "-d", "link", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn debian_package_installs_runs_upgrades_and_purges() {
    require_root();
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let deb = deb().to_str().unwrap();

    // Lintian: no error or warning that is not overridden (packaging/deb/*.lintian-overrides).
    let started = Instant::now();
    let lint = run("lintian", &["--fail-on", "error,warning", "--info", deb]);
    assert!(lint.status.success(), "lintian:\n{}", text(&lint));
    eprintln!("lintian: {:?}\n{}", started.elapsed(), text(&lint));

    let guard = install();
    let version = ok(BIN, &["--version"]);
    assert_eq!(
        version.trim(),
        format!("groundzero {}", env!("CARGO_PKG_VERSION"))
    );
    // The man pages (one per subcommand) and completions the package says it ships.
    assert!(ok("man", &["-w", "groundzero"]).contains("/usr/share/man/man1/groundzero.1.gz"));
    assert!(ok("man", &["-w", "groundzero-block"]).contains("groundzero-block.1.gz"));
    assert!(ok("man", &["groundzero-run"]).contains("config"));
    for path in [
        "/usr/share/bash-completion/completions/groundzero",
        "/usr/share/zsh/vendor-completions/_groundzero",
        "/usr/share/fish/vendor_completions.d/groundzero.fish",
        "/usr/share/groundzero/prometheus/groundzero.rules.yml",
        "/usr/share/groundzero/grafana/dashboards/groundzero.json",
    ] {
        assert!(Path::new(path).is_file(), "{path} is missing");
    }
    // The config is a conffile (an upgrade keeps the operator's edits) and validates.
    assert!(ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]).contains(CONFIG));
    ok(BIN, &["check-config", CONFIG]);
    // postinst made the state directory, root's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(STATE_DIR).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{STATE_DIR} mode {mode:o}");
    // The installed unit, with the installed binary at its ExecStart path.
    let verify = run("systemd-analyze", &["verify", UNIT]);
    assert!(
        verify.status.success(),
        "systemd-analyze verify:\n{}",
        text(&verify)
    );

    // The packaged daemon, with the packaged config, on a veth in a namespace (no systemd
    // runs here, so no unit is started: the same command is). Its pins are the default ones.
    let topo = Topology::new("pk");
    let (node, dev) = (&topo.node, topo.node_if.as_str());
    let log = std::env::temp_dir().join(format!("gz-package-{}.log", std::process::id()));
    let launch = ChildDaemon::command(BIN, Path::new(CONFIG), &log)
        .args(["--iface", dev])
        .in_netns(node.name());
    let mut daemon = ChildDaemon::start(&launch, Path::new(SOCKET))
        .unwrap_or_else(|e| panic!("the packaged daemon did not start: {e}"));
    assert!(xdp_attached(node, dev), "the daemon attached XDP");
    assert!(
        Path::new(PIN_DIR).join("maps").is_dir(),
        "pins under {PIN_DIR}"
    );
    let blocked = daemon
        .request(
            "POST",
            "/v1/block",
            Some(&serde_json::json!({"entries": [FLOOD[0]]})),
        )
        .expect("POST /v1/block");
    assert_eq!(blocked.status, 200, "{}", blocked.text());

    // An upgrade (the same version again: dpkg runs prerm/postinst with "upgrade") keeps the
    // pins and the daemon's filtering; then the daemon restarts on the installed binary, as
    // the unit's restart-after-upgrade does, and adopts the pinned link. A blocked source
    // floods from before the upgrade until after the restart: none of it may arrive.
    let rx = UdpTally::bind(node, SocketAddr::new(NODE[0].parse().unwrap(), 9400));
    let flood = child::sender(&topo.peer, FLOOD[0]);
    let (stop, progress) = (AtomicBool::new(false), child::Sent::new(0));
    let flooded = |n: u64| {
        let from = progress.load(Ordering::SeqCst);
        assert!(
            wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
                progress.load(Ordering::SeqCst) >= from + n
            }),
            "the flood stalled"
        );
    };
    let sent = std::thread::scope(|s| {
        let flooding = s.spawn(|| {
            child::paced_flood(
                &flood,
                rx.addr,
                10,
                Duration::from_millis(20),
                Duration::from_secs(60),
                &stop,
                &progress,
            )
        });
        // Stops the flood even if a check below panics (the scope joins it).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(&stop);
        flooded(100);
        ok("dpkg", &["-i", deb]);
        assert!(
            daemon.healthy(),
            "the daemon still answers after the upgrade"
        );
        assert!(
            xdp_attached(node, dev),
            "XDP stays attached through an upgrade"
        );
        flooded(100);
        daemon
            .stop_with(nix::sys::signal::Signal::SIGTERM)
            .expect("stopping the daemon");
        flooded(50);
        daemon = ChildDaemon::start(&launch.clone().append_log_to(&log), Path::new(SOCKET))
            .unwrap_or_else(|e| panic!("the upgraded daemon did not start: {e}"));
        flooded(100);
        stop.store(true, Ordering::SeqCst);
        flooding.join().unwrap()
    });
    let restarted = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        restarted.contains("adopted the pinned link, no gap"),
        "the restarted daemon did not adopt the pinned link:\n{restarted}"
    );
    topo.send(GOOD[0], rx.addr, 5);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || rx
            .from(GOOD[0])
            == 5),
        "the receiver missed the allowed source's packets after the upgrade"
    );
    assert_eq!(
        rx.from(FLOOD[0]),
        0,
        "packets of the blocked source leaked during the upgrade (it sent {sent})"
    );
    eprintln!("upgrade and restart under a flood of {sent} blocked packets: none leaked");

    // Stopped, the pins keep filtering; purge removes them (XDP detached), the state and
    // everything the package installed.
    daemon.stop_with(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(xdp_attached(node, dev), "pins keep XDP attached");
    purge_and_check_nothing_remains(guard);
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
            !xdp_attached(node, dev)
        }),
        "XDP is still attached after purge"
    );
    let _ = std::fs::remove_file(&log);
}

/// `changed=N` of the PLAY RECAP line for localhost.
fn changed(recap: &str) -> u32 {
    recap
        .lines()
        .filter(|l| l.starts_with("localhost"))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("changed="))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no PLAY RECAP for localhost in:\n{recap}"))
}

#[test]
fn ansible_role_installs_configures_idempotently_and_refuses_a_bad_config() {
    require_root();
    let _one = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let ansible = repo().join("deploy/ansible");

    let started = Instant::now();
    let lint = Command::new("ansible-lint")
        .current_dir(&ansible)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("running ansible-lint (scripts/setup.sh installs it)");
    assert!(lint.status.success(), "ansible-lint:\n{}", text(&lint));
    eprintln!("ansible-lint: {:?}", started.elapsed());

    // A throw-away controller setup: inventory, a playbook applying the role to this machine,
    // Ansible's temp files; the package from the build above.
    let dir = std::env::temp_dir().join(format!("gz-ansible-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("inventory.ini"),
        "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n",
    )
    .unwrap();
    // No systemd runs here: the role installs and configures, the service part is off.
    // The bouncer key goes to a file of this test (not /etc/groundzero, which purge must
    // leave empty).
    let key_file = dir.join("crowdsec.key");
    std::fs::write(
        dir.join("play.yml"),
        format!("- hosts: localhost\n  gather_facts: false\n  roles: [groundzero]\n  vars:\n    \
         groundzero_manage_service: false\n    groundzero_interfaces: [gzans0]\n    \
         groundzero_guard_protected: [203.0.113.0/28]\n    \
         groundzero_metrics_listen: 127.0.0.1:9477\n    groundzero_feeds:\n      - name: local\n        \
         url: /var/lib/groundzero/local.txt\n        format: plain\n        refresh: 1h\n    \
         groundzero_crowdsec_lapi_url: http://127.0.0.1:8080\n    \
         groundzero_crowdsec_bouncer_key: {CROWDSEC_KEY}\n    \
         groundzero_crowdsec_key_file: {key_file}\n",
        key_file = key_file.display(),
        ),
    )
    .unwrap();
    let deb = deb().to_str().unwrap().to_string();
    let playbook = |extra: &[&str]| -> Output {
        Command::new("ansible-playbook")
            .current_dir(&dir)
            .args(["-i", "inventory.ini", "play.yml", "-e"])
            .arg(format!("groundzero_deb={deb}"))
            .args(extra)
            .env("ANSIBLE_ROLES_PATH", ansible.join("roles"))
            .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
            .env("ANSIBLE_REMOTE_TEMP", dir.join("tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .output()
            .expect("running ansible-playbook (scripts/setup.sh installs ansible)")
    };

    assert!(
        !installed(),
        "groundzero is installed already; this test would purge it"
    );
    let guard = Purge;
    let cached = PathBuf::from(format!(
        "/var/cache/groundzero-{}",
        Path::new(&deb).file_name().unwrap().to_string_lossy()
    ));

    let started = Instant::now();
    let first = playbook(&[]);
    assert!(first.status.success(), "first run:\n{}", text(&first));
    assert!(
        changed(&text(&first)) >= 2,
        "the first run installs and configures:\n{}",
        text(&first)
    );
    assert!(installed(), "the role installed the package");
    let live = std::fs::read_to_string(CONFIG).unwrap();
    assert!(live.contains(r#"interfaces = ["gzans0"]"#), "{live}");
    assert!(live.contains(r#"name = "local""#), "{live}");
    ok(BIN, &["check-config", CONFIG]);
    // The CrowdSec bouncer: configured, its key in a file only root reads, never logged.
    assert!(live.contains("[crowdsec]"), "{live}");
    assert!(
        live.contains(&format!("api_key_file = \"{}\"", key_file.display())),
        "{live}"
    );
    assert!(
        !live.contains(CROWDSEC_KEY),
        "the key is in the config itself:\n{live}"
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        CROWDSEC_KEY
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{} mode {mode:o}", key_file.display());
    assert!(
        !text(&first).contains(CROWDSEC_KEY),
        "the playbook's output shows the key:\n{}",
        text(&first)
    );

    let second = playbook(&[]);
    assert!(second.status.success(), "second run:\n{}", text(&second));
    assert_eq!(
        changed(&text(&second)),
        0,
        "the second run changes nothing:\n{}",
        text(&second)
    );

    // A prefix with host bits set: check-config refuses it in `validate`, the run fails and
    // the live config is the one from before, byte for byte.
    let bad = playbook(&["-e", r#"{"groundzero_guard_protected": ["10.0.0.1/8"]}"#]);
    assert!(
        !bad.status.success(),
        "a bad config must fail the run:\n{}",
        text(&bad)
    );
    assert!(
        text(&bad).contains("10.0.0.1/8"),
        "the failure names the bad value:\n{}",
        text(&bad)
    );
    assert_eq!(
        std::fs::read_to_string(CONFIG).unwrap(),
        live,
        "the live config was touched"
    );
    eprintln!("three playbook runs: {:?}", started.elapsed());

    purge_and_check_nothing_remains(guard);
    let _ = std::fs::remove_file(cached);
    let _ = std::fs::remove_dir_all(&dir);
}
