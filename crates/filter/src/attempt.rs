//! The stream cluster's upstream filter: it sees each streamed attempt on
//! its way to the attempt listener and back. It runs in the same VM as the
//! gateway filter (same `vm_id`), so it reaches the worker's exchanges
//! directly; the attempt's request carries its exchange id.
//!
//! A 2xx stream that a retry could still replace is held here, headers and
//! events, until its first event carrying output (or the hold's bound): an
//! error event before that fails the attempt, and its headers become the
//! retry's redirect as a failed status would. Once delivered, the stream is
//! watched to its end: an error event, or an end without the API's
//! terminator, is a broken stream, and the client gets a last error event
//! in its API's format.

use plano_core::api::StreamEvents;
use plano_core::providers::BODY_LIMIT;
use plano_core::stream_events::{EventReader, StreamEvent};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, MapType};

use crate::attempt_answer::Answer;
use crate::headers::{request_header, response_header, EXCHANGE_HEADER};
use crate::hedged::reset_lost_hedges;
use crate::host::now_ms;
use crate::redirected::decode_id;
use crate::worker::Worker;
use crate::workers;

pub use plano_core::envoy_names::ATTEMPT_ROOT_ID as ROOT_ID;

/// The hold ends at the first output, or once this many bytes are held...
const HOLD_MAX_BYTES: usize = 64 * 1024;
/// ...or when an event arrives this long after the headers did.
const HOLD_MAX_MS: u64 = 10_000;

#[derive(Default)]
pub struct AttemptRoot;

impl Context for AttemptRoot {}

impl RootContext for AttemptRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AttemptStream {
            exchange: None,
            watch: None,
            dropping: false,
            reading: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

pub struct AttemptStream {
    exchange: Option<u64>,
    watch: Option<Watch>,
    /// Its hedge answers the client: this attempt's bytes go nowhere, and
    /// its headers stay held until the gateway's reply resets it.
    dropping: bool,
    /// A failed answer's body is being read before it is decided on.
    reading: bool,
}

/// A streamed answer's events, read as they pass.
struct Watch {
    events: &'static StreamEvents,
    reader: EventReader,
    /// While held: the status, when the hold began and the bytes read.
    held: Option<(u16, u64, usize)>,
    /// The terminator or an error was seen: nothing more to look for.
    settled: bool,
}

impl Watch {
    fn new(
        events: Option<&'static StreamEvents>,
        held: Option<(u16, u64, usize)>,
    ) -> Option<Watch> {
        let events = events?;
        Some(Watch {
            events,
            reader: EventReader::for_events(events),
            held,
            settled: false,
        })
    }
}

impl Context for AttemptStream {}

impl HttpContext for AttemptStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.exchange = request_header(EXCHANGE_HEADER).and_then(|v| decode_id(&v));
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, EXCHANGE_HEADER, None);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        let action = self.response_headers(num_headers, end_of_stream);
        reset_lost_hedges();
        action
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let action = self.response_body(body_size, end_of_stream);
        reset_lost_hedges();
        action
    }
}

impl AttemptStream {
    fn response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // The worker of the listener the request came in on, which may be
        // one a re-applied config is draining.
        let Some((id, worker)) = self
            .exchange
            .and_then(|id| Some((id, workers::owner_of(id)?)))
        else {
            return Action::Continue;
        };
        match worker.attempt_answered(id, end_of_stream) {
            Answer::Hold(events) => {
                let status = response_header(":status")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(200);
                self.watch = Watch::new(events, Some((status, now_ms(), 0)));
                if self.watch.is_some() {
                    return Action::Pause;
                }
                self.pass(worker.release_held(id, status))
            }
            Answer::Read => {
                self.reading = true;
                Action::Pause
            }
            answer => self.pass(answer),
        }
    }

    fn response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.dropping {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
            return Action::Pause;
        }
        if self.reading {
            return self.read_failure(body_size, end_of_stream);
        }
        let (Some(id), Some(mut watch)) = (self.exchange, self.watch.take()) else {
            return Action::Continue;
        };
        let Some(worker) = workers::owner_of(id) else {
            return Action::Continue;
        };
        let Some((status, since, read)) = watch.held else {
            if !watch.settled {
                let chunk = body(0, body_size);
                let events = watch.reader.feed(&chunk);
                watch.after_output(&worker, id, &events, end_of_stream, body_size);
            }
            self.watch = Some(watch);
            return Action::Continue;
        };
        // Held, the buffer grows: only its new bytes are read.
        let events = watch
            .reader
            .feed(&body(read, body_size.saturating_sub(read)));
        watch.held = Some((status, since, body_size));
        let first = events.iter().position(|e| *e != StreamEvent::Neutral);
        let failed = match first.and_then(|i| events.get(i).copied()) {
            Some(StreamEvent::Error(failed)) => Some(failed),
            // Ended before any output and without its terminator: the
            // provider broke the answer, and it fails as a 502 would.
            None if end_of_stream => Some(502),
            _ => None,
        };
        if let Some(failed) = failed {
            let action = self.pass_only(worker.held_failed(id, failed));
            if self.dropping || response_header(":status").as_deref() == Some("307") {
                // The redirect carries no part of the failed answer.
                let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
            }
            return action;
        }
        let bound = body_size > HOLD_MAX_BYTES || now_ms().saturating_sub(since) > HOLD_MAX_MS;
        if first.is_none() && !bound {
            self.watch = Some(watch);
            return Action::Pause;
        }
        let answer = worker.release_held(id, status);
        self.watch = Some(watch);
        let action = self.pass(answer);
        if let Some(watch) = self.watch.as_mut() {
            // The events after the first output are a delivered stream's.
            let after = first.map_or(events.len(), |i| i);
            let rest = events.get(after..).unwrap_or_default();
            watch.after_output(&worker, id, rest, end_of_stream, body_size);
        }
        action
    }
}

impl AttemptStream {
    /// A failed answer's body, held until its end or [`BODY_LIMIT`]: then
    /// the worker decides, and a redirect carries no part of it.
    fn read_failure(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream && body_size < BODY_LIMIT {
            return Action::Pause;
        }
        self.reading = false;
        let Some(worker) = self.exchange.and_then(workers::owner_of) else {
            return Action::Continue;
        };
        let Some(id) = self.exchange else {
            return Action::Continue;
        };
        let answer = worker.failure_read(id, &body(0, body_size.min(BODY_LIMIT)));
        let action = self.pass_only(answer);
        if self.dropping || response_header(":status").as_deref() == Some("307") {
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, body_size, b"");
        }
        action
    }
}

/// `size` bytes of the response body from `start`.
fn body(start: usize, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpResponseBody, start, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

impl AttemptStream {
    /// Goes on as the worker's answer says, watching nothing more.
    fn pass_only(&mut self, answer: Answer) -> Action {
        match answer {
            Answer::Hold(_) | Answer::Read => Action::Continue,
            Answer::Pass { action, .. } => action,
            Answer::Drop => self.drop_all(),
        }
    }

    fn drop_all(&mut self) -> Action {
        self.dropping = true;
        self.watch = None;
        Action::Pause
    }

    /// Goes on as the worker's answer says; a delivered stream is watched.
    fn pass(&mut self, answer: Answer) -> Action {
        match answer {
            Answer::Hold(_) | Answer::Read => Action::Continue,
            Answer::Pass { action, watch } => {
                self.watch = match (watch, self.watch.take()) {
                    (Some(_), Some(mut w)) => {
                        w.held = None;
                        Some(w)
                    }
                    (Some(events), None) => Watch::new(Some(events), None),
                    (None, _) => None,
                };
                action
            }
            Answer::Drop => self.drop_all(),
        }
    }
}

impl Watch {
    /// Events of a delivered stream: an error, or its end without the
    /// terminator, breaks it; for the latter the client gets a last error
    /// event (the provider's own error event already tells it).
    fn after_output(
        &mut self,
        worker: &Worker,
        id: u64,
        events: &[StreamEvent],
        end_of_stream: bool,
        size: usize,
    ) {
        for event in events {
            match event {
                _ if self.settled => {}
                StreamEvent::Terminator => self.settled = true,
                StreamEvent::Error(_) => {
                    self.settled = true;
                    worker.stream_broken(id, "error_event");
                }
                _ => {}
            }
        }
        if end_of_stream && !self.settled {
            self.settled = true;
            worker.stream_broken(id, "no_terminator");
            let mut last =
                (self.events.broken)("the provider's stream ended before the answer was complete");
            if self.reader.mid_event() {
                // The cut event ends first, so this one stands alone.
                last.insert_str(0, "\n\n");
            }
            let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, size, 0, last.as_bytes());
        }
    }
}
