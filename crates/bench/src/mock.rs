//! A fast loopback mock provider: answers 200 JSON, 429 with or without
//! `Retry-After`, or an SSE stream with a gap between chunks; or, as
//! `Clouds`, each API by its path (chat completions whole or streamed,
//! Bedrock's Converse and converse-stream frames, Gemini's generateContent).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Events every `Answer::Stream` has handed to its connection so far: what
/// the streams bench compares with what its client read.
pub static STREAM_EVENTS_SENT: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy)]
pub enum Answer {
    Ok,
    RateLimited,
    Stream {
        chunks: usize,
        gap_ms: u64,
    },
    /// 429 to `percent` of requests, picked by a hash of the request count.
    Flaky {
        percent: u64,
    },
    /// 429 to `percent` of requests (as `Flaky`); of the rest, every
    /// `silent_every`-th waits `silent_ms` before its headers.
    Unreliable {
        percent: u64,
        silent_every: u64,
        silent_ms: u64,
    },
    /// 200, but every `every`-th answer waits `delay_ms` first.
    SometimesSlow {
        every: u64,
        delay_ms: u64,
    },
    /// The answer the request's path asks for, of [`CLOUD_CHUNKS`] pieces
    /// of text where it streams: see [`cloud_answer`].
    Clouds,
}

/// The text pieces of every `Clouds` stream, whatever its framing.
pub const CLOUD_CHUNKS: usize = 6;

static SERVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A well-mixed hash of `n` (splitmix64), for reproducible "random" picks.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const OK: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"mock","choices":[{"index":0,"message":{"role":"assistant","content":"hello from the bench mock"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;

type Body = BoxBody<Bytes, Infallible>;

async fn answer(req: Request<Incoming>, how: Answer) -> Result<Response<Body>, Infallible> {
    // Only `Clouds` reads the path: the other answers cost the mock nothing more.
    let path = matches!(how, Answer::Clouds).then(|| req.uri().to_string());
    // Read the whole request body, as a provider does.
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(path) = path {
        return Ok(cloud_answer(&path, &body));
    }
    let n = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let how = match how {
        Answer::Flaky { percent } if mix(n) % 100 < percent => Answer::RateLimited,
        Answer::Flaky { .. } => Answer::Ok,
        Answer::Unreliable { percent, .. } if mix(n) % 100 < percent => Answer::RateLimited,
        Answer::Unreliable {
            silent_every,
            silent_ms,
            ..
        } => {
            if n.is_multiple_of(silent_every) {
                tokio::time::sleep(Duration::from_millis(silent_ms)).await;
            }
            Answer::Ok
        }
        Answer::SometimesSlow { every, delay_ms } => {
            if n.is_multiple_of(every) {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Answer::Ok
        }
        other => other,
    };
    let response = match how {
        Answer::Ok => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(OK.as_bytes())).boxed()),
        Answer::RateLimited => Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .body(
                Full::new(Bytes::from_static(
                    br#"{"error":{"type":"rate_limit","message":"slow down"}}"#,
                ))
                .boxed(),
            ),
        Answer::Stream { chunks, gap_ms } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for i in 0..chunks {
                    let line = format!(
                        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n"
                    );
                    if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                        return;
                    }
                    STREAM_EVENTS_SENT.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                }
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
                    .await;
            });
            let stream = StreamBody::new(tokio_stream(rx));
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(BodyExt::boxed(stream))
        }
        Answer::Flaky { .. }
        | Answer::Unreliable { .. }
        | Answer::SometimesSlow { .. }
        | Answer::Clouds => Response::builder().body(Full::new(Bytes::new()).boxed()),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// Each cloud API's answer, made once: (content type, body pieces).
struct Clouds {
    chat_stream: Vec<Bytes>,
    converse_stream: Vec<Bytes>,
    converse: Bytes,
    gemini: Bytes,
}

fn clouds() -> &'static Clouds {
    static CLOUDS: std::sync::OnceLock<Clouds> = std::sync::OnceLock::new();
    CLOUDS.get_or_init(|| {
        use plano_core::eventstream::event;
        let piece = |i: usize| format!("piece {i} ");
        let mut chat_stream: Vec<Bytes> = (0..CLOUD_CHUNKS)
            .map(|i| {
                Bytes::from(format!(
                    r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"mock","choices":[{{"index":0,"delta":{{"content":"{}"}},"finish_reason":null}}]}}"#,
                    piece(i)
                ) + "\n\n")
            })
            .collect();
        chat_stream.push(Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ));
        // Bedrock's converse-stream: one frame per event, as it sends them.
        let mut converse_stream = vec![Bytes::from(event(
            "messageStart",
            r#"{"role":"assistant"}"#,
        ))];
        converse_stream.extend((0..CLOUD_CHUNKS).map(|i| {
            Bytes::from(event(
                "contentBlockDelta",
                &format!(
                    r#"{{"contentBlockIndex":0,"delta":{{"text":"{}"}}}}"#,
                    piece(i)
                ),
            ))
        }));
        converse_stream.extend([
            Bytes::from(event("contentBlockStop", r#"{"contentBlockIndex":0}"#)),
            Bytes::from(event("messageStop", r#"{"stopReason":"end_turn"}"#)),
            Bytes::from(event(
                "metadata",
                r#"{"usage":{"inputTokens":10,"outputTokens":6,"totalTokens":16},"metrics":{"latencyMs":100}}"#,
            )),
        ]);
        Clouds {
            chat_stream,
            converse_stream,
            converse: Bytes::from_static(
                br#"{"output":{"message":{"role":"assistant","content":[{"text":"hello from the bench mock"}]}},"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15},"metrics":{"latencyMs":100}}"#,
            ),
            gemini: Bytes::from_static(
                br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hello from the bench mock"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"totalTokenCount":15},"modelVersion":"gemini-2.5-flash","responseId":"resp-bench"}"#,
            ),
        }
    })
}

/// `pieces` as a chunked body, each its own write, none waited for.
fn pieces(pieces: &[Bytes]) -> Body {
    let mut left: std::collections::VecDeque<Bytes> = pieces.iter().cloned().collect();
    let stream = futures_util_stream::poll_fn(move |_| {
        std::task::Poll::Ready(left.pop_front().map(|b| Ok(Frame::data(b))))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

/// The answer each API's path asks for: chat completions (streamed when
/// the body says so), Bedrock's `/model/{id}/converse` and
/// `/converse-stream`, Gemini's `:generateContent`; 404 to anything else,
/// so a row whose request went astray shows as failed.
fn cloud_answer(path: &str, body: &[u8]) -> Response<Body> {
    let c = clouds();
    let streamed = body.windows(13).any(|w| w == br#""stream":true"#);
    let (content_type, body) = if path == "/v1/chat/completions" && streamed {
        ("text/event-stream", pieces(&c.chat_stream))
    } else if path == "/v1/chat/completions" {
        (
            "application/json",
            Full::new(Bytes::from_static(OK.as_bytes())).boxed(),
        )
    } else if path.starts_with("/model/") && path.ends_with("/converse-stream") {
        (
            plano_core::eventstream::CONTENT_TYPE,
            pieces(&c.converse_stream),
        )
    } else if path.starts_with("/model/") && path.ends_with("/converse") {
        ("application/json", Full::new(c.converse.clone()).boxed())
    } else if path.starts_with("/v1beta/models/") && path.ends_with(":generateContent") {
        ("application/json", Full::new(c.gemini.clone()).boxed())
    } else {
        return Response::builder()
            .status(404)
            .body(Full::new(Bytes::from(format!("no API at {path}"))).boxed())
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()));
    };
    Response::builder()
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

/// A stream over an mpsc receiver, without pulling in tokio-stream.
fn tokio_stream<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_core::Stream<Item = T> {
    futures_util_stream::poll_fn(move |cx| rx.poll_recv(cx))
}

mod futures_util_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct PollFn<F>(F);

    pub fn poll_fn<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>>>(f: F) -> PollFn<F> {
        PollFn(f)
    }

    impl<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>> + Unpin> futures_core::Stream for PollFn<F> {
        type Item = T;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            (self.get_mut().0)(cx)
        }
    }
}

/// Serves `how` on a fresh loopback port; returns the port.
pub async fn serve(how: Answer) -> anyhow::Result<u16> {
    serve_on(0, how).await
}

/// Serves `how` on loopback `port` (0: any free one); returns the port.
pub async fn serve_on(port: u16, how: Answer) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, how));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}
