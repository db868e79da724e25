//! The generated pages of docs/reference/: printed here, committed there, and
//! compared by a test, so the reference says what the code does.

mod cli;
mod config;

use anyhow::{bail, Result};

use crate::cli::ReferencePage;

pub fn run(page: ReferencePage) -> Result<i32> {
    let text = match page {
        ReferencePage::Config => match config::page(&plano_core::config::json_schema()) {
            Ok(text) => text,
            Err(problems) => bail!(
                "the config reference cannot be written:\n  {}\n(each field needs a /// doc comment in crates/core/src/config.rs, and an example: a default, a choice of values, or #[schemars(example = ...)])",
                problems.join("\n  ")
            ),
        },
        ReferencePage::Cli => cli::page(),
    };
    outln!("{}", text.trim_end())?;
    Ok(0)
}
