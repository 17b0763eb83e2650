//! The machine's memory hierarchy, measured with a pointer chase: the latency of one dependent
//! load from each level (L1, L2, the last-level cache, DRAM), so part 2's cost of a lookup with
//! a different source per packet can be read as a number of memory latencies.
//!
//! Each buffer holds one pointer per cache line, linked in a random cyclic order (Sattolo's
//! shuffle: one cycle through every line), so each load depends on the one before and the
//! prefetchers cannot guess the next line. The DRAM buffer is chased twice: on 4 KiB pages (a TLB
//! miss and, in a VM, a nested page walk on nearly every load) and on 2 MiB transparent huge
//! pages (few TLB misses), which separates the page walk from the memory access itself.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::{scale::Rng, stats::Summary};

const LINE: usize = 64;

/// One buffer size chased.
#[derive(Clone, Debug)]
pub struct Level {
    pub label: &'static str,
    pub bytes: usize,
    pub huge_pages: bool,
    /// Whether the kernel backed the buffer with huge pages (AnonHugePages of the mapping).
    pub huge_backed: Option<bool>,
    /// ns per dependent load, over rounds.
    pub ns: Summary,
}

#[derive(Clone, Debug)]
pub struct Hierarchy {
    pub levels: Vec<Level>,
    /// Last-level cache size the kernel reports for CPU 0 (bytes), if any.
    pub llc_bytes: Option<usize>,
    /// Loads per timed chunk.
    pub steps: usize,
}

impl Hierarchy {
    /// The DRAM latency on ordinary 4 KiB pages (what a vmalloc'd BPF map sees), ns.
    pub fn dram_ns(&self) -> Option<f64> {
        self.levels
            .iter()
            .find(|l| l.label == DRAM && !l.huge_pages)
            .map(|l| l.ns.median)
    }

    /// The DRAM latency on huge pages, ns.
    pub fn dram_huge_ns(&self) -> Option<f64> {
        self.levels
            .iter()
            .find(|l| l.label == DRAM && l.huge_pages)
            .map(|l| l.ns.median)
    }
}

pub const DRAM: &str = "DRAM";

/// Last-level cache size of CPU 0 from sysfs (the highest cache index).
fn llc_bytes() -> Option<usize> {
    let mut best = None;
    for index in 0..8 {
        let Ok(s) = std::fs::read_to_string(format!(
            "/sys/devices/system/cpu/cpu0/cache/index{index}/size"
        )) else {
            continue;
        };
        let s = s.trim();
        let bytes = if let Some(k) = s.strip_suffix('K') {
            k.parse::<usize>().ok().map(|k| k * 1024)
        } else if let Some(m) = s.strip_suffix('M') {
            m.parse::<usize>().ok().map(|m| m << 20)
        } else {
            s.parse().ok()
        };
        best = bytes.or(best);
    }
    best
}

/// Chases every level in `rounds` short chunks of `steps` loads (well under a millisecond
/// each, shorter than a scheduler time slice): on a shared machine a chunk that was preempted
/// is an outlier, not a bias of the median.
pub fn measure(smoke: bool) -> Result<Hierarchy> {
    let llc = llc_bytes();
    // A DRAM buffer four times the last-level cache (at least 256 MiB): a VM's reported LLC
    // may be the host's whole L3, and at 4× most loads miss it whoever else uses it.
    let dram = if smoke {
        32 << 20
    } else {
        (llc.unwrap_or(64 << 20) * 4).max(256 << 20)
    };
    let llc_fit = llc.map_or(8 << 20, |l| (l / 4).max(1 << 20));
    let llc_size = if smoke { 4 << 20 } else { llc_fit };
    let sizes: [(&'static str, usize, bool); 6] = [
        ("L1", 16 << 10, false),
        ("L2", 512 << 10, false),
        ("LLC", llc_size, false),
        ("LLC", llc_size, true),
        (DRAM, dram, false),
        (DRAM, dram, true),
    ];
    let (rounds, steps) = if smoke { (11, 1_000) } else { (2001, 1_000) };
    let mut rng = Rng::new(0x6472_616d);
    let mut levels = Vec::new();
    for (label, bytes, huge) in sizes {
        let mut buffer = Chase::new(bytes, huge, &mut rng)?;
        let mut ns = Vec::new();
        // One untimed pass over (up to a million of) the lines warms what can be warm.
        buffer.run((bytes / LINE).min(1 << 20));
        for _ in 0..rounds {
            ns.push(buffer.run(steps));
        }
        crate::progress(&format!(
            "dram: {label} {} KiB{}: {:.1} ns per load",
            bytes >> 10,
            if huge { " (huge pages)" } else { "" },
            crate::stats::median(&ns)
        ));
        levels.push(Level {
            label,
            bytes,
            huge_pages: huge,
            huge_backed: buffer.huge_backed(),
            ns: Summary::of(&ns),
        });
    }
    Ok(Hierarchy {
        levels,
        llc_bytes: llc,
        steps,
    })
}

/// An anonymous mapping holding one `usize` pointer (a line index) per cache line.
struct Chase {
    ptr: *mut u8,
    len: usize,
    position: usize,
}

impl Chase {
    fn new(bytes: usize, huge: bool, rng: &mut Rng) -> Result<Self> {
        let lines = bytes / LINE;
        if lines < 2 {
            bail!("a pointer chase needs at least two lines");
        }
        // SAFETY: an anonymous private mapping; checked for failure below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let advice = if huge {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: advice on the mapping just made; failure only means no huge pages.
        unsafe { libc::madvise(ptr, bytes, advice) };
        let chase = Self {
            ptr: ptr.cast(),
            len: bytes,
            position: 0,
        };
        // Sattolo's shuffle: a single cycle through every line.
        let mut order: Vec<u32> = (0..lines as u32).collect();
        for i in (1..lines).rev() {
            let j = rng.below(i as u64) as usize;
            order.swap(i, j);
        }
        for i in 0..lines {
            let from = order[i] as usize;
            let to = order[(i + 1) % lines] as usize;
            // SAFETY: `from` < lines, so the write is inside the mapping and aligned.
            unsafe { chase.ptr.add(from * LINE).cast::<usize>().write(to) };
        }
        Ok(chase)
    }

    /// Follows `steps` pointers; ns per load.
    fn run(&mut self, steps: usize) -> f64 {
        let mut p = self.position;
        let start = Instant::now();
        for _ in 0..steps {
            // SAFETY: every stored index is < lines (written in `new`).
            p = unsafe { self.ptr.add(p * LINE).cast::<usize>().read_volatile() };
        }
        let ns = start.elapsed().as_nanos() as f64 / steps as f64;
        self.position = std::hint::black_box(p);
        ns
    }

    /// Whether /proc/self/smaps shows this mapping backed by huge pages.
    fn huge_backed(&self) -> Option<bool> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = format!("{:x}-", self.ptr as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines.next()?;
        for l in lines {
            if let Some(v) = l.strip_prefix("AnonHugePages:") {
                let kib: usize = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kib * 1024 >= self.len / 2);
            }
        }
        None
    }
}

impl Drop for Chase {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
