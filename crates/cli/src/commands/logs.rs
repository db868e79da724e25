use anyhow::Result;

use crate::runtime::{self, LogFormat};

pub fn run(follow: bool, lines: usize, json: bool, envoy: bool) -> Result<i32> {
    let format = match (json, envoy) {
        (_, true) => LogFormat::Envoy,
        (true, false) => LogFormat::Json,
        (false, false) => LogFormat::Gateway,
    };
    runtime::print_logs(follow, lines, format)?;
    Ok(0)
}
