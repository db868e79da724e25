//! One module per command; each returns the process's exit code.

mod build;
mod down;
mod init;
mod logs;
mod reference;
mod render;
mod schema;
mod status;
mod top;
mod up;
mod validate;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Up(args) => up::run(&args),
        Command::Down(args) => down::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Render(args) => render::run(&args),
        Command::Status => status::run(),
        Command::Top => top::run(),
        Command::Logs {
            follow,
            lines,
            json,
            envoy,
        } => logs::run(follow, lines, json, envoy),
        Command::Build(args) => build::run(&args),
        Command::Schema => schema::run(),
        Command::Init(args) => init::run(&args),
        Command::Reference { page } => reference::run(page),
        Command::LogWriter {
            path,
            max_bytes,
            files,
        } => {
            crate::logfile::write(&path, crate::logfile::LogCap { max_bytes, files })?;
            Ok(0)
        }
    }
}
