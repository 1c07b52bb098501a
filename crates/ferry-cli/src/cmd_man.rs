//! `ferry man`: manual pages generated from the clap definitions (clap_mangen), so they
//! never disagree with `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

/// `ferry man [--dir DIR]`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Write ferry.1 and one ferry-COMMAND.1 per command into DIR instead of printing
    /// ferry.1 (e.g. /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// `ferry man`.
pub fn run(args: ManArgs, command: clap::Command) -> anyhow::Result<ExitCode> {
    match args.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command).render(&mut out)?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
        }
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            println!("wrote man pages into {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
