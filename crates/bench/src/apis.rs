//! The gateway's success path per API: chat completions, Responses,
//! embeddings and Messages (native, and translated to chat) against one gateway and one 200 mock, in interleaved rounds
//! whose order rotates, so each row is measured beside chat's in the same run.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;

use crate::{body_of, chat_body, load, provider, rss_mb, Gateway, Row, FAILOVER, GATEWAY_PORT};

/// A 1 KB Messages request for `model`.
fn messages_body(model: &str) -> Bytes {
    let chat = chat_body(1024, r#""max_tokens":64,"#);
    let text = String::from_utf8_lossy(&chat).replace("openai/gpt-4o", model);
    Bytes::from(text)
}

/// The endpoints measured, with a 1 KB body for each: Messages both to a
/// native target (as it is) and to chat's target (translated both ways).
fn endpoints() -> [(&'static str, &'static str, Bytes); 5] {
    let input = |size: usize| {
        Bytes::from(format!(
            r#"{{"model":"openai/gpt-4o","input":"{}"}}"#,
            "x".repeat(size - 40)
        ))
    };
    [
        ("chat completions", load::CHAT_PATH, body_of(1024)),
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
    ]
}

/// One row per endpoint: the median of `rounds` closed-loop runs of
/// `round` at 32 connections, with the slowest and fastest round.
pub async fn rows(
    home: &Path,
    ok: u16,
    ok2: u16,
    rounds: usize,
    round: Duration,
) -> Result<Vec<Row>> {
    let gw = Gateway::up(
        home,
        "apis",
        &(provider("openai/gpt-4o", ok, FAILOVER)
            + &provider("anthropic/c", ok2, "")
            + &provider("anthropic/native", ok2, "    format: anthropic\n")),
    )?;
    let endpoints = endpoints();
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
    let mut runs: Vec<Vec<load::Run>> = endpoints.iter().map(|_| Vec::new()).collect();
    // Each round starts with the next endpoint: the one measured last in a
    // round was seen to lose up to 13% on a busy machine.
    for r in 0..rounds {
        for k in 0..endpoints.len() {
            let i = (r + k) % endpoints.len();
            let (_, path, body) = &endpoints[i];
            runs[i].push(load::closed_loop_to(GATEWAY_PORT, path, body.clone(), 32, round).await?);
        }
    }
    let rss = rss_mb(gw.pid);
    Ok(endpoints
        .iter()
        .zip(runs)
        .map(|((name, _, _), rounds)| {
            Row::median(format!("gateway, success, {name}, 1 KB"), rounds, rss)
        })
        .collect())
}
