//! This worker thread's gateway workers, for the stream cluster's upstream
//! filter (`attempt`): it runs in the same VM on the same thread, and finds
//! an attempt's exchange here by its id. The gateway's root registers its
//! worker once configured.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use crate::worker::Worker;

thread_local! {
    /// More than one while a re-applied config's old listener drains (and
    /// Envoy may bring back an old plugin, without configuring it again).
    static WORKERS: RefCell<Vec<Weak<Worker>>> = const { RefCell::new(Vec::new()) };
}

/// The gateway worker holding exchange `id`.
pub fn owner_of(id: u64) -> Option<Rc<Worker>> {
    WORKERS.with(|w| {
        w.borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .find(|worker| worker.holds(id))
    })
}

/// A configured root's worker joins; the ones no root holds any more leave.
pub fn register(worker: &Rc<Worker>) {
    WORKERS.with(|w| {
        let mut workers = w.borrow_mut();
        workers.retain(|old| old.strong_count() > 0);
        workers.push(Rc::downgrade(worker));
    });
}
