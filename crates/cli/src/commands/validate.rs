use std::path::Path;

use anyhow::Result;

use crate::load;

pub fn run(config: &Path) -> Result<i32> {
    let report = load::load(config)?;
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
    outln!(
        "{}: valid ({targets} providers, {warnings} warning(s))",
        config.display()
    )?;
    Ok(0)
}
