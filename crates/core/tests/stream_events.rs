//! Property: a stream's events do not depend on how its bytes were split
//! into chunks, for every API's framing and line ends.

use plano_core::api::{anthropic_events, Api};
use plano_core::chunked::ChunkedTracker;
use plano_core::stream_events::{Classify, EventReader, StreamEvent};
use proptest::prelude::*;

const CHAT: &str = concat!(
    "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"error\":{\"type\":\"server_error\",\"message\":\"x\"}}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
    "data: [DONE]\n\n",
);

const RESPONSES: &str = concat!(
    "event: response.created\ndata: {\"type\":\"response.created\"}\n\n",
    "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"code\":\"rate_limit_exceeded\"}}}\n\n",
    "event: response.output_text.delta\ndata: {\"delta\":\"Hi\"}\n\n",
    "event: response.completed\ndata: {}\n\n",
);

const MESSAGES: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
    "event: ping\ndata: {\"type\": \"ping\"}\n\n",
    "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n",
    "event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\"}}\n\n",
    "event: message_stop\ndata: {}\n\n",
);

fn classify(api: Api) -> Classify {
    api.spec().stream_events.as_ref().unwrap().classify
}

fn read(classify: Classify, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut reader = EventReader::new(classify);
    let mut at = 0;
    let mut events = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        events.extend(reader.feed(&bytes[at..cut]));
        at = cut;
    }
    events
}

fn cases() -> Vec<(Classify, String, Vec<StreamEvent>)> {
    use StreamEvent::*;
    let mut cases = vec![
        (
            classify(Api::ChatCompletions),
            CHAT.to_string(),
            vec![Neutral, Error(500), Output, Terminator],
        ),
        (
            classify(Api::Responses),
            RESPONSES.to_string(),
            vec![Neutral, Error(429), Output, Terminator],
        ),
        (
            anthropic_events::classify_event as Classify,
            MESSAGES.to_string(),
            vec![Neutral, Neutral, Error(529), Output, Terminator],
        ),
    ];
    // The same streams with CRLF line ends.
    let crlf: Vec<_> = cases
        .iter()
        .map(|(c, s, e)| (*c, s.replace('\n', "\r\n"), e.clone()))
        .collect();
    cases.extend(crlf);
    cases
}

#[test]
fn each_stream_read_whole_gives_its_events() {
    for (classify, text, expected) in cases() {
        assert_eq!(read(classify, text.as_bytes(), &[]), expected, "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_the_same_events(cuts in proptest::collection::vec(any::<usize>(), 0..24)) {
        for (classify, text, expected) in cases() {
            prop_assert_eq!(read(classify, text.as_bytes(), &cuts), expected);
        }
    }

    #[test]
    fn any_bytes_are_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                        cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        for api in [Api::ChatCompletions, Api::Responses] {
            let whole = read(classify(api), &bytes, &[]);
            prop_assert_eq!(read(classify(api), &bytes, &cuts), whole);
        }
    }

    #[test]
    fn any_provider_bytes_are_tracked_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        head.extend_from_slice(&bytes);
        let mut tracker = ChunkedTracker::default();
        tracker.feed(&head);
        if let Some(ending) = tracker.ending() {
            prop_assert!(ending.len() <= 1024 * 1024 + 16);
        }
    }
}
