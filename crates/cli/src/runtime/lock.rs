//! One change to the gateway at a time: `up` (each apply of `--watch`
//! too) and `down` hold a lock in the state directory, so two of them never
//! both start an Envoy or stop the one the other started. The second waits
//! for the first, at most [`WAIT`], then refuses.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::paths;

/// Longer than a restart takes: a drain (30 s), a start and a way back.
const WAIT: Duration = Duration::from_secs(300);

/// The lock's file while this process holds it (dropping it lets it go).
static HELD: Mutex<Option<File>> = Mutex::new(None);

/// The lock, held until the returned guard is dropped (or [`release`]).
pub struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        release();
    }
}

/// Takes the lock for `what` (`up`, `down`), waiting while another
/// `planoai` holds it.
pub fn hold(what: &str) -> Result<Held> {
    let dir = paths::run_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if file.try_lock().is_err() {
        let holder = holder(&mut file);
        errln!(
            "waiting for another planoai ({holder}) to finish changing the gateway (at most {}s)",
            WAIT.as_secs()
        )?;
        let start = Instant::now();
        while file.try_lock().is_err() {
            if start.elapsed() >= WAIT {
                bail!(
                    "another planoai ({holder}) is still changing the gateway after {}s; nothing was changed: try again once it ends",
                    WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Who holds it, for the message of the next one to wait.
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{} planoai {what}", std::process::id())?;
    *HELD.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(Held(()))
}

/// Lets the lock go early: a gateway attached to this terminal keeps
/// running after its `up` has finished changing it.
pub fn release() {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// `pid N, planoai up`, as the holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match text.split_once(' ') {
        Some((pid, what)) => format!("pid {pid}, `{what}`"),
        None => "pid unknown".into(),
    }
}
