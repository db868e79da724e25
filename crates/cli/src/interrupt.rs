//! The process's one handler for Ctrl-C, SIGTERM and SIGHUP (a CI timeout
//! sends one of these): what it does depends on what the command is doing,
//! so that no interrupt leaves a half-done change behind.

use std::sync::{Mutex, OnceLock};

type Action = Box<dyn Fn() + Send>;

/// What an interrupt does now: the innermost guard's action.
static ACTIONS: Mutex<Vec<Action>> = Mutex::new(Vec::new());
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// While the returned guard lives (and no guard taken after it), an interrupt
/// runs `action` instead of ending the process.
pub fn on_interrupt(action: impl Fn() + Send + 'static) -> Guard {
    INSTALLED.get_or_init(|| {
        ctrlc::set_handler(
            || match ACTIONS.lock().unwrap_or_else(|e| e.into_inner()).last() {
                Some(action) => action(),
                None => std::process::exit(130),
            },
        )
        .is_ok()
    });
    ACTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(action));
    Guard
}

/// Ends what [`on_interrupt`] set: an interrupt does what it did before.
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        ACTIONS.lock().unwrap_or_else(|e| e.into_inner()).pop();
    }
}
