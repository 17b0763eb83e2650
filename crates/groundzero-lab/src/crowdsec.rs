//! A real CrowdSec Local API (LAPI) for tests and the lab: Debian's crowdsec 1.4.6, run
//! LAPI-only (`crowdsec -no-cs -no-capi`) with a config of our own in a temporary directory
//! (sqlite, `127.0.0.1:<free port>`, no central API, no hub), driven with `cscli`.
//!
//! `scripts/setup.sh` unpacks the packages (never installs them: their postinst registers with
//! the central API and starts services) into [`DEFAULT_ROOT`]; [`ROOT_ENV`] points elsewhere.
//! [`Lapi::start`] waits until the LAPI answers; dropping the [`Lapi`] stops it and removes its
//! directory. [`Lapi::stop`] and [`Lapi::restart`] keep the database, for fault tests.
//!
//! # What a real 1.4.6 LAPI does (observed here, checked by `tests/crowdsec_lapi.rs`)
//!
//! - `GET /v1/decisions/stream` without a valid `X-Api-Key` is `403 {"message":"access forbidden"}`.
//! - Empty lists come back as `null`: an empty delta is `{"deleted":null,"new":null}`.
//! - Each decision has exactly `duration, id, origin, scenario, scope, type, value`. Decisions
//!   added with `cscli decisions add` have origin `cscli` and the `--reason` as scenario.
//! - `duration` is the *remaining* time as a Go duration string (`"1h59m58.338302415s"`); a
//!   deleted or expired decision comes back with a negative one (`"-295.314002ms"`).
//! - Scope is `Ip` or `Range` (case as written here); `type` is whatever was added (`ban`,
//!   `captcha`, ...): a bouncer must filter on it.
//! - Values are not normalised: `2001:0DB8:0000::0001` and `203.0.113.7/24` come back exactly as
//!   entered.
//! - A deletion (and an expiry) reappears in every delta pulled within about 2 s of the
//!   previous pull, so applying deletions must be idempotent.
//! - `startup=true` returns the live decisions in `new` *and* recently deleted or expired ones in
//!   `deleted`: a startup pull must apply both.
//! - Deleting an address that lies inside a banned range (`cscli decisions delete --ip`) deletes
//!   the whole range decision.
//! - Each bouncer key has a single pull position (a live `GET /v1/decisions` with the same key
//!   moves it too): one key per consumer.
//! - A decision created while a pull runs can be missing from every later delta: once here, 50
//!   of a 10,000-decision `cscli decisions import` running during 1 s pulls never came in a
//!   delta (a startup pull has them). A bouncer must pull the whole set again now and then.
//! - Durations must be Go-style (`24h`, not `1d`); `cscli` fails with the LAPI's validation
//!   error, which the LAPI returns as HTTP 500.
//!
//! The child gets `PR_SET_PDEATHSIG`: if the process (strictly: the thread) that started it
//! dies without dropping the [`Lapi`], crowdsec goes too.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Where `scripts/setup.sh` unpacks the crowdsec packages (`usr/bin/crowdsec`, `usr/bin/cscli`).
pub const DEFAULT_ROOT: &str = "/var/lib/groundzero-ci/crowdsec";
/// Environment variable naming another unpacked root (`/` for an installed package).
pub const ROOT_ENV: &str = "GROUNDZERO_CROWDSEC_ROOT";
/// The machine `cscli decisions` logs in as (registered by [`Lapi::start`]).
const CSCLI_MACHINE: &str = "groundzero-lab-cscli";
/// How long [`Lapi::start`] waits for the LAPI to answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// What went wrong starting or driving the LAPI.
#[derive(Debug, thiserror::Error)]
pub enum CrowdsecError {
    #[error("crowdsec binaries not found under {root} (run scripts/setup.sh, or set {ROOT_ENV})")]
    NotInstalled { root: PathBuf },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`cscli {args}` failed ({status}): {stderr}")]
    Cscli {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("crowdsec exited before its LAPI answered ({status}); its logs:\n{logs}")]
    Exited { status: String, logs: String },
    #[error("crowdsec's LAPI did not answer on {addr} within {READY_WITHIN:?}; its logs:\n{logs}")]
    NotReady { addr: SocketAddr, logs: String },
    #[error("unexpected output of `cscli {args}`: {output}")]
    Output { args: String, output: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CrowdsecError {
    let what = what.into();
    move |source| CrowdsecError::Io { what, source }
}

/// The unpacked crowdsec binaries.
#[derive(Debug, Clone)]
pub struct Install {
    /// `crowdsec` (the agent and LAPI in one binary).
    pub crowdsec: PathBuf,
    /// `cscli`.
    pub cscli: PathBuf,
    /// `crowdsec-firewall-bouncer` (the benchmark's peer), if unpacked.
    pub firewall_bouncer: Option<PathBuf>,
}

impl Install {
    /// Finds the binaries under `$GROUNDZERO_CROWDSEC_ROOT` or [`DEFAULT_ROOT`].
    pub fn locate() -> Result<Self, CrowdsecError> {
        let root = std::env::var_os(ROOT_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        Self::at(&root)
    }

    /// The binaries under `root` (`root/usr/bin/...`).
    pub fn at(root: &Path) -> Result<Self, CrowdsecError> {
        let bin = root.join("usr/bin");
        let crowdsec = bin.join("crowdsec");
        let cscli = bin.join("cscli");
        if !crowdsec.is_file() || !cscli.is_file() {
            return Err(CrowdsecError::NotInstalled {
                root: root.to_path_buf(),
            });
        }
        let bouncer = bin.join("crowdsec-firewall-bouncer");
        Ok(Install {
            crowdsec,
            cscli,
            firewall_bouncer: bouncer.is_file().then_some(bouncer),
        })
    }
}

/// Scope of a decision, spelled as the LAPI stores and returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One address (`--ip`).
    Ip,
    /// A prefix (`--range`).
    Range,
}

/// A decision to add with `cscli decisions add` or [`Lapi::import_decisions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDecision {
    /// `Ip` or `Range`.
    pub scope: Scope,
    /// The address or prefix, passed as is (the LAPI does not normalise it).
    pub value: String,
    /// Go duration (`"1h"`, `"90s"`; not `"1d"`).
    pub duration: String,
    /// Becomes the decision's `scenario`.
    pub reason: String,
    /// `ban`, `captcha`, ...
    pub kind: String,
}

impl NewDecision {
    /// A one-hour `ban` of one address, reason `groundzero-test`.
    pub fn ip(value: impl Into<String>) -> Self {
        Self::new(Scope::Ip, value.into())
    }

    /// A one-hour `ban` of a prefix, reason `groundzero-test`.
    pub fn range(value: impl Into<String>) -> Self {
        Self::new(Scope::Range, value.into())
    }

    fn new(scope: Scope, value: String) -> Self {
        NewDecision {
            scope,
            value,
            duration: "1h".into(),
            reason: "groundzero-test".into(),
            kind: "ban".into(),
        }
    }

    /// With this Go duration.
    pub fn duration(mut self, duration: impl Into<String>) -> Self {
        self.duration = duration.into();
        self
    }

    /// With this reason (the decision's scenario).
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// With this type (`ban`, `captcha`, ...).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }
}

/// Which decisions `cscli decisions delete` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteFilter {
    /// `--ip`: decisions on this address, *including a range containing it*.
    Ip(String),
    /// `--range`: decisions on this exact range.
    Range(String),
    /// `--id`.
    Id(u64),
    /// `--all`.
    All,
}

/// Credentials of a watcher machine, for `POST /v1/watchers/login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineCredentials {
    /// `machine_id`.
    pub login: String,
    /// `password`.
    pub password: String,
}

/// A LAPI-only crowdsec with its own config and database; stopped and removed on drop.
#[derive(Debug)]
pub struct Lapi {
    install: Install,
    dir: PathBuf,
    addr: SocketAddr,
    child: Option<Child>,
    /// Whether crowdsec gets PR_SET_PDEATHSIG (false only for [`Lapi::detach`]).
    die_with_starter: bool,
}

/// A LAPI given up by its [`Lapi`] ([`Lapi::detach`]): it runs on until someone stops `pid` and
/// removes `dir` (`groundzero lab down` does, from the lab's state file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedLapi {
    /// The crowdsec process.
    pub pid: u32,
    /// Its config and database.
    pub dir: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lapi {
    /// Writes a config into a new temporary directory, starts the LAPI on a free loopback port,
    /// waits until it answers, and registers the machine `cscli decisions` uses.
    pub fn start() -> Result<Self, CrowdsecError> {
        Self::start_on(Ipv4Addr::LOCALHOST.into(), true)
    }

    /// [`Lapi::start`], listening on `ip` (an address of this namespace that other namespaces
    /// reach, as the lab's host link). With `die_with_starter` false, crowdsec does not get
    /// PR_SET_PDEATHSIG, so that after [`Lapi::detach`] it outlives the starting process.
    pub fn start_on(ip: IpAddr, die_with_starter: bool) -> Result<Self, CrowdsecError> {
        let install = Install::locate()?;
        let dir = std::env::temp_dir().join(format!(
            "gz-crowdsec-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))
            .map_err(io_err(format!("creating {}", dir.display())))?;
        // Dropped on every error below: stops crowdsec and removes the directory.
        let mut lapi = Lapi {
            install,
            dir,
            addr: SocketAddr::from((ip, 0)),
            child: None,
            die_with_starter,
        };
        // A port from the kernel; crowdsec binds it a moment later. Another process taking it
        // in between makes crowdsec exit, and we retry with a new one.
        let mut attempts = 0;
        loop {
            lapi.addr = free_port(ip)?;
            lapi.write_config()?;
            match lapi.spawn() {
                Ok(()) => break,
                Err(CrowdsecError::Exited { .. }) if attempts < 2 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
        let credentials = lapi.path("local_api_credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            CSCLI_MACHINE,
            "--auto",
            "--force",
            "-f",
            &credentials,
        ])?;
        Ok(lapi)
    }

    /// Gives up the process and the directory without stopping or removing them.
    pub fn detach(mut self) -> DetachedLapi {
        let pid = self.child.take().map(|c| c.id()).unwrap_or(0);
        let dir = std::mem::take(&mut self.dir);
        DetachedLapi { pid, dir }
    }

    /// The directory of its config and database.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `http://127.0.0.1:<port>`, what a bouncer's `lapi_url` is.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the LAPI listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The crowdsec config file (for `cscli -c`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The binaries in use.
    pub fn install(&self) -> &Install {
        &self.install
    }

    /// Whether the crowdsec process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops crowdsec (SIGTERM, then SIGKILL after 5 s), keeping its config and database.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts crowdsec again on the same port with the same database (after [`Lapi::stop`];
    /// stops it first if it runs).
    pub fn restart(&mut self) -> Result<(), CrowdsecError> {
        self.stop();
        self.spawn()
    }

    /// `cscli bouncers add NAME -k KEY`: a bouncer API key for `X-Api-Key`.
    pub fn add_bouncer(&self, name: &str, key: &str) -> Result<(), CrowdsecError> {
        self.cscli(&["bouncers", "add", name, "-k", key]).map(drop)
    }

    /// `cscli bouncers delete NAME`: revokes its key.
    pub fn delete_bouncer(&self, name: &str) -> Result<(), CrowdsecError> {
        self.cscli(&["bouncers", "delete", name]).map(drop)
    }

    /// `cscli machines add NAME -p PASSWORD`: a validated watcher machine.
    pub fn add_machine(
        &self,
        name: &str,
        password: &str,
    ) -> Result<MachineCredentials, CrowdsecError> {
        let file = self.path(&format!("machine-{name}.yaml"));
        self.cscli(&[
            "machines", "add", name, "-p", password, "--force", "-f", &file,
        ])?;
        Ok(MachineCredentials {
            login: name.to_string(),
            password: password.to_string(),
        })
    }

    /// `cscli decisions add`: origin `cscli`, scenario = the reason.
    pub fn add_decision(&self, decision: &NewDecision) -> Result<(), CrowdsecError> {
        let flag = match decision.scope {
            Scope::Ip => "--ip",
            Scope::Range => "--range",
        };
        self.cscli(&[
            "decisions",
            "add",
            flag,
            &decision.value,
            "--duration",
            &decision.duration,
            "--reason",
            &decision.reason,
            "--type",
            &decision.kind,
        ])
        .map(drop)
    }

    /// `cscli decisions import` of many decisions at once (one alert; origin `cscli`).
    ///
    /// A 1.4.6 LAPI links an import's decisions to its alert in chunks, each a read then a
    /// write, and sqlite fails that write at once with `database is locked` when another
    /// connection committed in between (a bouncer's pull records its `last_pull`; seen here
    /// once in a CI run, a 10,000 import during 1 s pulls). Later crowdsec versions retry that
    /// step; here the import is retried with only the values a bouncer is not yet served: a
    /// value the LAPI serves already is not imported again (callers import new values).
    pub fn import_decisions(&self, decisions: &[NewDecision]) -> Result<(), CrowdsecError> {
        const TRIES: usize = 4;
        let mut todo: Vec<&NewDecision> = decisions.iter().collect();
        for attempt in 1..=TRIES {
            match self.import_once(&todo) {
                Err(CrowdsecError::Cscli {
                    args,
                    status,
                    stderr,
                }) if attempt < TRIES && stderr.contains("database is locked") => {
                    log::warn!("cscli decisions import: database is locked (try {attempt}); retrying what is not served");
                    std::thread::sleep(Duration::from_secs(1));
                    // Failing to tell what is served, the import's own error says more.
                    let served = self.served_values().map_err(|e| CrowdsecError::Cscli {
                        args,
                        status,
                        stderr: format!("{stderr}\n(then, checking what is served: {e})"),
                    })?;
                    todo.retain(|d| !served.contains(&d.value));
                    if todo.is_empty() {
                        return Ok(());
                    }
                }
                other => return other,
            }
        }
        unreachable!("the last try returns")
    }

    fn import_once(&self, decisions: &[&NewDecision]) -> Result<(), CrowdsecError> {
        let mut csv = String::from("duration,reason,scope,type,value\n");
        for d in decisions {
            let scope = match d.scope {
                Scope::Ip => "Ip",
                Scope::Range => "Range",
            };
            let _ = writeln!(
                csv,
                "{},{},{scope},{},{}",
                d.duration, d.reason, d.kind, d.value
            );
        }
        let file = self.dir.join("import.csv");
        std::fs::write(&file, csv).map_err(io_err(format!("writing {}", file.display())))?;
        let out = self.cscli(&["decisions", "import", "-i", &self.path("import.csv")]);
        let _ = std::fs::remove_file(&file);
        out.map(drop)
    }

    /// The values of every live decision, as a bouncer's startup pull serves them (under a
    /// bouncer key of the lab's own, so no other consumer's pull position moves). Used to retry
    /// an import whose values are new: a value served already is not imported again.
    pub fn served_values(&self) -> Result<std::collections::HashSet<String>, CrowdsecError> {
        const BOUNCER: &str = "groundzero-lab-check";
        // One fixed key: any process driving this LAPI can read with it.
        let key = "groundzerolabcheck0000000000000000";
        if !self
            .cscli(&["bouncers", "list", "-o", "raw"])?
            .contains(BOUNCER)
        {
            self.add_bouncer(BOUNCER, key)?;
        }
        let what = "GET /v1/decisions/stream?startup=true";
        let broken = |why: String| CrowdsecError::Output {
            args: what.to_string(),
            output: why,
        };
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            .map_err(io_err(format!("connecting to {}", self.addr)))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        // HTTP/1.0: the answer comes unchunked and ends when the LAPI closes.
        let request = format!(
            "GET /v1/decisions/stream?startup=true HTTP/1.0\r\nHost: {}\r\nX-Api-Key: {key}\r\n\r\n",
            self.addr
        );
        stream
            .write_all(request.as_bytes())
            .map_err(io_err(format!("sending {what}")))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(io_err(format!("reading the answer to {what}")))?;
        let text = String::from_utf8_lossy(&answer);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| broken(format!("no end of headers in {} bytes", answer.len())))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(broken(head.to_string()));
        }
        let reply: serde_json::Value =
            serde_json::from_str(body).map_err(|e| broken(format!("{e}")))?;
        Ok(reply["new"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["value"].as_str().map(str::to_string))
            .collect())
    }

    /// `cscli decisions delete`; how many decisions it deleted.
    pub fn delete_decisions(&self, filter: &DeleteFilter) -> Result<usize, CrowdsecError> {
        let id;
        let args: Vec<&str> = match filter {
            DeleteFilter::Ip(ip) => vec!["decisions", "delete", "--ip", ip],
            DeleteFilter::Range(range) => vec!["decisions", "delete", "--range", range],
            DeleteFilter::Id(n) => {
                id = n.to_string();
                vec!["decisions", "delete", "--id", &id]
            }
            DeleteFilter::All => vec!["decisions", "delete", "--all"],
        };
        let out = self.cscli_output(&args)?;
        // cscli logs `N decision(s) deleted` on stderr.
        let text = String::from_utf8_lossy(&out.stderr);
        text.split("msg=\"")
            .filter_map(|m| m.split_once(" decision(s) deleted"))
            .find_map(|(n, _)| n.trim().parse().ok())
            .ok_or_else(|| CrowdsecError::Output {
                args: args.join(" "),
                output: text.into_owned(),
            })
    }

    /// `cscli decisions list -a -o json`, flattened: every live decision of every alert (each
    /// with `duration, origin, scenario, scope, type, value, ...`). The LAPI's `null` for no
    /// alerts is an empty list. `-a`: without it a 1.4.6 cscli lists only the origins
    /// `crowdsec` and `cscli`, not what a watcher such as groundzero (`groundzero`) pushed.
    pub fn live_decisions(&self) -> Result<Vec<serde_json::Value>, CrowdsecError> {
        let args = ["decisions", "list", "-a", "-o", "json"];
        let text = self.cscli(&args)?;
        let alerts: serde_json::Value =
            serde_json::from_str(text.trim()).map_err(|e| CrowdsecError::Output {
                args: args.join(" "),
                output: format!("{e}: {text}"),
            })?;
        Ok(alerts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|alert| alert["decisions"].as_array())
            .flatten()
            .cloned()
            .collect())
    }

    /// Runs `cscli -c <our config> ARGS`, returning its stdout.
    pub fn cscli(&self, args: &[&str]) -> Result<String, CrowdsecError> {
        let out = self.cscli_output(args)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn cscli_output(&self, args: &[&str]) -> Result<Output, CrowdsecError> {
        let out = Command::new(&self.install.cscli)
            .arg("-c")
            .arg(self.config_path())
            .args(["--color", "no"])
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running {}", self.install.cscli.display())))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(CrowdsecError::Cscli {
                args: args.join(" "),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// crowdsec's own output and log files, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for name in ["stdout.log", "crowdsec.log", "crowdsec_api.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                let _ = writeln!(all, "--- {name}\n{}", text.trim_end());
            }
        }
        all
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn write_config(&self) -> Result<(), CrowdsecError> {
        let dir = self.dir.display();
        // No `online_client` (no central API), prometheus off, no flush (a scale test's 100,000
        // decisions must not be flushed), sqlite in WAL mode (quiet, faster).
        let config = format!(
            "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {dir}/\n  working_dir: .\n\
             config_paths:\n  config_dir: {dir}/\n  data_dir: {dir}/data/\n  simulation_path: {dir}/simulation.yaml\n  \
             hub_dir: {dir}/hub/\n  index_path: {dir}/hub/.index.json\n  notification_dir: {dir}/notifications/\n  \
             plugin_dir: {dir}/plugins/\n\
             db_config:\n  log_level: info\n  type: sqlite\n  db_path: {dir}/data/crowdsec.db\n  use_wal: true\n\
             api:\n  client:\n    insecure_skip_verify: false\n    credentials_path: {dir}/local_api_credentials.yaml\n  \
             server:\n    log_level: info\n    listen_uri: {addr}\n    profiles_path: {dir}/profiles.yaml\n    \
             trusted_ips:\n      - 127.0.0.1\n      - ::1\n\
             prometheus:\n  enabled: false\n",
            addr = self.addr,
        );
        // The package's default profile: alerts with remediation on an Ip become 4 h bans.
        let profiles = "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
                        decisions:\n - type: ban\n   duration: 4h\non_success: break\n";
        for (name, text) in [
            ("config.yaml", config.as_str()),
            ("profiles.yaml", profiles),
            ("simulation.yaml", "simulation: false\n"),
        ] {
            let path = self.dir.join(name);
            std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), CrowdsecError> {
        let log = self.dir.join("stdout.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let mut command = Command::new(&self.install.crowdsec);
        command
            .arg("-c")
            .arg(self.config_path())
            .args(["-no-cs", "-no-capi", "-info"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let die_with_starter = self.die_with_starter;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                if !die_with_starter {
                    return Ok(());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(io_err(format!(
            "starting {}",
            self.install.crowdsec.display()
        )))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(CrowdsecError::Exited {
                    status: status.to_string(),
                    logs: self.logs(),
                });
            }
            if answers(self.addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(CrowdsecError::NotReady {
                    addr: self.addr,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        self.stop();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn free_port(ip: IpAddr) -> Result<SocketAddr, CrowdsecError> {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map_err(io_err(format!("finding a free port on {ip}")))
}

/// Whether an HTTP server answers on `addr` (any status: without a key the LAPI says 403).
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        "GET /v1/decisions/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}
