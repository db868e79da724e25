//! What the streamed path tells the attempt filter to do with an attempt's
//! answer: the value an attempt's outcome is handed up as, so the path never
//! calls back into the filter that asked.

use plano_core::api::StreamEvents;
use proxy_wasm::types::Action;

/// What the attempt filter does with an attempt's response headers.
pub enum Answer {
    /// Hold them, and the events after them, until the first output.
    /// `None` when the attempt's API does not stream.
    Hold(Option<&'static StreamEvents>),
    /// Go on with `action`; `watch` reads the delivered stream, watched
    /// for its end.
    Pass {
        action: Action,
        watch: Option<&'static StreamEvents>,
    },
    /// Hold them, and drop every byte after: the hedge answers the client.
    Drop,
    /// Hold them and the body after them: a failure, decided once its body
    /// is read (`Worker::failure_read`, in `redirected`).
    Read,
}

impl Answer {
    pub fn pass(action: Action) -> Answer {
        Answer::Pass {
            action,
            watch: None,
        }
    }
}
