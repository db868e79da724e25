//! `make bench-pace` (`plano-bench pace [SECONDS]`): a provider with a
//! real token bucket (600 requests and 60,000 tokens a minute, refilling
//! continuously; past them a 429 with `Retry-After`), driven at twice its
//! capacity by 64 clients, each request with a 30 s deadline
//! (`x-plano-max-wait-ms`). One table: the provider's calls and the share
//! it answered 429, the clients' errors and waits, and the goodput as a
//! share of what the provider could take in the run; for one gateway,
//! three replicas sharing etcd, two client keys at 10:1, and LiteLLM when
//! it is installed in `.litellm-venv`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::replicas::Etcd;
use crate::rig;

/// The provider's minute: requests and tokens, refilling continuously.
const RPM: f64 = 600.0;
const TPM: f64 = 60_000.0;
const CLIENTS: usize = 64;
/// Twice the provider's 10 requests a second.
const OFFERED_PER_S: f64 = 2.0 * RPM / 60.0;
const DEADLINE_MS: u64 = 30_000;
/// Each request's `max_tokens`; its prompt is about as many tokens, and
/// its answer's `usage` says their sum: the request and token limits bind
/// together (10 requests of 100 tokens a second).
const MAX_TOKENS: u64 = 50;
const USAGE: u64 = 100;
const PORT: u16 = 12400;
const ADMIN: u16 = 9960;
const LITELLM_PORT: u16 = 12490;

/// The provider's bucket, full at the start as a provider's is after a
/// quiet minute.
struct Bucket {
    requests: f64,
    tokens: f64,
    at: Instant,
}

struct Provider {
    bucket: Mutex<Bucket>,
    calls: AtomicU64,
    refused: AtomicU64,
}

impl Provider {
    /// Takes a request of `estimate` tokens (its prompt and `max_tokens`,
    /// as OpenAI checks them) from the bucket, charging `USAGE` (the answer
    /// comes at once); or the seconds until the bucket has it.
    fn take(&self, estimate: f64) -> Result<(), u64> {
        let mut b = self.bucket.lock().unwrap();
        let now = Instant::now();
        let dt = now.duration_since(b.at).as_secs_f64();
        b.requests = (b.requests + dt * RPM / 60.0).min(RPM);
        b.tokens = (b.tokens + dt * TPM / 60.0).min(TPM);
        b.at = now;
        if b.requests >= 1.0 && b.tokens >= estimate {
            b.requests -= 1.0;
            b.tokens -= USAGE as f64;
            return Ok(());
        }
        let wait = ((1.0 - b.requests) / (RPM / 60.0)).max((estimate - b.tokens) / (TPM / 60.0));
        Err(wait.ceil().max(1.0) as u64)
    }
}

async fn answer(
    req: Request<Incoming>,
    p: Arc<Provider>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    p.calls.fetch_add(1, Ordering::Relaxed);
    let max_tokens = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["max_tokens"].as_u64())
        .unwrap_or(1024);
    let estimate = (body.len() as u64).div_ceil(4) + max_tokens;
    let response = match p.take(estimate as f64) {
        Ok(()) => {
            let prompt = USAGE - MAX_TOKENS;
            let text = format!(
                r#"{{"id":"chatcmpl-pace","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","content":"hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{MAX_TOKENS},"total_tokens":{USAGE}}}}}"#
            );
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(text)))
        }
        Err(wait) => {
            p.refused.fetch_add(1, Ordering::Relaxed);
            Response::builder()
                .status(429)
                .header("content-type", "application/json")
                .header("retry-after", wait.to_string())
                .body(Full::new(Bytes::from_static(
                    br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                )))
        }
    };
    Ok(response.unwrap())
}

/// Serves a fresh provider on a free loopback port.
async fn serve(p: Arc<Provider>) -> Result<u16> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let p = p.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, p.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(port)
}

fn provider() -> Arc<Provider> {
    Arc::new(Provider {
        bucket: Mutex::new(Bucket {
            requests: RPM,
            tokens: TPM,
            at: Instant::now(),
        }),
        calls: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    })
}

/// What one client's request saw.
struct Sample {
    key: usize,
    ok: bool,
    wait_ms: u64,
}

/// One client: a request every `CLIENTS / OFFERED_PER_S` seconds on a
/// fixed schedule (open loop: a request that waits does not hold back the
/// next, each on its own connection), to `port` as client key `key`, from
/// its start until `end`; then it waits for their answers.
async fn client(
    i: usize,
    port: u16,
    key: (usize, &'static str),
    path: &'static str,
    model: &'static str,
    end: Instant,
) -> Vec<Sample> {
    let gap = Duration::from_secs_f64(CLIENTS as f64 / OFFERED_PER_S);
    let mut next = Instant::now() + gap.mul_f64(i as f64 / CLIENTS as f64);
    let body = Bytes::from(format!(
        r#"{{"model":"{model}","max_tokens":{MAX_TOKENS},"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(((USAGE - MAX_TOKENS) * 4).saturating_sub(70) as usize)
    ));
    let mut sent = Vec::new();
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let body = body.clone();
        sent.push(tokio::spawn(async move {
            let start = Instant::now();
            let ok = tokio::time::timeout(
                Duration::from_millis(DEADLINE_MS + 2_000),
                send(&mut None, port, path, key.1, &body),
            )
            .await
            .is_ok_and(|answered| answered.unwrap_or(false));
            Sample {
                key: key.0,
                ok,
                wait_ms: start.elapsed().as_millis() as u64,
            }
        }));
        next += gap;
    }
    let mut out = Vec::new();
    for s in sent {
        if let Ok(sample) = s.await {
            out.push(sample);
        }
    }
    out
}

async fn send(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    port: u16,
    path: &str,
    key: &str,
    body: &Bytes,
) -> Result<bool> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        stream.set_nodelay(true)?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let request = Request::post(path)
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("x-plano-max-wait-ms", DEADLINE_MS.to_string())
        .body(Full::new(body.clone()))?;
    let resp = match sender
        .as_mut()
        .context("no connection")?
        .send_request(request)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            *sender = None;
            return Err(e.into());
        }
    };
    let ok = resp.status() == 200;
    resp.into_body().collect().await?;
    Ok(ok)
}

/// One row of the table.
struct Figures {
    name: String,
    calls: u64,
    refused: u64,
    samples: Vec<Sample>,
    seconds: f64,
}

fn quantile(mut waits: Vec<u64>, q: f64) -> f64 {
    if waits.is_empty() {
        return 0.0;
    }
    waits.sort_unstable();
    let at = ((waits.len() as f64 * q).ceil() as usize).clamp(1, waits.len()) - 1;
    waits[at] as f64 / 1000.0
}

impl Figures {
    fn print(&self, keys: &[&str]) {
        let served = self.calls - self.refused;
        // The provider's capacity over the run (its answers to requests
        // still waiting when the load stops included): its 10 requests a
        // second; and all it could have taken, its full bucket too.
        let capacity = RPM / 60.0 * self.seconds;
        let could = RPM + capacity;
        let errors = self.samples.iter().filter(|s| !s.ok).count();
        let waits = |key: Option<usize>| {
            quantile_pair(
                self.samples
                    .iter()
                    .filter(|s| s.ok && key.is_none_or(|k| s.key == k))
                    .map(|s| s.wait_ms)
                    .collect(),
            )
        };
        let (p50, p99) = waits(None);
        let per_key = if keys.len() > 1 {
            keys.iter()
                .enumerate()
                .map(|(i, name)| {
                    let n = self.samples.iter().filter(|s| s.key == i).count();
                    format!("{name} ({n} requests): p99 {:.2} s", waits(Some(i)).1)
                })
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            String::new()
        };
        println!(
            "| {} ({:.0} s) | {} | {:.1}% | {} of {} | {:.2} s | {:.2} s | {:.0}% | {:.0}% | {} |",
            self.name,
            self.seconds,
            self.calls,
            100.0 * self.refused as f64 / (self.calls.max(1)) as f64,
            errors,
            self.samples.len(),
            p50,
            p99,
            100.0 * served as f64 / capacity,
            100.0 * served as f64 / could,
            per_key
        );
    }
}

fn quantile_pair(waits: Vec<u64>) -> (f64, f64) {
    (quantile(waits.clone(), 0.5), quantile(waits, 0.99))
}

fn header() {
    println!(
        "| row | provider calls | provider 429s | client errors | client p50 wait | client p99 wait | goodput (% of 10 req/s) | of all the bucket allowed | per key |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

const KEYS: [&str; 2] = ["batch-key-5d1c8e3a7f2b9046", "agent-key-9e4b2c7d1a5f8360"];

fn gateway_config(port: u16, mock: u16, shared: Option<u16>, keyed: bool) -> String {
    let keys = if keyed {
        format!(
            "\n    client_keys:\n      - {{ name: batch, key: {} }}\n      - {{ name: agent, key: {} }}",
            KEYS[0], KEYS[1]
        )
    } else {
        String::new()
    };
    let shared = shared.map_or(String::new(), |etcd| {
        format!("shared_state:\n  etcd_endpoints: [http://127.0.0.1:{etcd}]\n")
    });
    format!(
        "version: v0.3.0\nlisteners:\n  - type: model\n    name: l\n    port: {port}\n    max_queue_ms: {DEADLINE_MS}\n    max_queued: 1000{keys}\nmodel_providers:\n  - model: openai/gpt-4o\n    base_url: http://127.0.0.1:{mock}\n    access_key: bench-key\n    default: true\n    rpm: {RPM}\n    tpm: {TPM}\n{shared}"
    )
}

/// Drives `ports` (client `i` to `ports[i % len]`) with the 64 clients,
/// the first `keyed.0` of each ten as key 0 and the rest as key 1.
async fn drive(
    name: &str,
    provider: &Arc<Provider>,
    ports: &[u16],
    keyed: bool,
    path: &'static str,
    model: &'static str,
    duration: Duration,
) -> Result<Figures> {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let port = ports[i % ports.len()];
        // 10:1 by clients: every eleventh client is the light key's.
        let key = if keyed && i % 11 == 10 {
            (1, KEYS[1])
        } else {
            (0, KEYS[0])
        };
        tasks.push(tokio::spawn(client(i, port, key, path, model, end)));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    Ok(Figures {
        name: name.to_string(),
        calls: provider.calls.load(Ordering::Relaxed),
        refused: provider.refused.load(Ordering::Relaxed),
        samples,
        seconds: start.elapsed().as_secs_f64(),
    })
}

pub async fn run(home: &Path, duration: Duration) -> Result<()> {
    let dir = home.join("pace");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    println!(
        "A provider's token bucket of {RPM} requests and {TPM} tokens a minute, {CLIENTS} clients offering {OFFERED_PER_S} requests a second for {} s, each with a {} s deadline. Open loop: a request that waits does not hold back the next. A row's seconds run until its last answer; capacity is 10 requests a second over them, and the bucket, full at the start, allowed 600 more.\n",
        duration.as_secs(),
        DEADLINE_MS / 1000
    );
    header();

    // The gateways' three rows run at once (each its own provider, ports
    // and Envoys: 20 requests a second each is little work), so that the
    // run, each row's 30 s of waiting after its load included, stays short.
    let (one, three, keyed) = (provider(), provider(), provider());
    let one_mock = serve(one.clone()).await?;
    let three_mock = serve(three.clone()).await?;
    let keyed_mock = serve(keyed.clone()).await?;
    let etcd = Etcd::start(&dir)?;
    let mut envoys = vec![rig::rendered(
        &dir,
        "one",
        &gateway_config(PORT, one_mock, None, false),
        PORT,
        ADMIN,
        110,
        &[],
    )?];
    let ports = [PORT + 1, PORT + 2, PORT + 3];
    for (i, port) in ports.iter().enumerate() {
        let config = gateway_config(*port, three_mock, Some(etcd.port()), false);
        envoys.push(rig::rendered(
            &dir,
            &format!("replica{i}"),
            &config,
            *port,
            ADMIN + 2 + 2 * i as u16,
            111 + i as u32,
            &[],
        )?);
    }
    envoys.push(rig::rendered(
        &dir,
        "keys",
        &gateway_config(PORT + 4, keyed_mock, None, true),
        PORT + 4,
        ADMIN + 10,
        115,
        &[],
    )?);
    // The replicas find each other through etcd before the load.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let chat = "/v1/chat/completions";
    let model = "openai/gpt-4o";
    let (one, three, keyed) = tokio::try_join!(
        drive("one gateway", &one, &[PORT], false, chat, model, duration),
        drive(
            "three replicas, etcd",
            &three,
            &ports,
            false,
            chat,
            model,
            duration
        ),
        drive(
            "two keys at 10:1, one gateway",
            &keyed,
            &[PORT + 4],
            true,
            chat,
            model,
            duration
        ),
    )?;
    one.print(&[]);
    three.print(&[]);
    keyed.print(&["batch", "agent"]);
    drop(envoys);
    drop(etcd);

    match litellm(&dir, duration).await {
        Ok(row) => row.print(&[]),
        Err(reason) => {
            println!("| LiteLLM, rpm/tpm and cooldowns | not measured: {reason:#} | | | | | | | |")
        }
    }
    Ok(())
}

/// The same load through LiteLLM's proxy with the deployment's `rpm`/`tpm`
/// and its cooldowns, when `.litellm-venv` has it.
async fn litellm(dir: &Path, duration: Duration) -> Result<Figures> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.litellm-venv/bin/litellm");
    anyhow::ensure!(
        bin.exists(),
        "LiteLLM is not installed in .litellm-venv ({})",
        bin.display()
    );
    let p = provider();
    let mock = serve(p.clone()).await?;
    let config = dir.join("litellm.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n      api_base: http://127.0.0.1:{mock}/v1\n      api_key: bench-key\n      rpm: {RPM}\n      tpm: {TPM}\nrouter_settings:\n  routing_strategy: usage-based-routing-v2\n  enable_pre_call_checks: true\n  num_retries: 3\n  allowed_fails: 3\n  cooldown_time: 5\n  timeout: {}\ngeneral_settings:\n  master_key: {}\n",
            DEADLINE_MS / 1000,
            format_args!("sk-{}", KEYS[0])
        ),
    )?;
    let log = std::fs::File::create(dir.join("litellm.log"))?;
    let mut child = std::process::Command::new(&bin)
        .args(["--config", &config.display().to_string()])
        .args(["--port", &LITELLM_PORT.to_string(), "--host", "127.0.0.1"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start litellm")?;
    let up = (|| {
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", LITELLM_PORT)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::bail!(
            "the LiteLLM proxy did not listen in 60 s (see {})",
            dir.join("litellm.log").display()
        )
    })();
    let figures = match up {
        Ok(()) => drive_litellm(&p, duration).await,
        Err(e) => Err(e),
    };
    let _ = child.kill();
    let _ = child.wait();
    figures
}

async fn drive_litellm(p: &Arc<Provider>, duration: Duration) -> Result<Figures> {
    static MASTER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    let key = *MASTER.get_or_init(|| Box::leak(format!("sk-{}", KEYS[0]).into_boxed_str()));
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        tasks.push(tokio::spawn(client(
            i,
            LITELLM_PORT,
            (0, key),
            "/v1/chat/completions",
            "gpt-4o",
            end,
        )));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    Ok(Figures {
        name: "LiteLLM proxy, rpm/tpm and cooldowns".into(),
        calls: p.calls.load(Ordering::Relaxed),
        refused: p.refused.load(Ordering::Relaxed),
        samples,
        seconds: start.elapsed().as_secs_f64(),
    })
}
