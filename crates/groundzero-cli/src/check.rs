//! `groundzero check-list FILE...`: parse list files, report every bad line, touch nothing.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use groundzero::text::{for_terminal, for_terminal_lines};

#[derive(clap::Args)]
pub struct Args {
    /// List files: one address or prefix per line, `#` or `;` comments.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let mut bad = 0;
    for path in &args.files {
        match load_list(path) {
            Ok(nets) => {
                let v4 = nets
                    .iter()
                    .filter(|n| matches!(n, groundzero::IpNet::V4(_)))
                    .count();
                println!(
                    "{}: {} entries ({} IPv4, {} IPv6)",
                    for_terminal(&path.display().to_string()),
                    nets.len(),
                    v4,
                    nets.len() - v4
                );
            }
            Err(e) => {
                bad += 1;
                // The bad lines are echoed from the file (already escaped by the parser); the
                // path and I/O errors are escaped here as well.
                eprintln!("{}", for_terminal_lines(&format!("{e:#}")));
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} file(s) have errors", args.files.len());
    }
    Ok(())
}

/// Reads and parses a list file; the error names the file and every bad line.
pub fn load_list(path: &PathBuf) -> Result<Vec<groundzero::IpNet>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading list file {}", path.display()))?;
    Ok(groundzero::parse_list(&text, &path.display().to_string())?)
}
