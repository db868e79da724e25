//! A dispatched call's answer (a retry's or a hedge's), read whole, and
//! what it means to the core: its outcome, and its failure's kind and wait.
//! Every dispatched answer passes through here, whichever path sent it.

use plano_core::api::StreamEvents;
use plano_core::attempt::Outcome;
use plano_core::providers::{self, Failure};
use plano_core::stream_events::{EventReader, StreamEvent};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use crate::headers::LOCAL_REPLY_HEADER;

/// A dispatched call's answer, read whole.
pub struct CallAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Envoy's dispatch router marks what came from the provider.
    pub from_provider: bool,
    /// No status: the call failed before any answer.
    pub failed: bool,
}

impl CallAnswer {
    pub fn read(body_size: usize) -> CallAnswer {
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        CallAnswer {
            from_provider: headers
                .iter()
                .any(|(k, _)| k == "x-envoy-upstream-service-time"),
            failed: status.is_none(),
            status: status.unwrap_or(502),
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// What a failed answer of `status` says: its kind and wait, from its
    /// headers and body.
    pub fn failure(&self, status: u16, now: u64) -> Failure {
        let header = |name: &str| self.header(name).map(str::to_string);
        providers::read_failure(status, &header, &self.body, now)
    }

    /// How a streamed attempt's whole answer failed, or `None` for an
    /// answer: a 2xx stream is read in `api` as the attempt filter reads a
    /// held one, so an error event before output fails it as its status.
    pub fn outcome(&self, events: Option<&'static StreamEvents>) -> Option<Outcome> {
        if self.failed {
            return Some(Outcome::ConnectFailure);
        }
        // The attempt listener's own reply: a time-to-headers limit, or no
        // connection to the provider.
        if self.header(LOCAL_REPLY_HEADER).is_some() {
            return Some(match self.status {
                504 => Outcome::Timeout,
                _ => Outcome::ConnectFailure,
            });
        }
        if !(200..300).contains(&self.status) {
            return Some(outcome_of(self.status, self.from_provider));
        }
        let streams = self
            .header("content-type")
            .is_some_and(plano_core::eventstream::is_stream);
        let mut reader = EventReader::for_events(events.filter(|_| streams)?);
        let events = reader.feed(&self.body);
        match events.into_iter().find(|e| *e != StreamEvent::Neutral) {
            Some(StreamEvent::Error(status)) => Some(Outcome::StreamError(status)),
            Some(_) => None,
            // Ended before any output and without its terminator.
            None => Some(Outcome::StreamError(502)),
        }
    }
}

/// An attempt's answer as the core sees it. A 503 or 504 that Envoy made
/// itself is a connection failure or a timeout, not the provider's status.
pub fn outcome_of(status: u16, from_provider: bool) -> Outcome {
    match (status, from_provider) {
        (503, false) => Outcome::ConnectFailure,
        (504, false) => Outcome::Timeout,
        (s, _) => Outcome::Status(s),
    }
}
