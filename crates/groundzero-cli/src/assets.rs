//! `groundzero generate-assets DIR`: the man pages and shell completions, generated from the
//! same clap definition that parses the command line, so they cannot drift from it. Hidden: it
//! is for packagers (packaging/deb/build.sh), not for operators.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// Directory to write into: `man/` (groundzero.1 and one page per subcommand) and
    /// `completions/` (bash, zsh, fish).
    out: PathBuf,
}

/// The shells whose completions the Debian package ships, with the file name each one's
/// loader looks for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

pub fn run(args: Args, mut command: clap::Command) -> Result<()> {
    let man = args.out.join("man");
    let completions = args.out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // One page for the command and one per subcommand (groundzero-block.1, ...), as git does.
    clap_mangen::generate_to(command.clone(), &man)
        .with_context(|| format!("writing man pages into {}", man.display()))?;
    let name = command.get_name().to_string();
    for shell in SHELLS {
        clap_complete::generate_to(shell, &mut command, &name, &completions).with_context(
            || format!("writing {shell} completions into {}", completions.display()),
        )?;
    }
    println!("wrote {} and {}", man.display(), completions.display());
    Ok(())
}
