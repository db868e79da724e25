use anyhow::Result;

use crate::cli::UpArgs;
use crate::load;
use crate::runtime::{self, Mode};

pub fn run(args: &UpArgs) -> Result<i32> {
    let loaded = load::load_for_run(&args.config)?;
    // Never two gateways fighting over a port: `up` replaces a running one.
    if let Some(state) = runtime::read_state() {
        if runtime::is_running(&state) {
            outln!(
                "replacing the running gateway ({} mode, {})",
                match state.mode {
                    Mode::Native => "native",
                    Mode::Docker => "docker",
                },
                state.config.display()
            )?;
        }
        runtime::stop(false)?;
    }
    if args.docker {
        runtime::start_docker(&loaded, args.workers, args.log_cap())?;
    } else {
        runtime::start_native(&loaded, args.workers, args.foreground, args.log_cap())?;
    }
    Ok(0)
}
