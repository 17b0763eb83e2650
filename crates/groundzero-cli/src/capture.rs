//! `groundzero capture`: asks the daemon (which owns the maps and the perf buffers) for a
//! capture and writes the pcapng stream to a file or stdout, then says on stderr how many
//! packets it holds and how many were lost.

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use groundzero::text::for_terminal_lines;
use groundzero_api::{capture::CaptureQuery, client::Client};
use pcap_file::{
    pcapng::{blocks::enhanced_packet::EnhancedPacketOption, Block, PcapNgParser},
    PcapError,
};

use crate::remote::{self, Target};

/// Capture packets in XDP (through the daemon) into a pcapng file, each with its verdict,
/// reason and matching entry as a comment.
#[derive(clap::Args)]
pub struct Args {
    /// Only packets arriving on this interface (one groundzero is attached to); all if absent.
    #[arg(short = 'i', long)]
    interface: Option<String>,
    /// Write the pcapng here (`-` = stdout).
    #[arg(short = 'w', long)]
    write: PathBuf,
    /// Which verdicts: drop, pass or all.
    #[arg(long, default_value = "drop", value_parser = ["drop", "pass", "all"])]
    verdict: String,
    /// Only this reason (blocked_exact, blocked_cidr, rate_limited, no_match, ...); repeatable.
    #[arg(long)]
    reason: Vec<String>,
    /// Only sources inside this prefix (or this address).
    #[arg(long)]
    source: Option<String>,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 100)]
    count: u32,
    /// Stop after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Bytes of each packet to keep.
    #[arg(long, default_value_t = 256)]
    snaplen: u32,
    /// Packets per second at most; the kernel skips (and counts) the rest.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
}

impl Args {
    fn query(&self) -> CaptureQuery {
        CaptureQuery {
            count: Some(self.count.to_string()),
            duration: Some(format!("{}ms", self.duration.as_millis())),
            interface: self.interface.clone(),
            rate: Some(self.rate.to_string()),
            reason: (!self.reason.is_empty()).then(|| self.reason.join(",")),
            snaplen: Some(self.snaplen.to_string()),
            source: self.source.clone(),
            verdict: Some(self.verdict.clone()),
        }
    }
}

pub fn run(target: Target, args: Args) -> Result<()> {
    let client = Client::new(remote::endpoint(&target)?);
    let mut out: Box<dyn Write> = if args.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&args.write)
                .with_context(|| format!("creating {}", args.write.display()))?,
        ))
    };
    let mut summary = Summary::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let query = args.query();
    let result = runtime.block_on(client.capture(&query, |bytes| {
        out.write_all(bytes)?;
        // Flushed as it comes: `-w -` may feed a live reader (`| tshark -r -`).
        out.flush()?;
        summary.feed(bytes);
        Ok(())
    }));
    if let Err(e) = result {
        if args.write.as_os_str() != "-" && summary.packets == 0 {
            let _ = std::fs::remove_file(&args.write);
        }
        anyhow::bail!(for_terminal_lines(&e.to_string()));
    }
    out.flush().context("writing the capture")?;
    eprintln!(
        "{} packets captured, {} lost (over --rate or a full buffer){}",
        summary.packets,
        summary.lost,
        if summary.damaged {
            "; the stream could not be read back to count it"
        } else {
            ""
        }
    );
    Ok(())
}

/// Counts packets and their drop counts as the stream goes by.
#[derive(Default)]
struct Summary {
    pending: Vec<u8>,
    parser: Option<PcapNgParser>,
    packets: u64,
    lost: u64,
    damaged: bool,
}

impl Summary {
    fn feed(&mut self, bytes: &[u8]) {
        if self.damaged {
            return;
        }
        self.pending.extend_from_slice(bytes);
        let mut used = 0;
        loop {
            let rest = &self.pending[used..];
            let step = match &mut self.parser {
                None => PcapNgParser::new(rest).map(|(left, parser)| {
                    self.parser = Some(parser);
                    (left, None)
                }),
                Some(parser) => parser
                    .next_block(rest)
                    .map(|(left, block)| (left, Some(block.into_owned()))),
            };
            match step {
                Ok((left, block)) => {
                    used = self.pending.len() - left.len();
                    if let Some(Block::EnhancedPacket(epb)) = block {
                        self.packets += 1;
                        for option in &epb.options {
                            if let EnhancedPacketOption::DropCount(n) = option {
                                self.lost += n;
                            }
                        }
                    }
                }
                Err(PcapError::IncompleteBuffer) => break,
                Err(_) => {
                    self.damaged = true;
                    break;
                }
            }
        }
        self.pending.drain(..used);
    }
}
