//! `groundzero replay`: captures written here (pcap and pcapng, every supported link type) go
//! through the real XDP program and through the host model; both must give every packet the
//! verdict this test expects, and bad files must be clear errors naming the packet. Real traffic
//! between namespaces, captured by tshark on the veth and on `any`, replays with the verdict of
//! each source.
mod common;

use std::{
    collections::BTreeMap,
    fs::File,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use groundzero_lab::{
    craft::{self, L4, TPID_8021Q},
    netns::{veth, Netns},
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
        PcapNgWriter,
    },
    DataLink,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_groundzero");
const TSHARK: &str = "/usr/bin/tshark";

/// The lists every replay here runs with: given as flags and as files, both sides.
const BLOCK_FLAGS: [&str; 2] = ["203.0.113.7", "2001:db8::7"];
const BLOCK_FILE: &str = "198.18.0.0/16\n2001:db8:1::/48\n203.0.113.9\n";
const ALLOW_FLAGS: [&str; 1] = ["198.18.5.0/24"];
const ALLOW_FILE: &str = "# allowed over the exact block\n203.0.113.8/29\n";

/// A frame and the verdict it must get: (action, reason, entry).
struct Case {
    frame: Vec<u8>,
    action: &'static str,
    reason: &'static str,
    entry: Option<&'static str>,
    /// An IP packet (the cooked and raw-IP captures carry only these).
    ip: bool,
}

fn udp(src: &str) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = match src {
        IpAddr::V4(_) => "198.51.100.1".parse().unwrap(),
        IpAddr::V6(_) => "2001:db8:d::1".parse().unwrap(),
    };
    craft::ip_packet(src, dst, L4::UDP, b"groundzero replay")
}

fn cases() -> Vec<Case> {
    let case = |frame, action, reason, entry, ip| Case {
        frame,
        action,
        reason,
        entry,
        ip,
    };
    // An IPv4 header cut after 10 bytes.
    let mut cut = udp("203.0.113.7");
    cut.truncate(14 + 10);
    vec![
        case(
            udp("203.0.113.7"),
            "drop",
            "blocked_exact",
            Some("203.0.113.7/32"),
            true,
        ),
        case(
            udp("198.18.77.1"),
            "drop",
            "blocked_cidr",
            Some("198.18.0.0/16"),
            true,
        ),
        case(
            udp("198.18.5.5"),
            "pass",
            "allowlisted",
            Some("198.18.5.0/24"),
            true,
        ),
        case(
            udp("203.0.113.9"),
            "pass",
            "allowlisted",
            Some("203.0.113.8/29"),
            true,
        ),
        case(udp("100.64.0.1"), "pass", "no_match", None, true),
        case(
            udp("2001:db8::7"),
            "drop",
            "blocked_exact",
            Some("2001:db8::7/128"),
            true,
        ),
        case(
            udp("2001:db8:1:ff::1"),
            "drop",
            "blocked_cidr",
            Some("2001:db8:1::/48"),
            true,
        ),
        case(udp("2001:db8:ffff::1"), "pass", "no_match", None, true),
        case(
            craft::with_vlans(&udp("198.18.1.1"), &[(TPID_8021Q, 42)]),
            "drop",
            "blocked_cidr",
            Some("198.18.0.0/16"),
            false,
        ),
        case(
            craft::arp_request("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap()),
            "pass",
            "non_ip",
            None,
            false,
        ),
        case(cut, "pass", "malformed", None, false),
    ]
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gz-replay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_pcap(path: &Path, link: DataLink, frames: &[Vec<u8>]) {
    let header = PcapHeader {
        datalink: link,
        ..Default::default()
    };
    let mut w = PcapWriter::with_header(File::create(path).unwrap(), header).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_millis(1_700_000_000_000 + i as u64);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
}

/// A pcapng file with one interface per `(link, frames)`, packets interleaved in order.
fn write_pcapng(path: &Path, interfaces: &[(DataLink, Vec<Vec<u8>>)]) {
    let mut w = PcapNgWriter::new(File::create(path).unwrap()).unwrap();
    for (link, _) in interfaces {
        w.write_pcapng_block(InterfaceDescriptionBlock::new(*link, 65535))
            .unwrap();
    }
    let longest = interfaces.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (id, (_, frames)) in interfaces.iter().enumerate() {
            if let Some(f) = frames.get(i) {
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id: id as u32,
                    timestamp: Duration::from_millis(1_700_000_000_000 + i as u64),
                    original_len: f.len() as u32,
                    data: f.as_slice().into(),
                    options: vec![],
                })
                .unwrap();
            }
        }
    }
}

/// The frame's IP packet under a Linux cooked v1 header, as `tcpdump -i any` wrote it.
fn sll(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, 0, 6];
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&frame[12..]);
    assert_eq!(out.len(), frame.len() + 2);
    out
}

/// The same under a Linux cooked v2 header (libpcap 1.10 and later).
fn sll2(frame: &[u8]) -> Vec<u8> {
    let mut out = frame[12..14].to_vec();
    out.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 6]);
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&frame[14..]);
    out
}

fn replay(file: &Path, dir: &Dir, extra: &[&str]) -> Output {
    std::fs::write(dir.path("block.txt"), BLOCK_FILE).unwrap();
    std::fs::write(dir.path("allow.txt"), ALLOW_FILE).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("replay").arg(file);
    cmd.arg("--blocklist").arg(dir.path("block.txt"));
    cmd.arg("--allowlist").arg(dir.path("allow.txt"));
    for b in BLOCK_FLAGS {
        cmd.args(["--block", b]);
    }
    for a in ALLOW_FLAGS {
        cmd.args(["--allow", a]);
    }
    cmd.args(extra);
    cmd.output().expect("running groundzero replay")
}

/// `replay --json` (kernel, or model with `model`): one object per line, exactly four keys.
fn verdicts(file: &Path, dir: &Dir, model: bool) -> Vec<(u64, String, String, Option<String>)> {
    let mut extra = vec!["--json"];
    if model {
        extra.push("--model");
    }
    let out = replay(file, dir, &extra);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON: {e}"));
            let obj = v.as_object().expect("each line is an object");
            assert_eq!(obj.len(), 4, "exactly index, action, reason, entry: {line}");
            (
                obj["index"].as_u64().expect("index"),
                obj["action"].as_str().expect("action").to_string(),
                obj["reason"].as_str().expect("reason").to_string(),
                obj["entry"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn expected(cases: &[&Case]) -> Vec<(u64, String, String, Option<String>)> {
    cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                i as u64,
                c.action.to_string(),
                c.reason.to_string(),
                c.entry.map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn kernel_and_model_give_every_packet_of_a_pcap_the_expected_verdict() {
    common::require_root();
    let dir = Dir::new("ethernet");
    let cases = cases();
    let file = dir.path("ethernet.pcap");
    write_pcap(
        &file,
        DataLink::ETHERNET,
        &cases.iter().map(|c| c.frame.clone()).collect::<Vec<_>>(),
    );
    let want = expected(&cases.iter().collect::<Vec<_>>());
    let kernel = verdicts(&file, &dir, false);
    let model = verdicts(&file, &dir, true);
    assert_eq!(kernel, want, "the kernel's verdicts");
    assert_eq!(model, kernel, "the model disagrees with the kernel");

    // The text form: a line per packet, then the summary with counts and the top entry.
    let out = replay(&file, &dir, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("{} packets through the XDP program", cases.len())),
        "{text}"
    );
    assert!(text.contains("5 dropped, 6 passed"), "{text}");
    let blocked_cidr = text
        .lines()
        .find(|l| l.trim_start().starts_with("blocked_cidr"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        blocked_cidr.ends_with(" 3"),
        "three packets blocked by a prefix: {blocked_cidr}"
    );
    let top = text
        .split("top matched entries:")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    let first = top.lines().nth(1).unwrap_or_default();
    assert!(
        first.contains("198.18.0.0/16") && first.trim_end().ends_with(" 2"),
        "{text}"
    );
}

#[test]
fn cooked_raw_ip_and_pcapng_captures_get_the_ethernet_verdicts() {
    common::require_root();
    let dir = Dir::new("links");
    let cases = cases();
    let ip: Vec<&Case> = cases.iter().filter(|c| c.ip).collect();
    let want = expected(&ip);
    type Convert = fn(&[u8]) -> Vec<u8>;
    let links: [(&str, DataLink, Convert); 4] = [
        ("sll", DataLink::LINUX_SLL, sll),
        ("sll2", DataLink::LINUX_SLL2, sll2),
        ("raw", DataLink::RAW, |f| f[14..].to_vec()),
        ("ipv4-ipv6", DataLink::IPV4, |f| f[14..].to_vec()),
    ];
    for (name, link, convert) in links {
        let file = dir.path(&format!("{name}.pcap"));
        write_pcap(
            &file,
            link,
            &ip.iter().map(|c| convert(&c.frame)).collect::<Vec<_>>(),
        );
        assert_eq!(verdicts(&file, &dir, false), want, "kernel, {name}");
        assert_eq!(verdicts(&file, &dir, true), want, "model, {name}");
    }

    // pcapng with two interfaces of different link types, packets interleaved.
    let file = dir.path("two.pcapng");
    let eth: Vec<Vec<u8>> = ip.iter().map(|c| c.frame.clone()).collect();
    let cooked: Vec<Vec<u8>> = ip.iter().map(|c| sll2(&c.frame)).collect();
    write_pcapng(
        &file,
        &[(DataLink::ETHERNET, eth), (DataLink::LINUX_SLL2, cooked)],
    );
    let twice: Vec<&Case> = ip.iter().flat_map(|c| [*c, *c]).collect();
    assert_eq!(
        verdicts(&file, &dir, false),
        expected(&twice),
        "kernel, pcapng"
    );
    assert_eq!(
        verdicts(&file, &dir, true),
        expected(&twice),
        "model, pcapng"
    );
}

/// A failed replay: its stderr, after asserting it failed and printed nothing on stdout.
fn failure(file: &Path, dir: &Dir) -> String {
    let out = replay(file, dir, &["--json", "--model"]);
    assert!(!out.status.success(), "replay of a bad file must fail");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn an_unsupported_link_type_is_named() {
    let dir = Dir::new("wifi");
    let file = dir.path("wifi.pcap");
    write_pcap(&file, DataLink::IEEE802_11, &[vec![0u8; 40]]);
    let err = failure(&file, &dir);
    assert!(
        err.contains("IEEE802_11") && err.contains("(105)") && err.contains("packet 0"),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors_naming_the_packet() {
    let dir = Dir::new("bad");
    let frames: Vec<Vec<u8>> = cases().into_iter().take(3).map(|c| c.frame).collect();

    // pcap cut in the middle of the third packet's data.
    let file = dir.path("cut.pcap");
    write_pcap(&file, DataLink::ETHERNET, &frames);
    let len = std::fs::metadata(&file).unwrap().len();
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let err = failure(&file, &dir);
    assert!(
        err.contains("packet 2") && err.contains("truncated or corrupt"),
        "{err}"
    );

    // pcap whose second record claims more captured bytes than it had on the wire.
    let file = dir.path("corrupt.pcap");
    write_pcap(&file, DataLink::ETHERNET, &frames);
    let mut bytes = std::fs::read(&file).unwrap();
    let second = 24 + 16 + frames[0].len();
    // Its captured length runs far past the end of the file.
    bytes[second + 8..second + 12].copy_from_slice(&100_000u32.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    let err = failure(&file, &dir);
    assert!(err.contains("packet 1"), "{err}");

    // pcapng cut inside the last block.
    let file = dir.path("cut.pcapng");
    write_pcapng(&file, &[(DataLink::ETHERNET, frames.clone())]);
    let len = std::fs::metadata(&file).unwrap().len();
    File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let err = failure(&file, &dir);
    assert!(err.contains("packet 2"), "{err}");

    // Not a capture at all.
    let file = dir.path("text.pcap");
    std::fs::write(&file, "hello, this is not a capture\n").unwrap();
    let err = failure(&file, &dir);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
}

/// Starts `tshark` in `ns` writing `file` in `format` from `iface` with link type `link`;
/// returns once it captures.
fn tshark(ns: &Netns, iface: &str, link: &str, file: &Path, format: &str) -> std::process::Child {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            TSHARK,
            "-q",
            "-i",
            iface,
            "-F",
            format,
            "-y",
            link,
            "-w",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tshark");
    // The file header is written when the capture starts.
    let started = common::wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        std::fs::metadata(file).is_ok_and(|m| m.len() > 0)
    });
    assert!(started, "tshark did not start capturing on {iface}");
    child
}

/// The link type of a capture file (of its first interface, for pcapng).
fn link_of(file: &Path) -> DataLink {
    if file.extension().is_some_and(|e| e == "pcapng") {
        let mut r = pcap_file::pcapng::PcapNgReader::new(File::open(file).unwrap()).unwrap();
        while let Some(block) = r.next_block() {
            if let pcap_file::pcapng::Block::InterfaceDescription(idb) = block.unwrap() {
                return idb.linktype;
            }
        }
        panic!("no interface in {file:?}");
    }
    PcapReader::new(File::open(file).unwrap())
        .unwrap()
        .header()
        .datalink
}

/// Stops a capture started by [`tshark`] (SIGINT: it finishes writing the file).
fn stop(mut child: std::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success() || status.code().is_none(),
        "tshark: {status}"
    );
}

/// The capture's packets from each source, as tshark reads them.
fn tshark_sources(file: &Path) -> BTreeMap<String, usize> {
    let out = Command::new(TSHARK)
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-e", "ip.src"])
        .output()
        .expect("running tshark -r");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_source = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        *by_source.entry(line.trim().to_string()).or_default() += 1;
    }
    by_source
}

#[test]
fn real_traffic_captured_by_tshark_replays_with_the_verdicts_of_its_sources() {
    common::require_root();
    assert!(
        Path::new(TSHARK).exists(),
        "{TSHARK} is missing: run scripts/setup.sh (Debian's tshark package)"
    );
    let dir = Dir::new("tshark");
    let peer = Netns::create("rpl-p").unwrap();
    let target = Netns::create("rpl-t").unwrap();
    for ns in [&peer, &target] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
            .unwrap();
    }
    veth(&peer, "gzrpl-p", &target, "gzrpl-t").unwrap();
    target
        .ip(&["addr", "add", "198.18.60.1/24", "dev", "gzrpl-t"])
        .unwrap();
    // (source, packets sent, verdict, entry)
    let traffic = [
        ("198.18.60.2", 5, "blocked_exact", Some("198.18.60.2/32")),
        ("198.18.60.3", 4, "allowlisted", Some("198.18.60.3/32")),
        ("198.18.60.9", 3, "blocked_cidr", Some("198.18.60.8/29")),
        ("198.18.60.20", 2, "no_match", None),
    ];
    for (source, ..) in traffic {
        peer.ip(&["addr", "add", &format!("{source}/24"), "dev", "gzrpl-p"])
            .unwrap();
    }

    // At once: on the veth (Ethernet, pcapng) and on `any` (Linux cooked v1 in classic pcap,
    // v2 in pcapng).
    let on_veth = dir.path("veth.pcapng");
    let on_any = dir.path("any.pcap");
    let on_any2 = dir.path("any-sll2.pcapng");
    let captures = [
        tshark(&target, "gzrpl-t", "EN10MB", &on_veth, "pcapng"),
        tshark(&target, "any", "LINUX_SLL", &on_any, "pcap"),
        tshark(&target, "any", "LINUX_SLL2", &on_any2, "pcapng"),
    ];
    peer.run(|| {
        for (source, n, ..) in traffic {
            let socket = std::net::UdpSocket::bind(format!("{source}:0")).unwrap();
            for _ in 0..n {
                socket.send_to(b"replay me", "198.18.60.1:9").unwrap();
            }
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    captures.into_iter().for_each(stop);

    let args = [
        "--block",
        "198.18.60.2",
        "--block",
        "198.18.60.8/29",
        "--allow",
        "198.18.60.3",
    ];
    assert_eq!(
        [link_of(&on_veth), link_of(&on_any), link_of(&on_any2)],
        [
            DataLink::ETHERNET,
            DataLink::LINUX_SLL,
            DataLink::LINUX_SLL2
        ]
    );
    for file in [&on_veth, &on_any, &on_any2] {
        let sources = tshark_sources(file);
        for (source, n, ..) in traffic {
            assert_eq!(
                sources.get(source),
                Some(&n),
                "tshark reads {file:?}: {sources:?}"
            );
        }
        let lines = |model: bool| -> Vec<Value> {
            let mut extra = vec!["replay"];
            extra.extend(args);
            extra.push("--json");
            if model {
                extra.push("--model");
            }
            let out = Command::new(BIN)
                .args(&extra[..1])
                .arg(file)
                .args(&extra[1..])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let kernel = lines(false);
        assert_eq!(kernel, lines(true), "kernel and model on {file:?}");
        for (source, n, reason, entry) in traffic {
            let matching = kernel
                .iter()
                .filter(|v| v["reason"] == reason && v["entry"].as_str() == entry)
                .count();
            let expected = if entry.is_none() {
                // Unlisted: at least the sent packets (the target's own replies pass too).
                assert!(matching >= n, "{source} in {file:?}: {kernel:?}");
                continue;
            } else {
                n
            };
            assert_eq!(
                matching, expected,
                "{source} ({reason}) in {file:?}: {kernel:?}"
            );
        }
    }
}

#[test]
fn a_config_in_monitor_mode_passes_what_it_would_drop() {
    common::require_root();
    let dir = Dir::new("monitor");
    let file = dir.path("two.pcap");
    write_pcap(
        &file,
        DataLink::ETHERNET,
        &[udp("203.0.113.7"), udp("198.18.77.1")],
    );
    let config = dir.path("groundzero.toml");
    std::fs::write(&config, "monitor = true\n").unwrap();
    let config = config.to_str().unwrap();
    let want = vec![
        (
            0,
            "pass".into(),
            "monitor_exact".into(),
            Some("203.0.113.7/32".into()),
        ),
        (
            1,
            "pass".into(),
            "monitor_cidr".into(),
            Some("198.18.0.0/16".into()),
        ),
    ];
    for model in [false, true] {
        let mut extra = vec!["--json", "--config", config];
        if model {
            extra.push("--model");
        }
        let out = replay(&file, &dir, &extra);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<(u64, String, String, Option<String>)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["index"].as_u64().unwrap(),
                    v["action"].as_str().unwrap().to_string(),
                    v["reason"].as_str().unwrap().to_string(),
                    v["entry"].as_str().map(str::to_string),
                )
            })
            .collect();
        assert_eq!(got, want, "model: {model}");
    }
}
