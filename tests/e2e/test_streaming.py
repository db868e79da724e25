"""Streamed answers through a failover: every attempt goes through Envoy's
router, so the fallback's chunks reach the client as the fallback sends them,
and `timeout_ms` limits only the time to response headers."""

import json
import time

import openai
import pytest
import requests

from conftest import CHAT, planoai, stats
from mock_provider import Reply
from test_gateway import HEADER


CHUNKS = 8
GAP = 0.5


def sse(n=CHUNKS):
    return [f'data: {{"choices":[{{"delta":{{"content":"c{i}"}}}}]}}\n\n' for i in range(n)] + ["data: [DONE]\n\n"]


def gateway_config(primary, fallback, policy="", primary_extra="", fallback_extra=""):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-primary-0001
            default: true
{primary_extra}
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
{policy}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
{fallback_extra}
    """


def stream_chat(timeout=60):
    """Sends a streamed request; returns the response, each data line's
    arrival time (seconds since the request was sent), and the lines."""
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    start = time.time()
    resp = requests.post(CHAT, json=body, stream=True, timeout=timeout)
    arrivals, lines, raw = [], [], []
    for line in resp.iter_lines():
        raw.append(line)
        if line.startswith(b"data:"):
            arrivals.append(time.time() - start)
            lines.append(line)
    resp._content = b"\n".join(raw)
    return resp, arrivals, lines, start


def assert_streamed_as_sent(fallback, arrivals, lines, start):
    """Every chunk arrived, and each no later than 0.5 s after the fallback
    began sending (chunk i leaves the fallback i*GAP after its headers)."""
    assert len(lines) == CHUNKS + 1, lines
    sent_at = fallback.requests[-1]["at"] - start
    for i, at in enumerate(arrivals[:CHUNKS]):
        assert at <= sent_at + i * GAP + 0.5, (i, at, sent_at, arrivals)
    # Spread over the stream's duration: not delivered in one piece at the end.
    assert arrivals[CHUNKS - 1] - arrivals[0] >= (CHUNKS - 2) * GAP


TRIGGERS = {
    "429": dict(
        primary=Reply(status=429, body={"error": {"message": "primary-limited"}}),
        policy="""              default_strategy: different_provider""",
        primary_extra="",
    ),
    "timeout": dict(
        primary=Reply(delay=3.0),
        policy="""              on_timeout: { strategy: different_provider, max_attempts: 1 }""",
        primary_extra="            timeout_ms: 1000",
    ),
    "ttfb": dict(
        primary=Reply(delay=3.0),
        policy="""              on_high_latency:
                threshold_ms: 1000
                measure: ttfb
                strategy: different_provider
                max_attempts: 1
                block_duration_seconds: 1""",
        primary_extra="",
    ),
}


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
def test_fallback_streams_chunk_by_chunk_after_each_trigger(gateway, providers, trigger):
    t = TRIGGERS[trigger]
    primary = providers(t["primary"])
    fallback = providers(Reply(stream=sse(), gap=GAP))
    gateway.up(gateway_config(primary, fallback, t["policy"], t["primary_extra"]))
    resp, arrivals, lines, start = stream_chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-attempts"] == "2"
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert not any(k.lower().startswith("x-envoy-") for k in resp.headers)
    assert primary.calls == 1 and fallback.calls == 1
    assert_streamed_as_sent(fallback, arrivals, lines, start)
    retried = fallback.requests[0]
    assert json.loads(retried["body"])["model"] == "claude-3-5-sonnet"
    assert retried["headers"]["authorization"] == "Bearer key-fallback-0002"
    assert not any(k.startswith(("x-envoy-", "x-plano-")) for k in retried["headers"]), retried["headers"]
    if trigger != "429":
        # The abandoned attempt was cut at its limit (1 s), not waited out.
        assert fallback.requests[0]["at"] - start < 2.0
    # Envoy's access log names each attempt's real target.
    rid = retried["headers"]["x-request-id"]
    want = [f"attempt {rid} -> plano_0_openai_gpt-4o", f"attempt {rid} -> plano_1_anthropic_claude-3-5-sonnet 200"]
    deadline = time.time() + 5
    while time.time() < deadline and not all(w in planoai("logs", "--envoy", "-n", "200").stdout for w in want):
        time.sleep(0.2)
    log = planoai("logs", "--envoy", "-n", "200").stdout
    assert all(w in log for w in want), log[-1500:]


def test_a_stream_longer_than_timeout_ms_after_a_failover_completes(gateway, providers):
    primary = providers(Reply(status=429))
    fallback = providers(Reply(stream=sse(6), gap=0.5))
    gateway.up(gateway_config(primary, fallback, "              default_strategy: different_provider",
                              fallback_extra="            timeout_ms: 1000"))
    resp, arrivals, lines, _ = stream_chat()
    assert resp.status_code == 200
    assert len(lines) == 7 and lines[-1] == b"data: [DONE]"
    assert arrivals[-1] >= 3.0  # 3x the fallback's timeout_ms, and not cut


def test_a_first_token_later_than_timeout_ms_streams_to_its_end(gateway, providers):
    """`timeout_ms` is the time to the provider's headers. A model that sends
    them and its role chunk at once, then thinks past `timeout_ms` + 1 s
    before its first token (the attempt filter holds the headers until
    then), is neither cut nor failed over."""
    role = 'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
    primary = providers(Reply(stream=[role] + sse(2), gap=[2.5, 0.05, 0.05, 0]))
    fallback = providers(Reply(stream=sse(2), gap=0.05))
    gateway.up(gateway_config(primary, fallback, "              default_strategy: different_provider",
                              primary_extra="            timeout_ms: 1000"))
    resp, arrivals, lines, _ = stream_chat()
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-attempts"] == "1", resp.text
    assert lines == [role.strip().encode()] + [line.strip().encode() for line in sse(2)], lines
    assert fallback.calls == 0
    # The first token came at 2.5 s, 1.5 s past timeout_ms + 1 s.
    assert arrivals[1] >= 2.4, arrivals


def test_a_streamed_retry_waits_its_backoff_then_streams(gateway, providers):
    primary = providers(Reply(status=503), Reply(stream=sse(3), gap=0.1))
    fallback = providers(Reply(status=503))
    gateway.up(gateway_config(primary, fallback, """              default_strategy: same_model
              default_max_attempts: 1
              backoff: { apply_to: same_model, base_ms: 600, max_ms: 600, jitter: false }"""))
    resp, arrivals, lines, start = stream_chat()
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-attempts"] == "2"
    gap = primary.requests[1]["at"] - primary.requests[0]["at"]
    assert 0.55 <= gap < 1.2, gap
    assert len(lines) == 4
    assert fallback.calls == 0


def test_streamed_retries_exhausted_give_the_error_whole(gateway, providers):
    primary = providers(Reply(status=429, body={"error": {"message": "primary-limited"}}))
    fallback = providers(Reply(status=503, body={"error": {"message": "fallback-down"}}))
    gateway.up(gateway_config(primary, fallback, "              default_strategy: different_provider"))
    resp, _, _, _ = stream_chat()
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "retry_exhausted"
    assert [a["status"] for a in error["attempts"]] == [429, 503]
    assert "limited" not in resp.text and "fallback-down" not in resp.text
    assert stats().get("wasmcustom.plano.retries_exhausted") == 1


def test_the_openai_sdk_streams_through_a_failover_and_sees_the_exhausted_error(gateway, providers):
    primary = providers(Reply(status=429), Reply(status=429), Reply(status=503))
    fallback = providers(Reply(stream=sse(4), gap=0.4), Reply(status=503))
    gateway.up(gateway_config(primary, fallback, "              default_strategy: different_provider"))
    client = openai.OpenAI(base_url="http://127.0.0.1:12000/v1", api_key="client-key", max_retries=0)

    start = time.time()
    stream = client.chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got = [(chunk.choices[0].delta.content, time.time() - start) for chunk in stream]
    assert [c for c, _ in got] == ["c0", "c1", "c2", "c3"]
    # Chunks came as the fallback sent them (0.4 s apart), not all at the end.
    assert got[3][1] - got[0][1] >= 1.0, got
    assert got[0][1] < 1.0, got

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert caught.value.status_code == 503
    body = caught.value.body
    assert body["type"] == "retry_exhausted", body
    assert [a["status"] for a in body["attempts"]] == [429, 503]
