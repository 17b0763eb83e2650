//! The node's receive path set up the same for both runs, and its CPU time as bench part 3
//! accounts it.
//!
//! veth hands a frame to its peer's NAPI (as a NIC would) only with XDP attached, or with GRO
//! on and a sender without TSO; otherwise the stack takes it straight from the sender's
//! transmit. So for both runs GRO is on at the node and TSO off at the bridge's end of its veth:
//! with or without XDP, every frame goes through the node's NAPI. For the CPU accounting runs,
//! NAPI runs in its own kernel thread (threaded NAPI), whose CPU time (`/proc/<tid>/schedstat`,
//! ns) is what receiving cost, apart from the sender's. Latency probes run with threaded NAPI
//! off (softirq, as on a host by default): a kernel thread's wake-up would dominate them.

use std::process::Command;

use super::AbError;

/// ethtool's value commands (the legacy SIOCETHTOOL interface): get and set.
pub const GRO: (u32, u32) = (0x2b, 0x2c);
pub const TSO: (u32, u32) = (0x1e, 0x1f);
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// `ethtool -k/-K IFACE gro|tso` without ethtool; call on a thread in the interface's namespace.
pub fn ethtool(iface: &str, (get, put): (u32, u32), set: Option<bool>) -> std::io::Result<bool> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    if iface.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!("{iface}: name too long")));
    }
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let mut value = match set {
        Some(on) => EthtoolValue {
            cmd: put,
            data: on.into(),
        },
        None => EthtoolValue { cmd: get, data: 0 },
    };
    let mut req = Ifreq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..iface.len()].copy_from_slice(iface.as_bytes());
    use std::os::fd::AsRawFd;
    // SAFETY: `req` is a valid ifreq whose data points at a live ethtool_value.
    let ret = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCETHTOOL, &mut req) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data != 0)
}

/// One ethtool feature of one interface, set for the A/B and restored when dropped.
pub struct Feature {
    netns: crate::netns::Netns,
    iface: String,
    cmds: (u32, u32),
    was: bool,
}

impl Feature {
    pub fn set(netns: &str, iface: &str, cmds: (u32, u32), on: bool) -> Result<Self, AbError> {
        let ns = crate::netns::Netns::open(netns)?;
        let what = format!("ethtool {:#x} on {iface} in {netns}", cmds.1);
        let was = ns
            .try_run(|| ethtool(iface, cmds, None))?
            .map_err(AbError::io(what.clone()))?;
        // Set only what differs: some features cannot be set at all (a bridge port's TSO),
        // even to the value they have.
        if was != on {
            ns.try_run(|| ethtool(iface, cmds, Some(on)))?
                .map_err(AbError::io(what))?;
        }
        Ok(Feature {
            netns: ns,
            iface: iface.into(),
            cmds,
            was,
        })
    }
}

impl Drop for Feature {
    fn drop(&mut self) {
        let (iface, cmds, was) = (self.iface.clone(), self.cmds, self.was);
        if self
            .netns
            .try_run(|| ethtool(&iface, cmds, None))
            .ok()
            .and_then(Result::ok)
            == Some(was)
        {
            return;
        }
        match self.netns.try_run(|| ethtool(&iface, cmds, Some(was))) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("restoring ethtool {:#x} on {iface}: {e}", cmds.1),
            Err(e) => log::warn!("restoring ethtool {:#x} on {iface}: {e}", cmds.1),
        }
    }
}

/// The node's receive path set up for the A/B (see the module's comment); restores what it
/// found when dropped.
pub struct Accounting {
    netns: String,
    iface: String,
    threaded_was: String,
    _gro: Feature,
}

impl Accounting {
    /// `iface` in `netns` receives. (The sender's TSO is the caller's: see [`sender_without_tso`].)
    pub fn set_up(netns: &str, iface: &str) -> Result<Self, AbError> {
        let gro = Feature::set(netns, iface, GRO, true)?;
        let threaded_was = sysfs(netns, iface, None)?;
        Ok(Accounting {
            netns: netns.into(),
            iface: iface.into(),
            threaded_was,
            _gro: gro,
        })
    }

    /// NAPI in its own kernel thread (`true`) or in softirq.
    pub fn set_threaded(&self, on: bool) -> Result<(), AbError> {
        sysfs(&self.netns, &self.iface, Some(if on { "1" } else { "0" })).map(drop)
    }

    /// CPU ns of every NAPI thread of the interface so far.
    pub fn napi_ns(&self) -> Option<u64> {
        let threads = napi_threads(&self.iface);
        if threads.is_empty() {
            return None;
        }
        Some(threads.iter().filter_map(|t| schedstat_ns(*t)).sum())
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        if let Err(e) = sysfs(&self.netns, &self.iface, Some(self.threaded_was.trim())) {
            log::warn!("restoring threaded NAPI on {}: {e}", self.iface);
        }
    }
}

/// TSO off on the node veth's peer while XDP is detached. Attaching XDP turns the peer's TSO
/// off and makes it unsettable; detaching gives it back, and veth then passes the peer's
/// packets to the stack without NAPI. Drop this before attaching again (it restores TSO).
pub fn sender_without_tso(netns: &str, port: &str) -> Result<Feature, AbError> {
    Feature::set(netns, port, TSO, false)
}

/// Reads (or writes `value` to) `/sys/class/net/<iface>/threaded` as the namespace sees it:
/// sysfs shows the devices of the namespace it was mounted in, so through `ip netns exec`.
fn sysfs(netns: &str, iface: &str, value: Option<&str>) -> Result<String, AbError> {
    let path = format!("/sys/class/net/{iface}/threaded");
    let script = match value {
        Some(v) => format!("echo {v} > {path}"),
        None => format!("cat {path}"),
    };
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "sh", "-c", &script])
        .output()
        .map_err(AbError::io(format!("running ip netns exec {netns}")))?;
    if !out.status.success() {
        return Err(AbError::Setup(format!(
            "{script} in {netns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kernel threads polling a NAPI instance of `iface` (`napi/<iface>-<id>`).
fn napi_threads(iface: &str) -> Vec<i32> {
    let prefix = format!("napi/{iface}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// CPU time of a task, ns (`/proc/<tid>/schedstat`, first field).
pub fn schedstat_ns(tid: i32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of the calling thread, ns.
pub fn this_thread_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Packets the interface has received (veth counts every frame its NAPI takes, whatever XDP
/// then decides).
pub fn rx_packets(netns: &str, iface: &str) -> Result<u64, AbError> {
    let out = Command::new("ip")
        .args(["-n", netns, "-s", "-j", "link", "show", "dev", iface])
        .output()
        .map_err(AbError::io(format!(
            "running ip -n {netns} link show {iface}"
        )))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| AbError::Setup(format!("ip -j link show {iface} in {netns}: {e}")))?;
    json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .ok_or_else(|| AbError::Setup(format!("no rx packets counter for {iface} in {netns}")))
}
