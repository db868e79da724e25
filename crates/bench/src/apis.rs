//! The gateway's success path per API: chat completions, Responses,
//! embeddings, Messages (native, and translated to chat), and the cloud
//! targets' translations (Bedrock's event stream to chat chunks, Gemini's
//! generateContent to a chat completion), against one gateway and its
//! mocks, in interleaved rounds whose order rotates, so each row is
//! measured beside chat's in the same run.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;

use crate::mock::{self, Answer};
use crate::{
    body_of, chat_body, cpu_ns, load, provider, rss_mb, Gateway, Row, FAILOVER, GATEWAY_PORT,
};

/// Which rows: all of them, or only the cloud targets' beside chat's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Which {
    All,
    Clouds,
}

/// Bedrock's model id, with the `:` every Bedrock id has (sent encoded).
const BEDROCK: &str = "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0";
const GEMINI: &str = "gemini/gemini-2.5-flash";
/// An OpenAI-format target that streams the same pieces as Bedrock's
/// stream, so the translated stream has a passthrough stream to compare to.
const STREAMED: &str = "openai/streamed";

/// The rows a translated row is set against: (translated, plain).
pub const TRANSLATIONS: [(&str, &str); 2] = [
    (
        "gateway, success, chat streamed from Bedrock converse-stream (event stream translated to chunks), 1 KB",
        "gateway, success, chat completions streamed, 1 KB",
    ),
    (
        "gateway, success, chat from Gemini generateContent (translated both ways), 1 KB",
        "gateway, success, chat completions, 1 KB",
    ),
];

/// `body` with its model `openai/gpt-4o` replaced by `model`.
fn for_model(body: Bytes, model: &str) -> Bytes {
    Bytes::from(String::from_utf8_lossy(&body).replace("openai/gpt-4o", model))
}

/// A 1 KB Messages request for `model`.
fn messages_body(model: &str) -> Bytes {
    for_model(chat_body(1024, r#""max_tokens":64,"#), model)
}

/// The endpoints measured, with a 1 KB body for each: Messages both to a
/// native target (as it is) and to chat's target (translated both ways);
/// chat to Bedrock (streamed: the event-stream decoder and its translation
/// run on every frame) and to Gemini (whole).
fn endpoints(which: Which) -> Vec<(&'static str, &'static str, Bytes)> {
    let input = |size: usize| {
        Bytes::from(format!(
            r#"{{"model":"openai/gpt-4o","input":"{}"}}"#,
            "x".repeat(size - 40)
        ))
    };
    let streamed = || chat_body(1024, r#""stream":true,"#);
    let mut all = vec![("chat completions", load::CHAT_PATH, body_of(1024))];
    if which == Which::All {
        all.extend([
            ("responses", "/v1/responses", input(1024)),
            ("embeddings", "/v1/embeddings", input(1024)),
            (
                "messages, native",
                "/v1/messages",
                messages_body("anthropic/native"),
            ),
            (
                "messages, translated to chat",
                "/v1/messages",
                messages_body("openai/gpt-4o"),
            ),
        ]);
    }
    all.extend([
        (
            "chat completions streamed",
            load::CHAT_PATH,
            for_model(streamed(), STREAMED),
        ),
        (
            "chat streamed from Bedrock converse-stream (event stream translated to chunks)",
            load::CHAT_PATH,
            for_model(streamed(), BEDROCK),
        ),
        (
            "chat from Gemini generateContent (translated both ways)",
            load::CHAT_PATH,
            for_model(body_of(1024), GEMINI),
        ),
    ]);
    all
}

/// One row per endpoint: the median of `rounds` closed-loop runs of
/// `round` at 32 connections, with the slowest and fastest round, and the
/// gateway's CPU time (Envoy and its log writer) per answered request.
pub async fn rows(
    home: &Path,
    ok: u16,
    ok2: u16,
    rounds: usize,
    round: Duration,
    which: Which,
) -> Result<Vec<Row>> {
    let clouds = mock::serve(Answer::Clouds).await?;
    // A Bedrock API key (`access_key`) goes as a bearer token: no SigV4
    // signer in the path, so the row is the translation's cost alone.
    let gw = Gateway::up(
        home,
        "apis",
        &(provider("openai/gpt-4o", ok, FAILOVER)
            + &provider("anthropic/c", ok2, "")
            + &provider("anthropic/native", ok2, "    format: anthropic\n")
            + &provider(STREAMED, clouds, "")
            + &provider(
                BEDROCK,
                clouds,
                "    format: bedrock\n    region: us-east-1\n",
            )
            + &provider(GEMINI, clouds, "    format: gemini\n")),
    )?;
    let endpoints = endpoints(which);
    // A translated answer that lost its text still says 200: each cloud
    // row's answer is read once, whole, before it is measured.
    for (name, path, body) in endpoints.iter().filter(|e| e.0.contains(" from ")) {
        let (status, answer) = load::one(GATEWAY_PORT, path, body).await?;
        let text = String::from_utf8_lossy(&answer);
        // In the client's shape (chat chunks, a chat completion), none of
        // the provider's own left (a frame's event name, Gemini's fields).
        let (expected, shape, foreign) = if name.contains("streamed") {
            (
                format!("piece {} ", mock::CLOUD_CHUNKS - 1),
                "\"chat.completion.chunk\"",
                "contentBlockDelta",
            )
        } else {
            (
                "hello from the bench mock".into(),
                "\"chat.completion\"",
                "candidates",
            )
        };
        let translated =
            text.contains(&expected) && text.contains(shape) && !text.contains(foreign);
        if status != 200 || !translated || text.contains("error") {
            anyhow::bail!("{name}: the gateway answered {status}: {text}");
        }
    }
    for (_, path, body) in &endpoints {
        load::closed_loop_to(
            GATEWAY_PORT,
            path,
            body.clone(),
            8,
            Duration::from_millis(300),
        )
        .await?;
    }
    let processes: Vec<u32> = std::iter::once(gw.pid).chain(gw.log_writer).collect();
    let cpu = || processes.iter().map(|&p| cpu_ns(p)).sum::<u64>();
    let mut runs: Vec<Vec<load::Run>> = endpoints.iter().map(|_| Vec::new()).collect();
    let mut cpu_us: Vec<Vec<f64>> = endpoints.iter().map(|_| Vec::new()).collect();
    // Each round starts with the next endpoint: the one measured last in a
    // round was seen to lose up to 13% on a busy machine.
    for r in 0..rounds {
        for k in 0..endpoints.len() {
            let i = (r + k) % endpoints.len();
            let (_, path, body) = &endpoints[i];
            let before = cpu();
            let run = load::closed_loop_to(GATEWAY_PORT, path, body.clone(), 32, round).await?;
            cpu_us[i].push((cpu() - before) as f64 / 1000.0 / run.ok.max(1) as f64);
            runs[i].push(run);
        }
    }
    let rss = rss_mb(gw.pid);
    Ok(endpoints
        .iter()
        .zip(runs)
        .zip(cpu_us)
        .map(|(((name, _, _), rounds), mut cpu)| {
            cpu.sort_by(f64::total_cmp);
            let mut row = Row::median(format!("gateway, success, {name}, 1 KB"), rounds, rss);
            row.cpu_us = Some(cpu[cpu.len() / 2]);
            row
        })
        .collect())
}

/// What each translation costs per request, against its plain row of the
/// same rounds: p50 (median of the round-by-round differences) and the
/// gateway's CPU time per request; one line each, none where a row is missing.
pub fn translation_costs(rows: &[Row]) -> Vec<String> {
    let find = |name: &str| rows.iter().find(|r| r.name == name && r.connections == 32);
    TRANSLATIONS
        .iter()
        .filter_map(|(translated, plain)| {
            let (t, p) = (find(translated)?, find(plain)?);
            let (ratio, p50) = crate::report::same_round(t, p)?;
            Some(format!(
                "{}: {p50:+.2} ms p50, {:+.0} us gateway CPU per request, {ratio:.2}x the req/s of \"{}\" (same rounds)",
                translated.trim_start_matches("gateway, success, "),
                t.cpu_us? - p.cpu_us?,
                plain.trim_start_matches("gateway, success, "),
            ))
        })
        .collect()
}
