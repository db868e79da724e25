"""Per-client-key limits: the gateway's own 429 with Retry-After and
OpenAI's x-ratelimit-* headers, no provider call for a refused request, token
limits settled from the answers' usage (streamed ones too), the SDKs' retries
against it, and priorities when a model's quota runs low. Real planoai, real
Envoy, loopback mocks that report usage."""

import json
import threading
import time

import anthropic
import openai
import requests

from conftest import CHAT, GATEWAY, eventually, planoai, stats
from mock_provider import OK_BODY, Reply

BATCH_KEY = "batch-key-3f0c8d1e5a7b9264"
APP_KEY = "app-key-71d2e9a4c6b8f305"
RATELIMIT = ("limit-requests", "remaining-requests", "reset-requests",
             "limit-tokens", "remaining-tokens", "reset-tokens")

CONFIG = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
{listener}
            client_keys:
              - name: batch
                key: {batch}
{batch_extra}
              - name: app
                key: {app}
{app_extra}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{port}
            access_key: key-primary-0001
            default: true
{policy}
"""


def config(port, batch_extra="", app_extra="", listener="", policy="", more=""):
    return CONFIG.format(port=port, batch=BATCH_KEY, app=APP_KEY, batch_extra=batch_extra,
                         app_extra=app_extra, listener=listener, policy=policy) + more


def used(prompt, completion, **extra):
    """An answer that reports its usage."""
    body = dict(OK_BODY, usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                "total_tokens": prompt + completion})
    return Reply(body=body, **extra)


def post(key, timeout=30, **extra):
    body = dict({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, **extra)
    return requests.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def reset_ms(value):
    """An OpenAI-format duration (`1m0.5s`, `12s`, `20ms`) in milliseconds."""
    total, number = 0.0, ""
    units = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
    i = 0
    while i < len(value):
        c = value[i]
        if c.isdigit() or c == ".":
            number += c
            i += 1
            continue
        unit = "ms" if value[i:i + 2] == "ms" else c
        total += float(number) * units[unit]
        number, i = "", i + len(unit)
    return total


def test_sixty_a_minute_answers_sixty_of_a_hundred_and_refuses_forty_without_a_provider_call(
        gateway, providers):
    mock = providers(used(10, 5))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 60 }"))
    answers = []
    started = time.monotonic()
    for i in range(100):
        answers.append(post(BATCH_KEY))
        # 100 over 10 s.
        time.sleep(max(0.0, started + (i + 1) * 0.1 - time.monotonic()))
    assert time.monotonic() - started < 12
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert (len(ok), len(refused)) == (60, 40), [a.status_code for a in answers]
    assert mock.calls == 60
    for a in answers:
        for name in ("limit-requests", "remaining-requests", "reset-requests"):
            assert f"x-ratelimit-{name}" in a.headers, (name, dict(a.headers))
        assert a.headers["x-ratelimit-limit-requests"] == "60"
    assert [int(a.headers["x-ratelimit-remaining-requests"]) for a in ok] == list(range(59, -1, -1))
    for a in refused:
        assert a.headers["x-ratelimit-remaining-requests"] == "0"
        # The first second's requests leave the window a minute after they came.
        wait = int(a.headers["retry-after"])
        assert 49 <= wait <= 61, wait
        assert abs(int(a.headers["retry-after-ms"]) / 1000 - wait) < 1
        assert reset_ms(a.headers["x-ratelimit-reset-requests"]) > 49_000
        error = a.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests", error
        assert "batch" in error["message"] and "60 requests per minute" in error["message"]
        assert BATCH_KEY not in a.text
    # The gateway's own replies to the key state its limits too.
    bad = requests.post(CHAT, data=b"{", headers={"Authorization": f"Bearer {BATCH_KEY}"}, timeout=10)
    assert bad.status_code == 400 and bad.headers["x-ratelimit-remaining-requests"] == "0", bad.headers
    # Another key shares nothing of it.
    other = post(APP_KEY)
    assert other.status_code == 200 and "x-ratelimit-limit-requests" not in other.headers


def stream_used(prompt, completion):
    """A streamed answer whose last event reports its usage (as a provider
    asked with stream_options sends it)."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1700000000, "model": "mock",
             "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None}
    last = dict(chunk, choices=[], usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion})
    return Reply(stream=[f"data: {json.dumps(e)}\n\n" for e in (chunk, last)] + ["data: [DONE]\n\n"], gap=0.01)


def test_tokens_per_minute_hold_whole_and_streamed_answers_settled_from_their_usage(gateway, providers):
    # Each answer reports 200 tokens, more than its estimate (~20 in, 100 out):
    # the settled usage, not the estimate, is what fills the minute.
    mock = providers(*[stream_used(50, 150), used(50, 150)] * 10)
    gateway.up(config(mock.port, batch_extra="                limits: { tokens_per_minute: 1000 }"))
    statuses, remaining = [], []
    for i in range(10):
        r = post(BATCH_KEY, max_tokens=100, stream=i % 2 == 0)
        if r.status_code == 200:
            r.content  # the whole stream, its usage event included
            remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
        statuses.append(r.status_code)
        assert int(r.headers["x-ratelimit-limit-tokens"]) == 1000
    # Each answer left the minute its own estimate under what the ones before
    # it reported (200 each, streamed or not), not under their estimates.
    estimate = 1000 - remaining[0]
    assert 0 < estimate < 200, remaining
    assert remaining == [1000 - 200 * i - estimate for i in range(len(remaining))], remaining
    # 5 x 200 = 1000: the sixth would start past the limit.
    assert statuses == [200] * 5 + [429] * 5, statuses
    assert mock.calls == 5
    refused = post(BATCH_KEY, max_tokens=100)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.json()["error"]["type"] == "tokens"
    # Each key's spending against its limits, by its name only.
    status = planoai("status").stdout
    assert "batch: 5 requests, 1000/1000 tokens this minute; 1000 tokens today" in status, status
    assert BATCH_KEY not in status and APP_KEY not in status
    assert eventually(lambda: stats().get("wasmcustom.plano.client.batch.limited") == 6), stats()
    got = stats()
    assert got["wasmcustom.plano.client.batch.minute_tokens"] == 1000, got
    assert got["wasmcustom.plano.client.batch.day_tokens"] == 1000, got


def test_a_request_answered_with_retry_exhausted_is_settled_at_no_tokens(gateway, providers):
    mock = providers(Reply(status=503, body={"error": {"message": "down"}}))
    gateway.up(config(mock.port, batch_extra="                limits: { tokens_per_minute: 1000 }",
                      policy="""            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
""",
                      more=f"""          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{mock.port}
            access_key: key-secondary-0002
"""))
    exhausted = [post(BATCH_KEY, max_tokens=100) for _ in range(3)]
    for r in exhausted:
        assert r.status_code == 503 and r.json()["error"]["type"] == "retry_exhausted", r.text
    assert mock.calls == 6
    # No provider answered: the minute holds none of the three estimates.
    status = planoai("status").stdout
    assert "batch: 3 requests, 0/1000 tokens this minute; 0 tokens today" in status, status
    # Each was charged its estimate as it started, as every request is, and
    # its answer (the gateway's own) says so.
    for r in exhausted:
        assert 0 < 1000 - int(r.headers["x-ratelimit-remaining-tokens"]) < 200, dict(r.headers)


def test_a_limited_keys_answer_states_its_own_limits_not_the_providers(gateway, providers):
    quota = {"x-ratelimit-limit-requests": "5000", "x-ratelimit-remaining-requests": "4999",
             "x-ratelimit-reset-requests": "12ms", "x-ratelimit-limit-tokens": "800000",
             "x-ratelimit-remaining-tokens": "799000", "x-ratelimit-reset-tokens": "6ms"}
    mock = providers(used(10, 5, headers=quota))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 10 }"))
    limited = post(BATCH_KEY)
    assert limited.status_code == 200
    assert (limited.headers["x-ratelimit-limit-requests"], limited.headers["x-ratelimit-remaining-requests"]) \
        == ("10", "9"), limited.headers
    assert reset_ms(limited.headers["x-ratelimit-reset-requests"]) > 50_000, limited.headers
    # No token limit: no token headers, and none of the provider's.
    assert not [h for h in limited.headers if h.lower().endswith("-tokens")], limited.headers
    # A key without limits gets the provider's as they came.
    free = post(APP_KEY)
    assert {h: free.headers[h] for h in quota} == quota


def test_a_burst_cannot_overshoot_the_tokens_a_minute(gateway, providers):
    # Estimates (~20 in, 300 out) above the 200 each answer takes: ten at
    # once get three through (960 estimated), none over the limit.
    mock = providers(used(50, 150, delay=0.5))
    gateway.up(config(mock.port, batch_extra="                limits: { tokens_per_minute: 1000 }"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(BATCH_KEY, max_tokens=300).status_code))
               for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] * 3 + [429] * 7, results
    # Settled at 600, there is room for one more estimate, then none.
    assert [post(BATCH_KEY, max_tokens=300).status_code for _ in range(2)] == [200, 429]
    assert mock.calls == 4


def test_a_burst_of_underestimates_overshoots_by_at_most_their_shortfalls(gateway, providers):
    # Estimates (~20 in, 100 out) under the 200 each answer takes: ten at
    # once get 8 through (960 estimated), 1600 taken. The stated bound: the
    # limit plus what the requests in flight fell short, 8 x (200 - 120).
    mock = providers(used(50, 150, delay=0.5))
    gateway.up(config(mock.port, batch_extra="                limits: { tokens_per_minute: 1000 }"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(BATCH_KEY, max_tokens=100)))
               for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    served = [r for r in results if r.status_code == 200]
    # Each one admitted was held against the minute at its estimate as it
    # started: the first saw the limit less one estimate, the next less two.
    remaining = sorted((int(r.headers["x-ratelimit-remaining-tokens"]) for r in served), reverse=True)
    per_request = 1000 - remaining[0]
    # The estimate: the 100 tokens asked for and the prompt's few.
    assert 100 < per_request < 200, remaining
    taken = 200 * len(served)
    assert taken <= 1000 + len(served) * (200 - per_request), (taken, per_request, remaining)
    assert remaining == [1000 - k * per_request for k in range(1, len(served) + 1)], remaining
    assert len(served) == 8 and mock.calls == 8, [r.status_code for r in results]
    # Settled, the minute holds what was taken: nothing more fits.
    after = post(BATCH_KEY, max_tokens=100)
    assert after.status_code == 429 and after.headers["x-ratelimit-remaining-tokens"] == "0"


def test_the_anthropic_sdk_gets_an_anthropic_shaped_429(gateway, providers):
    mock = providers(Reply(body={"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                                 "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                                 "usage": {"input_tokens": 3, "output_tokens": 2}}))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 1 }",
                      more="""            format: anthropic
"""))
    client = anthropic.Anthropic(base_url=GATEWAY, api_key=BATCH_KEY, max_retries=0)
    ask = dict(model="openai/gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert client.messages.create(**ask).content[0].text == "hi"
    try:
        client.messages.create(**ask)
        raise AssertionError("the second request of a minute was served")
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
        assert e.body["type"] == "error" and e.body["error"]["type"] == "rate_limit_error", e.body
        assert int(e.response.headers["retry-after"]) >= 59
        assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert mock.calls == 1


def test_the_openai_sdk_waits_the_gateways_retry_after_and_does_not_spin(gateway, providers):
    mock = providers(used(10, 5))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 2 }"))
    first = time.time()
    assert [post(BATCH_KEY).status_code for _ in range(2)] == [200, 200]
    # Near the end of the minute, so the gateway's Retry-After is a few seconds.
    time.sleep(max(0.0, first + 55 - time.time()))
    attempts = []
    client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=BATCH_KEY)  # default retries: 2
    client._client.event_hooks["response"].append(
        lambda r: attempts.append((time.time(), r.status_code, r.headers.get("retry-after-ms"))))
    start = time.time()
    answer = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    took = time.time() - start
    assert answer.choices[0].message.content == "hello"
    statuses = [s for _, s, _ in attempts]
    assert statuses == [429, 200], attempts
    asked = int(attempts[0][2]) / 1000
    assert 1 <= asked <= 8, asked
    # It waited what it was told, not its own 0.5-8 s backoff, and no longer.
    gap = attempts[1][0] - attempts[0][0]
    assert asked <= gap <= asked + 1.5, (gap, asked)
    assert took < asked + 2
    assert mock.calls == 3


LOW_QUOTA = {"x-ratelimit-limit-requests": "100", "x-ratelimit-remaining-requests": "5",
             "x-ratelimit-reset-requests": "30s"}


def test_with_five_percent_left_a_low_priority_key_is_refused_and_a_high_one_served(gateway, providers):
    mock = providers(used(10, 5, headers=LOW_QUOTA))
    gateway.up(config(mock.port, batch_extra="                priority: 0",
                      app_extra="                priority: 10"))
    # Until an answer says how much is left, everyone is served.
    assert post(BATCH_KEY).status_code == 200
    refused = post(BATCH_KEY)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "quota_reserved" and "5.0% left" in error["message"], error
    assert 28 <= int(refused.headers["retry-after"]) <= 30, refused.headers
    assert mock.calls == 1
    served = [post(APP_KEY) for _ in range(3)]
    assert [a.status_code for a in served] == [200] * 3
    assert mock.calls == 4
    # The provider's own quota headers reach a key without limits as they came.
    assert served[0].headers["x-ratelimit-remaining-requests"] == "5"


def test_with_five_percent_left_a_low_priority_key_goes_to_its_fallback(gateway, providers):
    primary = providers(used(10, 5, headers=LOW_QUOTA))
    fallback = providers(used(10, 5))
    gateway.up(config(primary.port, batch_extra="                priority: 0",
                      app_extra="                priority: 10",
                      policy="""            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
""",
                      more=f"""          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-secondary-0002
"""))
    assert post(APP_KEY).status_code == 200
    low = post(BATCH_KEY)
    assert low.status_code == 200 and low.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet", low.headers
    high = post(APP_KEY)
    assert high.status_code == 200 and high.headers["x-plano-model"] == "openai/gpt-4o"
    assert (primary.calls, fallback.calls) == (2, 1)


def anthropic_event(name, **data):
    return f"event: {name}\ndata: {json.dumps(dict(type=name, **data))}\n\n"


def test_retry_exhausted_is_settled_at_the_tokens_a_failed_answer_read_whole_reported(gateway, providers):
    # The primary fails while its hedge is in flight: the hedge becomes the
    # retry, and its answer is read whole: an Anthropic stream whose
    # `message_start` reported a 300-token prompt, cut by an `error` event.
    # No attempt is left: `retry_exhausted`, settled at those 300 tokens.
    primary = providers(Reply(status=503, delay=0.5, body={"error": {"type": "server_error", "message": "down"}}))
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 300, "output_tokens": 0}}
    overloaded = {"type": "overloaded_error", "message": "Overloaded"}
    fallback = providers(Reply(stream=[anthropic_event("message_start", message=msg),
                                       anthropic_event("error", error=overloaded)], gap=0.6))
    gateway.up(config(primary.port, batch_extra="                limits: { tokens_per_minute: 1000 }",
                      policy="""            retry_policy:
              fallback_models: [anthropic/claude-x]
              default_strategy: different_provider
              default_max_attempts: 1
              hedge: { after_ms: 200 }
""",
                      more=f"""          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-native-0002
            format: anthropic
"""))
    remaining = []
    for _ in range(2):
        r = post(BATCH_KEY, max_tokens=100, stream=True)
        # The last attempt's status: the overload the stream reported.
        assert r.status_code == 529 and r.json()["error"]["type"] == "retry_exhausted", r.text
        assert r.headers["x-plano-attempts"] == "2", dict(r.headers)
        remaining.append(int(r.headers["x-ratelimit-remaining-tokens"]))
    assert (primary.calls, fallback.calls) == (2, 2)
    # Each answer states the key after its own charge (its estimate, ~120):
    # the second's is under the first's by the 300 the first settled at,
    # neither 0 nor the first's estimate.
    estimate = 1000 - remaining[0]
    assert 0 < estimate < 200 and estimate != 300, remaining
    assert remaining[1] == remaining[0] - 300, remaining
    status = planoai("status").stdout
    assert "batch: 2 requests, 600/1000 tokens this minute; 600 tokens today" in status, status
