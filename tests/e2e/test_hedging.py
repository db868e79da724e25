"""Hedged first tokens (issue 27): a streamed attempt with no output after
`hedge.after_ms` gets a second attempt to the next target in the order; the
first with output wins, the other is dropped and logged `hedge_lost`. With
the OpenAI SDK, and the Anthropic SDK through a translated hedge."""

import re
import time

import anthropic
import openai
import requests

from conftest import CHAT, GATEWAY, eventually, planoai, stats
from mock_provider import Reply
from test_gateway import HEADER
from test_stream_failures import chat_stream, claude_events

PRIMARY_TEXT = "primary-says"
FALLBACK_TEXT = "fallback-answer"


def config(primary, fallback, after_ms="400", extra=""):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-primary-0001
            default: true
            retry_policy:
              fallback_models: [openai/gpt-4o-mini]
              default_strategy: same_provider
              hedge: {{after_ms: {after_ms}}}
{extra}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
    """


def slow(lead, text=PRIMARY_TEXT, gap=0.01):
    """A stream whose headers come at once and its first token after `lead` s."""
    return Reply(stream=chat_stream(text, "!"), gap=gap, lead=lead)


def first_token(messages="hi"):
    """Seconds to the first content of an OpenAI SDK stream, its text, and its headers."""
    client = openai.OpenAI(base_url=GATEWAY + "/v1", api_key="client-key", max_retries=0, timeout=30)
    # A client in use: the SDK's first call on a new client imports its
    # resources and opens the connection (30-100 ms measured here, before
    # the request reaches the gateway), which is no part of the gateway's
    # time. `/v1/models` is the gateway's own answer: no provider call.
    assert client.models.list().data
    create = client.chat.completions.with_raw_response.create
    start = time.time()
    raw = create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": messages}], stream=True
    )
    first, text = None, ""
    for chunk in raw.parse():
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content:
            first = first or time.time() - start
            text += content
    return first, text, raw.headers


def counter(name):
    return stats().get(f"wasmcustom.plano.{name}", 0)


def counters():
    return {n: counter(n) for n in ("retries.hedge", "retries.status", "retries.timeout", "hedge_lost", "attempts")}


def moved(before):
    return {k: v - before[k] for k, v in counters().items() if v != before[k]}


def test_a_slow_primary_is_hedged_and_the_fallback_answers_first(gateway, providers):
    primary = providers(slow(3.0))
    # A hedge's answer comes whole: this fallback's is done just after its
    # first token, at 0.1 s.
    fallback = providers(slow(0.1, FALLBACK_TEXT, gap=0.002))
    gateway.up(config(primary, fallback))
    before = counters()
    took, text, headers = first_token()
    assert took < 0.6, took
    assert text == FALLBACK_TEXT + "!"
    assert headers["x-plano-attempts"] == "2"
    assert headers["x-plano-model"] == "openai/gpt-4o-mini"
    # The primary's connection is closed at once, not at its first token.
    sent = primary.requests[0]
    assert eventually(lambda: "closed_at" in sent, 3)
    assert sent["closed_at"] - sent["at"] < 1.0, sent["closed_at"] - sent["at"]
    # One hedge, one retry of the budget, no other retry.
    assert eventually(lambda: moved(before) == {"retries.hedge": 1, "hedge_lost": 1, "attempts": 2}), moved(before)
    assert eventually(lambda: re.search(r"attempt 1  openai/gpt-4o  hedge_lost  ", gateway.log()))
    assert eventually(lambda: re.search(r"attempt 2  openai/gpt-4o-mini  200  \d+ ms .*hedge yes", gateway.log()))
    assert (primary.calls, fallback.calls) == (1, 1)


def test_a_primary_with_output_first_wins_and_the_hedge_is_lost(gateway, providers):
    primary = providers(slow(0.8))
    fallback = providers(slow(2.0, FALLBACK_TEXT))
    gateway.up(config(primary, fallback))
    before = counters()
    took, text, headers = first_token()
    assert text == PRIMARY_TEXT + "!"
    assert 0.8 < took < 1.5, took
    assert headers["x-plano-model"] == "openai/gpt-4o"
    assert headers["x-plano-attempts"] == "2", "the lost hedge was an attempt"
    assert fallback.calls == 1, "the hedge was sent"
    # The lost hedge's connection is closed at once, not at its answer (2 s).
    sent = fallback.requests[0]
    assert eventually(lambda: "closed_at" in sent, 3)
    assert sent["closed_at"] - primary.requests[0]["at"] < 1.2, sent["closed_at"] - primary.requests[0]["at"]
    assert eventually(lambda: re.search(r"attempt 2  openai/gpt-4o-mini  hedge_lost  \d+ ms .*hedge yes", gateway.log()))
    assert moved(before) == {"retries.hedge": 1, "hedge_lost": 1, "attempts": 2}


def test_a_primary_failing_with_its_hedge_in_flight_waits_for_the_hedge(gateway, providers):
    # The primary fails after the hedge left: the hedge is its retry, no
    # second attempt goes to the fallback, and the budget is spent once.
    primary = providers(Reply(status=503, delay=0.7, body={"error": {"type": "server_error", "message": "primary-down"}}))
    fallback = providers(slow(1.0, FALLBACK_TEXT))
    gateway.up(config(primary, fallback))
    before = counters()
    took, text, headers = first_token()
    assert text == FALLBACK_TEXT + "!"
    assert headers["x-plano-attempts"] == "2"
    assert (primary.calls, fallback.calls) == (1, 1)
    assert 1.0 < took < 2.0, took
    assert eventually(lambda: moved(before) == {"retries.hedge": 1, "attempts": 2}), moved(before)
    assert eventually(lambda: re.search(r"attempt 1  openai/gpt-4o  503  ", gateway.log()))


def test_a_failed_hedge_leaves_the_primary_to_answer(gateway, providers):
    primary = providers(slow(1.0))
    fallback = providers(Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"type": "rate_limit", "message": "slow down"}}))
    gateway.up(config(primary, fallback))
    took, text, _ = first_token()
    assert text == PRIMARY_TEXT + "!"
    assert fallback.calls == 1
    assert eventually(lambda: re.search(r"attempt 2  openai/gpt-4o-mini  429  \d+ ms .*hedge yes", gateway.log()))
    # Its Retry-After blocks the fallback as any 429 would.
    assert eventually(lambda: "blocked model openai/gpt-4o-mini" in gateway.log())


def test_a_hedge_without_headers_in_its_timeout_fails_as_a_timeout(gateway, providers):
    # The attempt listener limits the hedge's time to headers, as any
    # attempt's: the fallback's timeout_ms is 500, its headers come at 2 s.
    primary = providers(slow(1.5))
    fallback = providers(Reply(delay=2.0, stream=chat_stream(FALLBACK_TEXT)))
    gateway.up(config(primary, fallback).replace(
        "access_key: key-fallback-0002", "access_key: key-fallback-0002\n            timeout_ms: 500"))
    took, text, _ = first_token()
    assert text == PRIMARY_TEXT + "!"
    assert 1.5 < took < 2.0, took
    assert eventually(lambda: re.search(r"attempt 2  openai/gpt-4o-mini  timeout  \d+ ms .*hedge yes", gateway.log()))
    line = re.search(r"attempt 2  openai/gpt-4o-mini  timeout  (\d+) ms", gateway.log())
    assert 450 < int(line.group(1)) < 900, line.group(0)


def test_a_client_leaving_while_its_hedge_is_in_flight_harms_nothing(gateway, providers):
    primary = providers(slow(2.0))
    fallback = providers(slow(1.0, FALLBACK_TEXT))
    gateway.up(config(primary, fallback))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    for _ in range(3):
        try:
            requests.post(CHAT, json=body, stream=True, timeout=0.7).content
        except requests.exceptions.RequestException:
            pass
    assert eventually(lambda: fallback.calls == 3)
    # Each hedge is cancelled with its client, before its first token (1 s).
    assert eventually(lambda: all("closed_at" in r for r in fallback.requests), 3)
    assert all(r["closed_at"] - r["at"] < 0.9 for r in fallback.requests)
    time.sleep(1.5)
    took, text, _ = first_token()
    assert text == FALLBACK_TEXT + "!"
    assert requests.get(GATEWAY + "/healthz", timeout=2).status_code == 200


def test_a_request_that_is_not_streamed_is_never_hedged(gateway, providers):
    primary = providers(Reply(delay=1.0))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback))
    resp = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert resp.status_code == 200
    assert resp.json()["served_by"] == primary.port
    assert fallback.calls == 0


def test_a_hedge_the_retry_budget_refuses_is_not_sent(gateway, providers):
    primary = providers(slow(1.0))
    fallback = providers(slow(0.1, FALLBACK_TEXT))
    budget = "              retry_budget: {ratio: 0.0, min_retries_per_second: 0}"
    gateway.up(config(primary, fallback, extra=budget))
    over = counter("retries_over_budget")
    took, text, _ = first_token()
    assert text == PRIMARY_TEXT + "!"
    assert took > 1.0
    assert fallback.calls == 0
    assert counter("retries_over_budget") == over + 1
    assert eventually(lambda: "no hedge, the retry budget is spent" in gateway.log())


def test_validate_refuses_a_bad_after_ms(tmp_path, providers):
    p = providers(Reply())
    for bad, says in [("0", "must be greater than 0"), ("700000", "is over 600000"),
                      ("-5", "invalid type: integer `-5`, expected u64"),
                      ("400ms", 'invalid type: string "400ms", expected u64')]:
        path = tmp_path / "hedge.yaml"
        path.write_text(config(p, p, after_ms=bad))
        result = planoai("validate", str(path), check=False)
        out = result.stdout + result.stderr
        assert result.returncode == 1, (bad, out)
        # The file, the hedge's line, and the field's path.
        line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "hedge:" in text)
        assert f"hedge.yaml:{line}:" in out, (bad, out)
        assert "retry_policy.hedge.after_ms" in out, (bad, out)
        assert says in out, (bad, out)


def test_an_anthropic_client_gets_a_translated_hedge_as_one_clean_message(gateway, providers):
    # A native Claude primary slow to its first token; the hedge goes to a
    # chat completions target, and its whole stream is translated.
    primary = providers(Reply(stream=claude_events(PRIMARY_TEXT), gap=0.01, lead=3.0))
    fallback = providers(slow(0.1, FALLBACK_TEXT))
    gateway.up(HEADER + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-native-0001
            format: anthropic
            default: true
            retry_policy:
              fallback_models: [openai/gpt-4o-mini]
              hedge: {{after_ms: 400}}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
    """)
    client = anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)
    start = time.time()
    with client.messages.stream(model="anthropic/claude-x", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert time.time() - start < 1.5
    assert text == FALLBACK_TEXT + "!"
    assert [b.text for b in final.content] == [FALLBACK_TEXT + "!"]
    assert final.stop_reason == "end_turn"
    assert fallback.requests[0]["path"] == "/v1/chat/completions"
