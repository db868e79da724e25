use anyhow::Result;

use crate::runtime;

pub fn run(follow: bool, lines: usize) -> Result<i32> {
    runtime::print_logs(follow, lines)?;
    Ok(0)
}
