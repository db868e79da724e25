//! `planoai`: validates a gateway config, renders Envoy's from it, and runs
//! the gateway natively or in Docker.

#[macro_use]
mod output;
mod changes;
mod cli;
mod commands;
mod diagnostics;
mod health;
mod interrupt;
mod live;
mod load;
mod locate;
mod logfile;
mod logline;
mod paths;
mod redact;
mod render;
mod runtime;
mod scrape;
mod source;
mod structure;

use std::io::Write;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        // The reader went away (`planoai status | head -1`): a normal end.
        Err(e) if e.downcast_ref::<output::ReaderGone>().is_some() => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
