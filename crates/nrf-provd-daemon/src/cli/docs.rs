//! `nrf-provd completions` and `nrf-provd man`: shell completions and man
//! pages generated from the same clap definition the binary parses, so they
//! never drift from the command line. The Debian package installs both.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;

use super::{Cli, error_exit};

#[derive(Debug, clap::Args)]
#[command(after_help = COMPLETIONS_HELP)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

const COMPLETIONS_HELP: &str = "\
The Debian package installs these already. By hand:
  nrf-provd completions bash > /etc/bash_completion.d/nrf-provd
  nrf-provd completions zsh  > /usr/local/share/zsh/site-functions/_nrf-provd
  nrf-provd completions fish > ~/.config/fish/completions/nrf-provd.fish";

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (nrf-provd.1, nrf-provd-run.1, …) into
    /// this directory and print their paths, instead of printing the main
    /// page.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The command line as clap sees it, named as installed.
pub fn command() -> clap::Command {
    Cli::command()
}

/// The completion script for `shell`.
pub fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    let mut cmd = command();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

pub fn completions(args: CompletionsArgs) -> ExitCode {
    // Rendered into memory first: the generator panics on a failed write.
    let script = completion_script(args.shell);
    write_stdout(&script)
}

pub fn man(args: ManArgs) -> ExitCode {
    let Some(dir) = args.out else {
        let mut page = Vec::new();
        if let Err(e) = clap_mangen::Man::new(command()).render(&mut page) {
            return error_exit(format!("cannot render the man page: {e}"));
        }
        return write_stdout(&page);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return error_exit(format!("{}: cannot create directory: {e}", dir.display()));
    }
    if let Err(e) = clap_mangen::generate_to(command(), &dir) {
        return error_exit(format!("{}: cannot write man pages: {e}", dir.display()));
    }
    let mut pages: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "1"))
            .collect(),
        Err(e) => return error_exit(format!("{}: cannot list: {e}", dir.display())),
    };
    pages.sort();
    let listing: String = pages
        .iter()
        .map(|path| format!("{}\n", path.display()))
        .collect();
    write_stdout(listing.as_bytes())
}

fn write_stdout(bytes: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader has gone (`| head`): nothing left to tell it.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => error_exit(format!("cannot write to standard output: {e}")),
    }
}
