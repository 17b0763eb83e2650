//! The programs groundzero is compared with on the same packets: a minimal `return XDP_PASS`
//! (the floor of `BPF_PROG_TEST_RUN` itself) and xdp-filter's own BPF object from Debian's
//! xdp-tools. Both run under the same `BPF_PROG_TEST_RUN` command as groundzero.

use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{PerCpuHashMap, PerCpuValues},
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use groundzero::sys::{self, ProgLoadAttr, TestRunAttr};

const BPF_PROG_TYPE_XDP: u32 = 6;

/// An XDP program of two instructions, `r0 = ACTION; exit`, loaded with the raw
/// `bpf(BPF_PROG_LOAD)` syscall.
///
/// With `XDP_PASS` it is the floor: what `BPF_PROG_TEST_RUN` reports for it is the harness's own
/// cost per run (the loop, the context set-up, the indirect call); every other program's cost
/// above it is what that program itself adds. With `XDP_TX` it is the flood generator of part 3
/// (run in `BPF_F_TEST_XDP_LIVE_FRAMES` mode, like xdp-trafficgen).
pub struct RawXdp {
    fd: OwnedFd,
}

/// The floor program.
pub type Floor = RawXdp;

impl RawXdp {
    /// `r0 = XDP_PASS; exit`.
    pub fn load() -> Result<Self> {
        Self::returning(2)
    }

    pub fn returning(action: u8) -> Result<Self> {
        // struct bpf_insn { u8 code; u8 dst:4, src:4; s16 off; s32 imm; }
        // BPF_ALU64 | BPF_MOV | BPF_K = 0xb7, dst r0, imm ACTION; BPF_JMP | BPF_EXIT = 0x95.
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0x00, 0, 0, action, 0, 0, 0]),
            u64::from_le_bytes([0x95, 0x00, 0, 0, 0, 0, 0, 0]),
        ];
        let license = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            // As aya loads groundzero's: the source walk (part 2) tail-calls into either.
            expected_attach_type: sys::BPF_XDP,
            ..Default::default()
        };
        // SAFETY: `attr` is a valid BPF_PROG_LOAD attribute whose pointers outlive the call;
        // on success the kernel returns a new fd that nothing else owns.
        let fd = unsafe { sys::bpf(sys::cmd::PROG_LOAD, &mut attr).map(|fd| sys::owned_fd(fd)) }
            .with_context(|| format!("BPF_PROG_LOAD of r0 = {action}; exit"))?;
        Ok(Self { fd })
    }

    /// A program loaded elsewhere (part 7's hand-assembled generator).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        test_run_fd(self.fd.as_raw_fd(), packet, repeat)
    }

    /// Runs the program `repeat` times in live-frames mode on `frame` as if it had arrived on
    /// `ifindex` (in the calling thread's network namespace): an `XDP_TX` verdict really
    /// transmits the frame out of that interface.
    pub fn transmit_live(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<()> {
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: std::mem::size_of_val(&ctx) as u32,
            ctx_in: ctx.as_ptr() as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: 64,
            ..Default::default()
        };
        // SAFETY: as in `test_run_fd`, plus `ctx_in` covering `ctx_size_in` bytes.
        unsafe { sys::bpf(sys::cmd::PROG_TEST_RUN, &mut attr) }
            .context("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES")?;
        Ok(())
    }
}

/// `BPF_F_TEST_XDP_LIVE_FRAMES` (include/uapi/linux/bpf.h).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// `BPF_PROG_TEST_RUN` on any program fd: the verdict and the kernel's mean time per run.
pub fn test_run_fd(fd: RawFd, packet: &[u8], repeat: u32) -> Result<(u32, Duration)> {
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: packet.len() as u32,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.test`; `data_in` covers `data_size_in` bytes and no
    // output buffer is given, so the kernel writes only into `attr`.
    unsafe { sys::bpf(sys::cmd::PROG_TEST_RUN, &mut attr) }.context("BPF_PROG_TEST_RUN")?;
    Ok((attr.retval, Duration::from_nanos(attr.duration.into())))
}

/// Where xdp-filter's BPF objects are (Debian's libxdp1 package).
pub const XDP_FILTER_DIR: &str = "/usr/lib/x86_64-linux-gnu/bpf";
/// xdp-filter's object for `xdp-filter load --mode ... --policy allow -f ip`: everything passes
/// except what its IPv4/IPv6 maps list ("allow" is the default policy: listed = dropped). Its
/// features are IPv4 and IPv6 only (no ports, no Ethernet), the closest match to a source-address
/// blocklist. (`dny` objects are default-deny: listed = passed, everything else dropped.)
pub const XDP_FILTER_OBJECT: &str = "xdpfilt_alw_ip.o";
pub const XDP_FILTER_PROGRAM: &str = "xdpfilt_alw_ip";

/// `MAP_FLAG_SRC` from xdp-filter's common_kern_user.h: the entry matches source addresses.
const MAP_FLAG_SRC: u64 = 1;

/// xdp-filter's program, loaded from Debian's object with aya, its maps pinned in a private
/// bpffs directory (the object asks for pinning by name) that is removed on drop.
pub struct XdpFilter {
    bpf: Ebpf,
    /// Dropped after `bpf` (field order): the maps are unpinned once the program is gone.
    _pins: PinDir,
}

impl XdpFilter {
    pub fn load(max_entries: Option<u32>) -> Result<Self> {
        let path = Path::new(XDP_FILTER_DIR).join(XDP_FILTER_OBJECT);
        let object = std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (Debian's xdp-tools/libxdp1; run scripts/setup.sh)",
                path.display()
            )
        })?;
        let pins = PinDir::create("xdpfilt")?;
        let mut loader = EbpfLoader::new();
        for map in ["filter_ipv4", "filter_ipv6", "xdp_stats_map"] {
            loader.map_pin_path(map, pins.path.join(map));
        }
        if let Some(n) = max_entries {
            loader.map_max_entries("filter_ipv4", n);
            loader.map_max_entries("filter_ipv6", n);
        }
        let mut bpf = loader
            .load(&object)
            .with_context(|| format!("loading {} with aya", path.display()))?;
        let program: &mut Xdp = bpf
            .program_mut(XDP_FILTER_PROGRAM)
            .context("xdp-filter's program is missing from its object")?
            .try_into()?;
        program.load().context("verifying xdp-filter's program")?;
        Ok(Self { bpf, _pins: pins })
    }

    /// Adds `addr` as a source to drop, the way `xdp-filter ip ADDR --mode src` does: a per-CPU
    /// value with `MAP_FLAG_SRC` on every CPU.
    pub fn block(&mut self, addr: std::net::IpAddr) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let values = PerCpuValues::try_from(vec![MAP_FLAG_SRC; cpus])?;
        match addr {
            std::net::IpAddr::V4(a) => {
                let mut map: PerCpuHashMap<_, [u8; 4], u64> =
                    PerCpuHashMap::try_from(self.bpf.map_mut("filter_ipv4").context("map")?)?;
                map.insert(a.octets(), values, 0)?;
            }
            std::net::IpAddr::V6(a) => {
                let mut map: PerCpuHashMap<_, [u8; 16], u64> =
                    PerCpuHashMap::try_from(self.bpf.map_mut("filter_ipv6").context("map")?)?;
                map.insert(a.octets(), values, 0)?;
            }
        }
        Ok(())
    }

    fn program(&self) -> Result<&Xdp> {
        Ok(self
            .bpf
            .program(XDP_FILTER_PROGRAM)
            .context("xdp-filter's program")?
            .try_into()?)
    }

    pub fn test_run(&self, packet: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let result = self.program()?.test_run(TestRunOptions {
            data_in: Some(packet),
            repeat,
            ..Default::default()
        })?;
        Ok((result.return_value, result.duration))
    }

    /// Attaches to `iface` (in the calling thread's network namespace) in driver mode.
    pub fn attach_native(&mut self, iface: &str) -> Result<()> {
        let program: &mut Xdp = self
            .bpf
            .program_mut(XDP_FILTER_PROGRAM)
            .context("xdp-filter's program")?
            .try_into()?;
        program.attach(iface, aya::programs::XdpMode::Driver)?;
        Ok(())
    }
}

/// A bpffs directory of this process (`/sys/fs/bpf/gzbench-<what>-<pid>`), removed on drop with
/// whatever was pinned in it, so no map outlives the benchmark.
pub struct PinDir {
    path: PathBuf,
}

pub const BPFFS: &str = "/sys/fs/bpf";
const PIN_PREFIX: &str = "gzbench-";

impl PinDir {
    pub fn create(what: &str) -> Result<Self> {
        ensure_bpffs()?;
        let path = Path::new(BPFFS).join(format!("{PIN_PREFIX}{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Removes pin directories of benchmark processes that are gone (a `kill -9`).
    pub fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(BPFFS) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PIN_PREFIX) {
                continue;
            }
            let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Mounts bpffs at /sys/fs/bpf if it is not mounted (scripts/setup.sh does the same).
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1) == Some(&BPFFS) && fields.get(2) == Some(&"bpf")
    }) {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", BPFFS])
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("could not mount bpffs at {BPFFS}");
    }
    Ok(())
}

const BPF_MAP_TYPE_HASH: u32 = 1;

/// The kernel's part of a batched load, alone: a fresh hash map shaped like groundzero's exact
/// lists (preallocated, `capacity` slots, 16-byte values), filled with `keys` (each `key_size`
/// bytes) by `BPF_MAP_UPDATE_BATCH` in chunks of 65,536, with nothing else done in user space.
/// Returns the time of the updates only.
pub fn raw_batch_load(keys: &[u8], key_size: usize, capacity: u32) -> Result<Duration> {
    let mut attr = sys::MapCreateAttr {
        map_type: BPF_MAP_TYPE_HASH,
        key_size: key_size as u32,
        value_size: 16,
        max_entries: capacity,
        map_flags: 0,
    };
    // SAFETY: a valid BPF_MAP_CREATE attribute; on success, a new fd nothing else owns.
    let fd = unsafe { sys::bpf(sys::cmd::MAP_CREATE, &mut attr).map(|fd| sys::owned_fd(fd)) }
        .context("BPF_MAP_CREATE")?;
    let n = keys.len() / key_size;
    let values = vec![0u8; 16 * n];
    const CHUNK: usize = 1 << 16;
    let start = std::time::Instant::now();
    for first in (0..n).step_by(CHUNK) {
        let count = CHUNK.min(n - first);
        let (_, result) = sys::map_update_batch(
            fd.as_fd(),
            &keys[first * key_size..(first + count) * key_size],
            &values[first * 16..(first + count) * 16],
            count,
            0,
        );
        result.context("BPF_MAP_UPDATE_BATCH")?;
    }
    let elapsed = start.elapsed();
    drop(fd);
    Ok(elapsed)
}
