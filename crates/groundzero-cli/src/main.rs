//! The `groundzero` command. Thin: each subcommand is a module that calls the library.
mod assets;
mod attach;
mod capture;
mod check;
mod daemon;
mod demo;
mod journey_compare;
mod journey_view;
mod lab;
mod remote;
mod replay;
mod table;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// Drop traffic from blocked sources in XDP, before the kernel spends anything on it.
#[derive(Parser)]
#[command(name = "groundzero", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    target: remote::Target,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to interfaces with block/allow lists and print live counters until Ctrl-C.
    Attach(attach::Args),
    /// Validate list files (one address or prefix per line) without touching the kernel.
    CheckList(check::Args),
    /// Capture packets at XDP (through the daemon) into a pcapng file, with why each was dropped.
    Capture(capture::Args),
    /// Run every packet of a pcap/pcapng file through the verdict: what would these lists do?
    Replay(replay::Args),
    /// Run a self-contained demo in throw-away network namespaces (no real interface touched).
    Demo(demo::Args),
    /// Build, inspect or remove the lab topology (node, peers, attackers) and run its traffic.
    Lab(lab::Args),
    /// Run the daemon: attach per the config, keep the lists, serve the management API.
    Run(daemon::RunArgs),
    /// Validate a daemon config file.
    CheckConfig(daemon::CheckArgs),
    /// Remove every pin (detaching XDP) and optionally the saved state. The daemon must be stopped.
    Cleanup(daemon::CleanupArgs),
    /// Write man pages and shell completions into a directory (for packagers).
    #[command(hide = true)]
    GenerateAssets(assets::Args),
    #[command(flatten)]
    Remote(remote::Remote),
}

fn main() -> Result<()> {
    // The library logs through `log`; the binary decides what is printed (RUST_LOG, default warn).
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Attach(args) => attach::run(args),
        Command::CheckList(args) => check::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Capture(args) => capture::run(cli.target, args),
        Command::Lab(args) => lab::run(args),
        Command::Run(args) => daemon::run(args, cli.target.socket.clone()),
        Command::CheckConfig(args) => daemon::check(args),
        Command::Cleanup(args) => daemon::cleanup(args, cli.target.socket_or_default()),
        Command::GenerateAssets(args) => assets::run(args, Cli::command()),
        Command::Remote(command) => remote::run(cli.target, command),
    }
}
