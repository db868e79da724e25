//! Golden fixtures of the translations: one file per case under
//! `tests/fixtures/translate/`, a request, answer, stream or error body in
//! and the exact bytes out. A stream is also fed a byte at a time, and must
//! give the same bytes. `UPDATE_FIXTURES=1` rewrites the `out` sections
//! (read the diff before committing it).
//!
//! A case file: header lines `translation: chat_to_gemini` (snake case of
//! the `Translation` variant), `verb: request|answer|stream|error`, and
//! for answers `created: N` and `include_usage: true|false`; then `--- in`
//! and `--- out` sections, each ending with one newline that is not its own.
//! An answer is of the model `the-model`, an error of `status: N` (500).
//!
//! A Bedrock stream (`frames: true`) is binary: its input is one frame a
//! line, `EVENT-TYPE JSON`, encoded here (`plano_core::eventstream`); a
//! line `!exception NAME JSON` is an exception frame, `!badcrc EVENT JSON`
//! a frame whose last CRC byte is wrong, `!cut EVENT JSON` its first half.

use std::fs;
use std::path::Path;

use plano_core::translate::{Translated, Translation, Untranslatable};

struct Case {
    header: Vec<(String, String)>,
    input: String,
    output: String,
}

fn parse(text: &str) -> Case {
    let (head, rest) = text.split_once("--- in\n").expect("a `--- in` section");
    let (input, output) = rest.split_once("\n--- out\n").expect("a `--- out` section");
    let header = head
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(':').expect("`name: value` header lines");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Case {
        header,
        input: input.to_string(),
        output: output.strip_suffix('\n').unwrap_or(output).to_string(),
    }
}

fn translation(name: &str) -> Translation {
    match name {
        "messages_to_chat" => Translation::MessagesToChat,
        "chat_to_messages" => Translation::ChatToMessages,
        "chat_to_gemini" => Translation::ChatToGemini,
        "messages_to_gemini" => Translation::MessagesToGemini,
        "chat_to_bedrock" => Translation::ChatToBedrock,
        "messages_to_bedrock" => Translation::MessagesToBedrock,
        other => panic!("no translation `{other}`"),
    }
}

fn join(parts: Vec<Translated>) -> String {
    String::from_utf8(parts.into_iter().flat_map(|t| t.bytes).collect()).unwrap()
}

/// What the case's translation makes of its input.
fn run(case: &Case) -> String {
    let field = |name: &str| {
        case.header
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let t = translation(field("translation").expect("a `translation:` line"));
    let created = field("created").map_or(0, |c| c.parse().unwrap());
    let include_usage = field("include_usage") == Some("true");
    let encoded = (field("frames") == Some("true")).then(|| frames(&case.input));
    let input = encoded.as_deref().unwrap_or(case.input.as_bytes());
    let status = field("status").map_or(500, |s| s.parse().unwrap());
    match field("verb").expect("a `verb:` line") {
        "request" => match t.request(input, "the-model") {
            Ok(body) => String::from_utf8(body).unwrap(),
            Err(Untranslatable::NoEquivalent(why)) => format!("refused: {why}"),
            Err(Untranslatable::Invalid(why)) => format!("invalid: {why}"),
        },
        "answer" => join(vec![t
            .answer(false, created, include_usage)
            .with_model("the-model")
            .feed(input, true)]),
        "error" => join(vec![t
            .error_answer()
            .with_model("the-model")
            .with_status(status)
            .feed(input, true)]),
        "stream" => {
            let whole = join(vec![t
                .answer(true, created, include_usage)
                .with_model("the-model")
                .feed(input, true)]);
            let mut answer = t
                .answer(true, created, include_usage)
                .with_model("the-model");
            let bytewise = join(
                input
                    .iter()
                    .enumerate()
                    .map(|(i, b)| answer.feed(&[*b], i + 1 == input.len()))
                    .collect(),
            );
            assert_eq!(whole, bytewise, "a stream fed a byte at a time");
            whole
        }
        other => panic!("no verb `{other}`"),
    }
}

/// A Bedrock stream's lines as event-stream frames.
fn frames(input: &str) -> Vec<u8> {
    use plano_core::eventstream::{event, exception};
    let mut out = Vec::new();
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let (name, payload) = line.split_once(' ').expect("`EVENT JSON` lines");
        let mut frame = match name {
            "!exception" | "!badcrc" | "!cut" => {
                let (inner, payload) = payload.split_once(' ').unwrap();
                match name {
                    "!exception" => exception(inner, payload),
                    _ => event(inner, payload),
                }
            }
            _ => event(name, payload),
        };
        match name {
            "!badcrc" => *frame.last_mut().unwrap() ^= 0x55,
            "!cut" => frame.truncate(frame.len() / 2),
            _ => {}
        }
        out.extend(frame);
    }
    out
}

#[test]
fn every_translation_fixture_gives_its_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate");
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut wrong = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path).unwrap();
        let case = parse(&text);
        let got = run(&case);
        if got == case.output {
            continue;
        }
        if update {
            let at = text.find("\n--- out\n").unwrap();
            fs::write(&path, format!("{}\n--- out\n{got}\n", &text[..at])).unwrap();
        } else {
            wrong.push(format!(
                "{}:\n  want: {:?}\n  got:  {:?}",
                path.display(),
                case.output,
                got
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
