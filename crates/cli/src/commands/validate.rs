use anyhow::Result;
use plano_core::resolve::Severity;

use crate::cli::ValidateArgs;
use crate::load::{self, Options};

pub fn run(args: &ValidateArgs) -> Result<i32> {
    let config = &args.config;
    let strict = args.strict || args.env_file.is_some();
    let report = load::load(
        config,
        &Options {
            env_file: args.env_file.clone(),
            unset_variable: if strict {
                Severity::Error
            } else {
                Severity::Warning
            },
        },
    )?;
    report.print()?;
    let warnings = report.diagnostics.len() - report.errors();
    if report.errors() > 0 {
        errln!(
            "{}: {} error(s), {} warning(s)",
            config.display(),
            report.errors(),
            warnings
        )?;
        return Ok(1);
    }
    let targets = report
        .loaded
        .as_ref()
        .map_or(0, |l| l.resolved.plan.targets.len());
    let noun = if targets == 1 {
        "provider"
    } else {
        "providers"
    };
    outln!(
        "{}: valid ({targets} {noun}, {warnings} warning(s))",
        config.display()
    )?;
    Ok(0)
}
