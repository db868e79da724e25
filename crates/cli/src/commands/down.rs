use std::time::Duration;

use anyhow::Result;

use crate::cli::DownArgs;
use crate::runtime;

pub fn run(args: &DownArgs) -> Result<i32> {
    let _one_at_a_time = runtime::lock::hold("down")?;
    if runtime::stop(args.docker, Duration::from_secs(args.drain_seconds))? {
        outln!("gateway stopped")?;
    } else {
        outln!("no gateway is running")?;
    }
    Ok(0)
}
