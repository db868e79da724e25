use anyhow::Result;

use crate::cli::BuildArgs;
use crate::runtime;

pub fn run(args: &BuildArgs) -> Result<i32> {
    runtime::build_image(&args.base_image)?;
    Ok(0)
}
