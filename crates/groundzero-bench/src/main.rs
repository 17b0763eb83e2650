//! `groundzero-bench`: every benchmark of groundzero in one run, side by side with its peers,
//! written to BENCHMARKS.md with PNG plots. See BENCHMARKS.md for the method of each part.

mod agreement;
mod crowdsec;
mod dram;
mod flood;
mod handmade;
mod multicore;
mod per_packet;
mod pieces;
mod plot;
mod progs;
mod report;
mod report_agreement;
mod report_memory;
mod report_multicore;
mod report_pieces;
mod scale;
mod source_walk;
mod stats;
mod sys;

use std::{path::PathBuf, time::Instant};

use anyhow::{ensure, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    about = "Benchmarks groundzero against a do-nothing XDP program, xdp-filter, \
nftables, iptables+ipset and a user-space drop; writes BENCHMARKS.md and PNG plots"
)]
struct Args {
    /// Tiny sizes and repeats: proves every part still runs (well under a minute). Writes to
    /// --out (give a temporary directory).
    #[arg(long)]
    smoke: bool,
    /// Where BENCHMARKS.md goes (PNGs go to OUT/docs/bench/). Default: the repository root.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these parts (1 per packet, 2 scale, 3 flood, 4 overheads, 5 CrowdSec bouncers
    /// side by side, 6 the verdict taken apart, 7 both CPUs at once, 8 part 1's protocol against
    /// 7 × 1M back to back), e.g. `--parts 1,3`.
    /// The report then says which parts were left out.
    #[arg(long, value_delimiter = ',')]
    parts: Option<Vec<u8>>,
    /// Override the number of flood packets.
    #[arg(long)]
    flood_packets: Option<u64>,
    /// Override part 1's rounds (a shorter run on a busy machine; the report states the count).
    #[arg(long)]
    rounds: Option<usize>,
    /// Override part 1's BPF_PROG_TEST_RUN repeat per measurement.
    #[arg(long)]
    repeat: Option<u32>,
    /// Part 5: override the decisions on startup (the delta is a tenth of them).
    #[arg(long)]
    crowdsec_decisions: Option<usize>,
    /// Part 5: override the flood runs per bouncer (0: no flood).
    #[arg(long)]
    crowdsec_flood_repeats: Option<usize>,
    /// Part 6: also measure this build of the groundzero XDP object (e.g. a copy of
    /// target/bpf/bpfel-unknown-none/release/groundzero from an older commit), side by side.
    #[arg(long)]
    baseline_object: Option<PathBuf>,
}

/// Sizes and repeats of one run.
#[derive(Clone, Debug)]
pub struct Config {
    pub smoke: bool,
    /// BPF_PROG_TEST_RUN repeat per measurement.
    pub repeat: u32,
    /// Rounds of part 1 (each round measures every case once).
    pub rounds: usize,
    pub scale_rounds: usize,
    pub exact_levels: Vec<usize>,
    pub cidr_levels: Vec<usize>,
    pub cold_samples: usize,
    /// Part 2's flood from many sources in one test run (crate::source_walk): sources per walk
    /// (at most this many, and at most the list's entries), and rounds.
    pub walk_sources: usize,
    pub walk_rounds: usize,
    pub scrape_rounds: usize,
    pub load_entries: usize,
    pub load_repeats: usize,
    pub flood_packets: u64,
    pub flood_chunk: u32,
    pub quiet_seconds: f64,
    pub flood_filler: usize,
    pub flood_repeats: usize,
    /// Part 5: decisions on startup, and the delta added then deleted.
    pub crowdsec_decisions: usize,
    pub crowdsec_delta: usize,
    /// Part 5: flood runs per bouncer (each starts the bouncer and waits for the whole set).
    pub crowdsec_flood_repeats: usize,
    /// Part 7: flood frames per generator (one per core) and run, repeats, and test-run rounds.
    pub multicore_packets: u64,
    pub multicore_repeats: usize,
    pub multicore_rounds: usize,
    /// Parts 6 and 7: an older groundzero object to measure next to this build.
    pub baseline_object: Option<PathBuf>,
    /// Which parts to run (1-8); all but 5 in a smoke run, all by default.
    pub parts: Vec<u8>,
}

impl Config {
    /// The bytes of `--baseline-object`, if given.
    pub fn baseline_bytes(&self) -> anyhow::Result<Option<Vec<u8>>> {
        use anyhow::Context as _;
        self.baseline_object
            .as_ref()
            .map(|path| std::fs::read(path).with_context(|| format!("reading {}", path.display())))
            .transpose()
    }

    fn full() -> Self {
        Self {
            smoke: false,
            repeat: 1_000_000,
            // Many short rounds rather than few long ones: a noisy neighbour then spoils a
            // round, not the run (the ratios are per round, summarised by their median).
            rounds: 41,
            scale_rounds: 7,
            exact_levels: vec![1, 1_000, 100_000, 1_000_000],
            cidr_levels: vec![0, 1_000, 100_000],
            cold_samples: 4096,
            walk_sources: 1 << 19,
            walk_rounds: 5,
            scrape_rounds: 3,
            load_entries: 1_000_000,
            load_repeats: 5,
            flood_packets: 12_000_000,
            flood_chunk: 1_000_000,
            quiet_seconds: 1.0,
            flood_filler: 10_000,
            flood_repeats: 3,
            crowdsec_decisions: 100_000,
            crowdsec_delta: 10_000,
            crowdsec_flood_repeats: 2,
            multicore_packets: 4_000_000,
            multicore_repeats: 3,
            multicore_rounds: 11,
            baseline_object: None,
            parts: vec![1, 2, 3, 4, 5, 6, 7, 8],
        }
    }

    fn smoke() -> Self {
        Self {
            smoke: true,
            repeat: 10_000,
            rounds: 3,
            scale_rounds: 2,
            exact_levels: vec![1, 1_000],
            cidr_levels: vec![0, 100],
            cold_samples: 64,
            walk_sources: 1 << 10,
            walk_rounds: 2,
            scrape_rounds: 1,
            load_entries: 10_000,
            load_repeats: 1,
            flood_packets: 400_000,
            flood_chunk: 100_000,
            quiet_seconds: 0.2,
            flood_filler: 100,
            flood_repeats: 1,
            crowdsec_decisions: 1_000,
            crowdsec_delta: 100,
            crowdsec_flood_repeats: 0,
            multicore_packets: 100_000,
            multicore_repeats: 1,
            multicore_rounds: 2,
            baseline_object: None,
            // Not part 5: a real LAPI, imports and two bouncers take longer than the rest of
            // the smoke run (`--smoke --parts 5` runs its tiny version).
            parts: vec![1, 2, 3, 4, 6, 7, 8],
        }
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr with the time since start.
pub fn progress(what: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:7.1} s] {what}");
}

fn main() -> Result<()> {
    let args = Args::parse();
    START.get_or_init(Instant::now);
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmarks load XDP programs and make network namespaces: run as root"
    );
    let mut config = if args.smoke {
        Config::smoke()
    } else {
        Config::full()
    };
    if let Some(parts) = &args.parts {
        config.parts = parts.clone();
    }
    if let Some(n) = args.flood_packets {
        config.flood_packets = n;
    }
    if let Some(n) = args.rounds {
        config.rounds = n.max(1);
    }
    if let Some(n) = args.repeat {
        config.repeat = n.max(1);
    }
    if let Some(n) = args.crowdsec_decisions {
        config.crowdsec_decisions = n.max(10);
        config.crowdsec_delta = n.max(10) / 10;
    }
    if let Some(n) = args.crowdsec_flood_repeats {
        config.crowdsec_flood_repeats = n;
    }
    config.baseline_object = args.baseline_object.clone();
    let out_dir = match &args.out {
        Some(dir) => dir.clone(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    std::fs::create_dir_all(&out_dir)?;
    // Whatever a killed run left behind, then a Ctrl-C handler that removes this run's
    // namespaces (their veths, XDP attachments, nftables and iptables state go with them) and
    // pins. Normal exits and errors clean up through Drop.
    progs::PinDir::remove_stale();
    groundzero_lab::netns::Netns::remove_stale();
    ctrlc::set_handler(|| {
        eprintln!("interrupted: cleaning up");
        cleanup_own();
        std::process::exit(130);
    })?;
    plot::init_font()?;

    let machine = sys::Machine::describe();
    progress(&format!(
        "{} × {}, kernel {}, {}",
        machine.cpus,
        machine.model,
        machine.kernel,
        if config.smoke {
            "smoke run"
        } else {
            "full run"
        }
    ));
    // Parts 1 and 2 measure on one CPU (the last); part 3 pins its own threads.
    sys::pin_to_cpu(0, machine.cpus - 1)?;
    let per_packet = if config.parts.contains(&1) {
        progress("part 1: cost per packet");
        Some(per_packet::run(&config)?)
    } else {
        None
    };
    let pieces = if config.parts.contains(&6) {
        progress("part 6: the verdict taken apart");
        Some(pieces::run(&config)?)
    } else {
        None
    };
    let scale = if config.parts.contains(&2) || config.parts.contains(&4) {
        progress("part 2: scale (and part 4: scrape cost)");
        Some(scale::run(&config)?)
    } else {
        None
    };
    sys::unpin()?;
    let flood = if config.parts.contains(&3) || config.parts.contains(&4) {
        progress("part 3: flood defence (and part 4: tracing on the whole path)");
        let f = flood::run(&config)?;
        sys::unpin()?;
        Some(f)
    } else {
        None
    };
    let crowdsec = if config.parts.contains(&5) {
        progress("part 5: CrowdSec bouncers side by side");
        let c = crowdsec::run(&config)?;
        sys::unpin()?;
        Some(c)
    } else {
        None
    };
    let multicore = if config.parts.contains(&7) {
        progress("part 7: both CPUs at once");
        let m = multicore::run(&config)?;
        sys::unpin()?;
        Some(m)
    } else {
        None
    };
    let agreement = if config.parts.contains(&8) {
        progress("part 8: part 1's protocol against back-to-back runs");
        sys::pin_to_cpu(0, machine.cpus - 1)?;
        let a = agreement::run(&config)?;
        sys::unpin()?;
        Some(a)
    } else {
        None
    };
    let command = if config.smoke {
        "sudo cargo run -p groundzero-bench --release -- --smoke --out \"$(mktemp -d)\"".to_string()
    } else {
        let extra: Vec<String> = std::env::args().skip(1).collect();
        if extra.is_empty() {
            "sudo cargo run -p groundzero-bench --release".to_string()
        } else {
            format!(
                "sudo cargo run -p groundzero-bench --release -- {}",
                extra.join(" ")
            )
        }
    };
    let results = report::Results {
        machine,
        config,
        per_packet,
        scale,
        flood,
        crowdsec,
        multicore,
        agreement,
        pieces,
        seconds: START.get().expect("set").elapsed().as_secs_f64(),
        command,
    };
    report::write(&out_dir, &results)?;
    progress(&format!(
        "wrote {} and {}/",
        out_dir.join("BENCHMARKS.md").display(),
        out_dir.join(report::FIGURES).display()
    ));
    Ok(())
}

/// Removes this process's namespaces and pin directories (for the Ctrl-C handler, which cannot
/// run the owners' Drop).
fn cleanup_own() {
    let pid = std::process::id().to_string();
    let own = |name: &str, prefix: &str| {
        name.starts_with(prefix) && name.rsplit('-').next() == Some(pid.as_str())
    };
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if own(&name, groundzero_lab::netns::PREFIX) {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", &name])
                    .status();
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(progs::BPFFS) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // Part 5's work directories pin as `gzbench-cs-<pid>-<name>`.
            if own(&name, "gzbench-")
                || name.contains(&format!("-{pid}-")) && name.starts_with("gzbench-")
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
