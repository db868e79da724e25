//! `planoai`: validates a gateway config, renders Envoy's from it, and runs
//! the gateway natively or in Docker.

mod cli;
mod commands;
mod diagnostics;
mod health;
mod load;
mod locate;
mod paths;
mod render;
mod runtime;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
