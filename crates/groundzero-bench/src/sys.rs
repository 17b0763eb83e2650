//! The machine a run happened on, CPU pinning, and the kernel's memory accounting of BPF maps.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};

/// What a reader needs to judge the numbers.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub kernel: String,
    pub memory_gib: f64,
    pub date: String,
    pub commit: String,
    pub virtualization: String,
    pub tools: Vec<(String, String)>,
    /// /proc/loadavg's 1-, 5- and 15-minute averages when the run started: other work on the
    /// machine shows here.
    pub load_at_start: String,
    /// The kernel's CPU vulnerability mitigations that are in force (file name, line), from
    /// /sys/devices/system/cpu/vulnerabilities: retpolines and return thunks make every call
    /// and return of a BPF program dearer.
    pub mitigations: Vec<(String, String)>,
}

/// The lines of /sys/devices/system/cpu/vulnerabilities other than "Not affected".
pub fn mitigations() -> Vec<(String, String)> {
    let mut lines: Vec<(String, String)> =
        std::fs::read_dir("/sys/devices/system/cpu/vulnerabilities")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        let line = std::fs::read_to_string(e.path()).ok()?.trim().to_string();
                        (line != "Not affected")
                            .then(|| (e.file_name().to_string_lossy().into_owned(), line))
                    })
                    .collect()
            })
            .unwrap_or_default();
    lines.sort();
    lines
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let hypervisor = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == "hypervisor"));
        let dmi = std::fs::read_to_string("/sys/class/dmi/id/product_name")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let virtualization = match (hypervisor, dmi.is_empty()) {
            (true, false) => format!("virtual machine ({dmi})"),
            (true, true) => "virtual machine".into(),
            (false, _) => "bare metal".into(),
        };
        let dirty = run("git", &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false);
        let commit = run("git", &["rev-parse", "--short", "HEAD"])
            .map(|s| {
                format!(
                    "{}{}",
                    s.trim(),
                    if dirty { " (with local changes)" } else { "" }
                )
            })
            .unwrap_or_else(|| "unknown".into());
        let mut tools = Vec::new();
        for package in ["xdp-tools", "nftables", "iptables", "ipset"] {
            if let Some(v) = run("dpkg-query", &["-W", "-f=${Version}", package]) {
                tools.push((package.to_string(), v.trim().to_string()));
            }
        }
        Self {
            cpus: online_cpus(),
            model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            memory_gib: memory_kib / (1024.0 * 1024.0),
            date: run("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            commit,
            virtualization,
            tools,
            load_at_start: load_average(),
            mitigations: mitigations(),
        }
    }
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPUs online (not the affinity of this thread, which `available_parallelism` reports).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 {
        1
    } else {
        n as usize
    }
}

/// Pins the calling thread (or `tid`, 0 = caller) to one CPU.
pub fn pin_to_cpu(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("pinning thread {tid} to CPU {cpu}"));
    }
    Ok(())
}

/// Lets the calling thread run on every CPU again.
pub fn unpin() -> Result<()> {
    // SAFETY: as above.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..online_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()).context("unpinning");
    }
    Ok(())
}

/// One BPF map this process holds, as the kernel accounts it (`/proc/self/fdinfo`).
#[derive(Clone, Debug)]
pub struct MapMemory {
    pub name: String,
    pub max_entries: u64,
    /// `memlock:` in fdinfo: the kernel's estimate of the map's memory (map_mem_usage), bytes.
    pub bytes: u64,
}

/// Every BPF map this process has a file descriptor for, by map id.
pub fn process_maps() -> Result<BTreeMap<u32, MapMemory>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").context("listing /proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let fd = entry.file_name().to_string_lossy().into_owned();
        let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(id), Some(bytes), Some(max_entries)) =
            (field("map_id:"), field("memlock:"), field("max_entries:"))
        else {
            continue;
        };
        let name = aya::maps::MapInfo::from_id(id as u32)
            .ok()
            .and_then(|m| m.name_as_str().map(str::to_string))
            .unwrap_or_default();
        out.insert(
            id as u32,
            MapMemory {
                name,
                max_entries,
                bytes,
            },
        );
    }
    Ok(out)
}
