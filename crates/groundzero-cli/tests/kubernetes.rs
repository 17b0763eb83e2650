//! deploy/kubernetes: `kubectl kustomize` renders it, and the rendered objects, read into
//! k8s-openapi's types, hold what the daemon needs and no more: the capabilities, the mounts its
//! config names, a readiness probe on `/v1/health`, the metrics port, and the same command as
//! the Debian package's systemd unit. No cluster runs here; this is what can be checked for real.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use groundzero_daemon::config::Validated;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, Container, Service, Volume},
};
use serde::{de::DeserializeOwned, Deserialize};

const UNIT: &str = include_str!("../../../deploy/systemd/groundzero.service");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `kubectl kustomize DIR`, split into its documents.
fn render(dir: &Path) -> Vec<serde_yaml::Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running kubectl (scripts/setup.sh's machine has it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("a rendered document is YAML"))
        .collect()
}

/// The one rendered object of `kind`, read as `T`.
fn one<T: DeserializeOwned>(docs: &[serde_yaml::Value], kind: &str) -> T {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    serde_yaml::from_value(found[0].clone())
        .unwrap_or_else(|e| panic!("the {kind} does not fit k8s-openapi's type: {e}"))
}

fn container(ds: &DaemonSet) -> &Container {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let containers = &spec.expect("the DaemonSet has a pod spec").containers;
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn volume<'a>(ds: &'a DaemonSet, container: &Container, mount_path: &str) -> &'a Volume {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == mount_path)
        .unwrap_or_else(|| panic!("nothing is mounted on {mount_path}"));
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap();
    spec.volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume named {}", mount.name))
}

fn host_path(v: &Volume) -> &str {
    &v.host_path
        .as_ref()
        .unwrap_or_else(|| panic!("volume {} is not a hostPath", v.name))
        .path
}

/// The rendered config, validated by the daemon's own parser.
fn config(docs: &[serde_yaml::Value], ds: &DaemonSet) -> Validated {
    let map: ConfigMap = one(docs, "ConfigMap");
    let name = map.metadata.name.as_deref().unwrap();
    let config_volume = volume(ds, container(ds), "/etc/groundzero");
    assert_eq!(
        config_volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some(name),
        "/etc/groundzero is the generated ConfigMap (with its content hash)"
    );
    let text = &map.data.as_ref().unwrap()["groundzero.toml"];
    Validated::parse(text, Path::new("configmap:groundzero.toml"))
        .unwrap_or_else(|e| panic!("the ConfigMap's config does not validate: {e}"))
}

#[test]
fn daemonset_runs_the_units_command_with_only_the_capabilities_it_needs() {
    let docs = render(&repo().join("deploy/kubernetes"));
    let ds: DaemonSet = one(&docs, "DaemonSet");
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.host_network,
        Some(true),
        "XDP needs the node's interfaces"
    );
    let c = container(&ds);

    let exec_start: Vec<&str> = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
        .split_whitespace()
        .collect();
    assert_eq!(
        c.command.as_deref().unwrap(),
        exec_start.as_slice(),
        "the container runs what the package's unit runs"
    );

    let sc = c.security_context.as_ref().expect("a security context");
    assert_eq!(
        sc.privileged,
        Some(false),
        "privileged only via the component"
    );
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let mut added = caps.add.clone().unwrap_or_default();
    added.sort();
    assert_eq!(added, ["BPF", "NET_ADMIN", "PERFMON", "SYS_RESOURCE"]);
}

#[test]
fn mounts_probe_and_metrics_match_the_config() {
    let docs = render(&repo().join("deploy/kubernetes"));
    let ds: DaemonSet = one(&docs, "DaemonSet");
    let c = container(&ds);
    let config = config(&docs, &ds);

    // Pins on the host's bpffs: they outlive the pod, as they outlive a restart of the unit.
    let bpffs = volume(&ds, c, "/sys/fs/bpf");
    assert_eq!(host_path(bpffs), "/sys/fs/bpf");
    assert!(config.raw.pin_dir.starts_with("/sys/fs/bpf"));
    let state = volume(&ds, c, &config.raw.state_dir.to_string_lossy());
    assert_eq!(host_path(state), config.raw.state_dir.to_string_lossy());
    let socket_dir = config.raw.api.socket.parent().unwrap().to_string_lossy();
    assert!(volume(&ds, c, &socket_dir).empty_dir.is_some());

    // The token from a Secret, mounted where the config looks for it.
    let token = config.raw.api.token_file.as_ref().expect("a TCP API token");
    let secret = volume(&ds, c, &token.parent().unwrap().to_string_lossy());
    assert_eq!(
        secret
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("groundzero-api-token")
    );

    // Readiness: /v1/health on the config's socket.
    let probe = c.readiness_probe.as_ref().expect("a readiness probe");
    let command = probe.exec.as_ref().and_then(|e| e.command.clone()).unwrap();
    let socket = config.raw.api.socket.to_string_lossy().to_string();
    assert!(command.contains(&socket), "{command:?} asks {socket}");
    assert!(
        command.iter().any(|a| a.ends_with("/v1/health")),
        "{command:?}"
    );

    // Metrics: the container port is the config's listener, the Service and ServiceMonitor use it.
    let listen = config.metrics_listen.expect("metrics on");
    let port = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a metrics port");
    assert_eq!(port.container_port, i32::from(listen.port()));
    let service: Service = one(&docs, "Service");
    let service_port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    assert_eq!(service_port.name.as_deref(), Some("metrics"));
    let monitor = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor")
        .expect("a ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let labels = service.metadata.labels.as_ref().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            labels.get(k.as_str().unwrap()).map(String::as_str),
            v.as_str(),
            "the ServiceMonitor selects the Service"
        );
    }
}

#[test]
fn privileged_component_switches_privileged_on() {
    let overlay = std::env::temp_dir().join(format!("gz-k8s-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&overlay).unwrap();
    // kustomize takes only relative paths: up from the overlay to `/`, then down to the base.
    let base = repo().join("deploy/kubernetes").canonicalize().unwrap();
    let up = "../".repeat(overlay.components().count() - 1);
    let base = format!("{up}{}", base.strip_prefix("/").unwrap().display());
    std::fs::write(
        overlay.join("kustomization.yaml"),
        format!("resources: [{base}]\ncomponents: [{base}/components/privileged]\n"),
    )
    .unwrap();
    let docs = render(&overlay);
    let _ = std::fs::remove_dir_all(&overlay);
    let ds: DaemonSet = one(&docs, "DaemonSet");
    let sc = container(&ds).security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(true));
}
