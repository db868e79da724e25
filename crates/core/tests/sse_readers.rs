//! Property: every reader of a provider's stream (the event reader, the
//! usage strip, both stream translations) gives the same result whatever
//! the line ends (`\n`, `\r\n`, bare `\r`, mixed line by line) and however
//! the bytes are split into chunks, at every single split point and at
//! many random ones.

use plano_core::api::{anthropic_events, Api};
use plano_core::sse::{Events, Read};
use plano_core::stream_events::{EventReader, StreamEvent};
use plano_core::translate::Translation;
use plano_core::usage::stream::UsageStrip;
use proptest::prelude::*;

/// A chat stream whose client did not ask for usage: the gateway did, and
/// the usage event is to be taken out.
const CHAT: &[&str] = &[
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}",
    "",
    ": keep-alive",
    "",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}",
    "",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}],\"usage\":null}",
    "",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
    "",
    "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}",
    "",
    "data: [DONE]",
    "",
];

const MESSAGES: &[&str] = &[
    "event: message_start",
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}",
    "",
    "event: ping",
    "data: {\"type\":\"ping\"}",
    "",
    "event: content_block_start",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
    "",
    "event: content_block_delta",
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}",
    "",
    "event: message_delta",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}",
    "",
    "event: message_stop",
    "data: {\"type\":\"message_stop\"}",
    "",
];

const ENDS: [&str; 3] = ["\n", "\r\n", "\r"];

/// `lines` joined with the line ends `ends` picks, line by line. A blank
/// line after a bare `\r` cannot end in `\n`: that is one `\r\n`.
fn framed(lines: &[&str], ends: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let mut end = ENDS[ends.get(i).copied().unwrap_or(0) % ENDS.len()];
        if line.is_empty() && out.last() == Some(&b'\r') && end == "\n" {
            end = "\r";
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(end.as_bytes());
    }
    out
}

/// Feeds `bytes` cut at `cuts` (any order, any values) to `feed`, the last
/// chunk marked as the end.
fn chunked<T>(bytes: &[u8], cuts: &[usize], mut feed: impl FnMut(&[u8], bool) -> T) -> Vec<T> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut at = 0;
    let mut out = Vec::new();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        out.push(feed(&bytes[at..cut], cut == bytes.len()));
        at = cut;
    }
    out
}

fn events(bytes: &[u8], cuts: &[usize]) -> Vec<Read> {
    let mut r = Events::default();
    chunked(bytes, cuts, |c, _| r.feed(c)).concat()
}

fn classified(api: Option<Api>, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
    let mut r = match api {
        Some(api) => EventReader::new(api.spec().stream_events.as_ref().unwrap().classify),
        None => EventReader::new(anthropic_events::classify_event),
    };
    chunked(bytes, cuts, |c, _| r.feed(c)).concat()
}

fn stripped(bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut strip = UsageStrip::default();
    chunked(bytes, cuts, |c, end| strip.pass(c, end)).concat()
}

fn translated(t: Translation, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut answer = t.answer(true, 1, true);
    chunked(bytes, cuts, |c, end| answer.feed(c, end).bytes).concat()
}

/// The data of each event, as the reader gives them.
fn datas(bytes: &[u8]) -> Vec<String> {
    events(bytes, &[])
        .into_iter()
        .map(|r| match r {
            Read::Event(e) => e.data().to_string(),
            Read::TooLarge => "too large".into(),
        })
        .collect()
}

/// What a stream says with `\n` line ends: the results every framing must match.
struct Expected {
    chat_events: Vec<StreamEvent>,
    messages_events: Vec<StreamEvent>,
    chat_datas: Vec<String>,
    stripped_datas: Vec<String>,
    to_messages: Vec<u8>,
    to_chat: Vec<u8>,
}

fn expected() -> Expected {
    let chat = framed(CHAT, &[]);
    let messages = framed(MESSAGES, &[]);
    Expected {
        chat_events: classified(Some(Api::ChatCompletions), &chat, &[]),
        messages_events: classified(None, &messages, &[]),
        chat_datas: datas(&chat),
        stripped_datas: datas(&stripped(&chat, &[])),
        to_messages: translated(Translation::MessagesToChat, &chat, &[]),
        to_chat: translated(Translation::ChatToMessages, &messages, &[]),
    }
}

/// Every reader on one framing of both streams, cut at `cuts`.
fn check(want: &Expected, ends: &[usize], cuts: &[usize]) -> Result<(), TestCaseError> {
    let chat = framed(CHAT, ends);
    let messages = framed(MESSAGES, ends);
    prop_assert_eq!(
        &classified(Some(Api::ChatCompletions), &chat, cuts),
        &want.chat_events
    );
    prop_assert_eq!(&classified(None, &messages, cuts), &want.messages_events);
    let read: Vec<String> = events(&chat, cuts)
        .into_iter()
        .map(|r| match r {
            Read::Event(e) => e.data().to_string(),
            Read::TooLarge => "too large".into(),
        })
        .collect();
    prop_assert_eq!(&read, &want.chat_datas);
    // The strip takes out the usage event and passes every other byte as it came.
    let out = stripped(&chat, cuts);
    prop_assert_eq!(&datas(&out), &want.stripped_datas);
    prop_assert_eq!(out, stripped(&chat, &[]));
    prop_assert_eq!(
        &translated(Translation::MessagesToChat, &chat, cuts),
        &want.to_messages
    );
    prop_assert_eq!(
        &translated(Translation::ChatToMessages, &messages, cuts),
        &want.to_chat
    );
    Ok(())
}

#[test]
fn the_streams_with_newlines_say_what_they_should() {
    let want = expected();
    assert_eq!(want.chat_events.len(), 6);
    assert_eq!(want.chat_events.last(), Some(&StreamEvent::Terminator));
    assert_eq!(want.messages_events.last(), Some(&StreamEvent::Terminator));
    assert_eq!(want.chat_datas.len(), 6);
    // The usage event is the one taken out.
    assert_eq!(want.stripped_datas.len(), 5);
    assert!(!want
        .stripped_datas
        .iter()
        .any(|d| d.contains("prompt_tokens")));
    assert!(String::from_utf8_lossy(&want.to_messages).contains("event: message_stop"));
    assert!(String::from_utf8_lossy(&want.to_chat).ends_with("data: [DONE]\n\n"));
}

#[test]
fn every_line_end_at_every_split_point() {
    let want = expected();
    for (end, name) in ENDS.iter().enumerate() {
        let ends = vec![end; MESSAGES.len().max(CHAT.len())];
        let longest = framed(MESSAGES, &ends).len().max(framed(CHAT, &ends).len());
        for cut in 0..=longest {
            check(&want, &ends, &[cut]).unwrap_or_else(|e| panic!("{name:?} cut at {cut}: {e}"));
        }
    }
}

#[test]
fn a_stream_fed_a_byte_at_a_time() {
    let want = expected();
    for end in 0..ENDS.len() {
        let ends = vec![end; MESSAGES.len().max(CHAT.len())];
        let every: Vec<usize> = (0..framed(MESSAGES, &ends).len()).collect();
        check(&want, &ends, &every).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mixed_line_ends_and_any_splits(ends in proptest::collection::vec(0usize..3, 20),
                                      cuts in proptest::collection::vec(any::<usize>(), 0..24)) {
        check(&expected(), &ends, &cuts)?;
    }

    #[test]
    fn any_bytes_give_the_same_reads_however_split(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b'd'), any::<u8>()], 0..1024),
            cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        prop_assert_eq!(events(&bytes, &cuts), events(&bytes, &[]));
        // The strip drops whole events only: without a usage event in them,
        // any bytes pass unchanged.
        prop_assert_eq!(stripped(&bytes, &cuts), bytes.clone());
    }
}
