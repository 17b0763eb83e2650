//! The `groundzero` command. Thin: each subcommand is a module that calls the library.
mod attach;
mod check;
mod demo;
mod table;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Drop traffic from blocked sources in XDP, before the kernel spends anything on it.
#[derive(Parser)]
#[command(name = "groundzero", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces with block/allow lists and print live counters until Ctrl-C.
    Attach(attach::Args),
    /// Validate list files (one address or prefix per line) without touching the kernel.
    CheckList(check::Args),
    /// Run a self-contained demo in throw-away network namespaces (no real interface touched).
    Demo(demo::Args),
}

fn main() -> Result<()> {
    // The library logs through `log`; the binary decides what is printed (RUST_LOG, default warn).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match Cli::parse().command {
        Command::Attach(args) => attach::run(args),
        Command::CheckList(args) => check::run(args),
        Command::Demo(args) => demo::run(args),
    }
}
