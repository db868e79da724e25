//! `up`: start the gateway, or change the running one. A config that only
//! changes listeners, clusters and the plan is applied to the running Envoy
//! (nothing dropped, blocks kept); one that needs a new Envoy process drains
//! the old one first.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};

use crate::cli::UpArgs;
use crate::render::Rendered;
use crate::runtime::{self, Launch, Mode};
use crate::{changes, interrupt, live, load};

/// How long a restart waits for the old gateway's requests to finish.
const RESTART_DRAIN: Duration = Duration::from_secs(30);
/// How often `--watch` looks at the config.
const POLL: Duration = Duration::from_millis(500);

pub fn run(args: &UpArgs) -> Result<i32> {
    if args.watch {
        return watch(args);
    }
    apply(args)?;
    Ok(0)
}

fn apply(args: &UpArgs) -> Result<()> {
    let loaded = load::load_for_run(&args.config)?;
    let mode = if args.docker {
        Mode::Docker
    } else {
        Mode::Native
    };
    if mode == Mode::Docker {
        runtime::ensure_image()?;
    }
    // From reading what runs to having changed it, no other `up` or `down`.
    let _one_at_a_time = runtime::lock::hold("up")?;
    let launch = Launch::new(mode, &loaded, args.workers, args.log_cap())?;
    let running = runtime::read_state().filter(runtime::is_running);
    let mut needs_restart = match running.as_ref().map(|s| &s.launch) {
        Some(Some(old)) => launch.differences(old),
        Some(None) => vec!["a gateway started by an older planoai".into()],
        None => Vec::new(),
    };
    // Nothing running is touched before the new config passes every check.
    let mut rendered = runtime::render_checked(&loaded, mode);
    if running.is_some() {
        rendered = rendered.context("nothing was changed: the running gateway keeps its config");
    }
    let rendered = rendered?;
    if running.is_some() && runtime::keys_changed(&rendered) {
        needs_restart.push("the provider keys".into());
    }
    if running.is_some() && needs_restart.is_empty() {
        return apply_live(&loaded, &rendered);
    }
    runtime::ensure_listener_free(&loaded, &launch, running.as_ref())?;
    let Some(state) = running else {
        // A stale state file, or a container without one.
        runtime::stop(false, Duration::ZERO)?;
        return runtime::start(&loaded, launch, &rendered, args.foreground);
    };
    outln!(
        "restarting the gateway ({}): draining it first",
        needs_restart.join(", ")
    )?;
    // An interrupt once the old Envoy is told to stop would leave nothing
    // running: the restart (or the way back) is finished first.
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    let _finish_first = interrupt::on_interrupt(|| INTERRUPTED.store(true, Ordering::SeqCst));
    let previous = runtime::Previous::keep(state)?;
    runtime::stop(false, RESTART_DRAIN)?;
    let started = runtime::start(&loaded, launch, &rendered, args.foreground);
    let finished = match started {
        Ok(()) => {
            previous.forget();
            Ok(())
        }
        Err(e) => {
            errln!("error: {e:#}")?;
            outln!("bringing the previous gateway back")?;
            previous
                .restore()
                .context("the previous gateway did not start again either")?;
            bail!("the new config did not start; the previous gateway runs again")
        }
    };
    if INTERRUPTED.load(Ordering::SeqCst) {
        errln!("interrupted: the restart was finished first")?;
        std::process::exit(130);
    }
    finished
}

/// Applies `rendered` (from `loaded`) to the running gateway and says what changed.
fn apply_live(loaded: &load::Loaded, rendered: &Rendered) -> Result<()> {
    live::apply(rendered, &live::config_dir(), runtime::admin_ports().0)?;
    let changed = changes::describe(&runtime::read_summary(), &changes::summary(loaded));
    runtime::write_summary(loaded)?;
    // `status` names the config the gateway now runs.
    if let Some(mut state) = runtime::read_state() {
        state.config = std::fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
        runtime::write_state(&state)?;
    }
    if changed.is_empty() {
        outln!("applied to the running gateway: no change")?;
    } else {
        outln!("applied to the running gateway (requests in flight finish under the old config):")?;
        for line in changed {
            outln!("  {line}")?;
        }
    }
    Ok(())
}

/// What tells a saved file from the one last applied.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Applies the config, then again each time it is saved, until Ctrl-C
/// (which leaves the gateway running).
fn watch(args: &UpArgs) -> Result<i32> {
    let mut last = stamp(&args.config);
    let report = |result: Result<()>| match result {
        Ok(()) => Ok(()),
        Err(e) => errln!("error: {e:#}"),
    };
    report(apply(args))?;
    outln!(
        "watching {} for changes (Ctrl-C stops watching; the gateway keeps running, `planoai down` stops it)",
        args.config.display()
    )?;
    loop {
        std::thread::sleep(POLL);
        let now = stamp(&args.config);
        if now == last {
            continue;
        }
        last = now;
        match now {
            Some(_) => {
                outln!("{} changed", args.config.display())?;
                report(apply(args))?;
            }
            // Gone, or a link to nothing: said once; the gateway keeps its config.
            None => errln!(
                "error: cannot read {} (removed, or a link to nothing); the gateway keeps its config",
                args.config.display()
            )?,
        }
    }
}
