//! The process's one handler for Ctrl-C, SIGTERM and SIGHUP (a CI timeout
//! sends one of these): what it does depends on what the command is doing,
//! so that no interrupt leaves a half-done change behind.

use std::sync::{Mutex, OnceLock};

type Action = Box<dyn Fn() + Send>;

static ACTION: Mutex<Option<Action>> = Mutex::new(None);
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// While the returned guard lives, an interrupt runs `action` instead of
/// ending the process.
pub fn on_interrupt(action: impl Fn() + Send + 'static) -> Guard {
    INSTALLED.get_or_init(|| {
        ctrlc::set_handler(
            || match &*ACTION.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(action) => action(),
                None => std::process::exit(130),
            },
        )
        .is_ok()
    });
    *ACTION.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(action));
    Guard
}

/// Ends what [`on_interrupt`] set: an interrupt ends the process again.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        *ACTION.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
