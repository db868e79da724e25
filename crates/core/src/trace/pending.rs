//! Finished spans waiting for the next export: at most [`MAX_PENDING`], so
//! a collector that is down or stalled costs spans, not memory.

use super::Span;

/// Spans held for export at most (docs: observability, traces).
pub const MAX_PENDING: usize = 10_000;

#[derive(Debug)]
pub struct Pending {
    spans: Vec<Span>,
    cap: usize,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending::new(MAX_PENDING)
    }
}

impl Pending {
    pub fn new(cap: usize) -> Pending {
        Pending {
            spans: Vec::new(),
            cap,
        }
    }

    /// A finished request's spans, whole or not at all: a trace cut short
    /// would show a request without some of its attempts. False when it
    /// did not fit.
    pub fn push(&mut self, spans: Vec<Span>) -> bool {
        if self.spans.len() + spans.len() > self.cap {
            return false;
        }
        self.spans.extend(spans);
        true
    }

    /// Every span held, for one export; the queue is empty after.
    pub fn take(&mut self) -> Vec<Span> {
        std::mem::take(&mut self.spans)
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}
