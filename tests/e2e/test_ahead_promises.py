"""Ahead of the 429, the README's promises beyond test_ahead.py: pre-emptive
blocks only from a 2xx, capped and scoped like Retry-After blocks, read from
a streamed answer too, from the draft-standard headers and the token floor;
the log tails of a spent budget and a probe."""

import time

import requests

from conftest import CHAT, chat, eventually, planoai, stats
from mock_provider import Reply
from test_ahead import config
from test_gateway import HEADER

QUOTA = "              rate_limit_headers: { min_remaining_requests: 0 }"
SPENT = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}


def preemptive_blocks():
    return stats().get("wasmcustom.plano.preemptive_blocks", 0)


def test_only_a_2xx_answer_blocks_ahead(gateway, providers):
    primary = providers(Reply(status=503, headers=SPENT, body={"error": {"message": "down"}}))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, QUOTA + "\n              default_strategy: different_provider"))
    for _ in range(3):
        r = chat()
        assert r.status_code == 200 and r.headers["x-plano-attempts"] == "2"
    # A failed answer's quota headers block nothing: each request tries it.
    assert primary.calls == 3 and preemptive_blocks() == 0


def test_a_preemptive_block_is_capped_and_scoped_like_a_retry_after_block(gateway, providers):
    primary, mini, fallback = providers(Reply(headers=SPENT), Reply()), providers(Reply()), providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            default: true
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
              rate_limit_headers: {{ min_remaining_requests: 0 }}
              retry_after_handling: {{ scope: provider, max_retry_after_seconds: 1 }}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{mini.port}
            retry_policy: {{ fallback_models: [anthropic/claude-3-5-sonnet] }}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
    """)
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    blocked_at = time.time()
    # The provider is blocked, every model of it.
    assert chat(model="openai/gpt-4o-mini").headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert mini.calls == 0 and primary.calls == 1
    # Reported as 30 s, held for 1 s.
    time.sleep(max(0.0, blocked_at + 1.3 - time.time()))
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    assert primary.calls == 2 and preemptive_blocks() == 1


def test_a_streamed_answer_reports_its_quota_too(gateway, providers):
    primary = providers(Reply(headers=SPENT, stream=['data: {"x": 1}\n\n', "data: [DONE]\n\n"]))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, QUOTA))
    streamed = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": [], "stream": True}, timeout=10)
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    assert streamed.headers["x-plano-model"] == "openai/gpt-4o"
    r = chat()
    assert r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet" and r.headers["x-plano-attempts"] == "1"
    assert primary.calls == 1 and preemptive_blocks() == 1


def test_draft_standard_headers_block_ahead(gateway, providers):
    primary = providers(Reply(headers={"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "30"}))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, QUOTA))
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert primary.calls == 1 and preemptive_blocks() == 1


def test_tokens_block_only_with_a_token_floor(gateway, providers):
    low_tokens = {"x-ratelimit-remaining-requests": "500", "x-ratelimit-reset-requests": "1s",
                  "x-ratelimit-remaining-tokens": "800", "x-ratelimit-reset-tokens": "30s"}
    primary, fallback = providers(Reply(headers=low_tokens)), providers(Reply())
    gateway.up(config(primary, fallback, QUOTA))
    assert [chat().headers["x-plano-model"] for _ in range(2)] == ["openai/gpt-4o"] * 2
    assert preemptive_blocks() == 0
    gateway.up(config(primary, fallback, "              rate_limit_headers: { min_remaining_requests: 0, min_remaining_tokens: 1000 }"))
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert primary.calls == 3 and preemptive_blocks() == 1


def test_a_spent_budget_and_a_probe_end_their_log_lines(gateway, providers):
    primary = providers(Reply(status=503, body={"error": {"message": "down"}}))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, """              default_strategy: different_provider
              retry_budget: { ratio: 0, min_retries_per_second: 1, window_seconds: 1 }"""))
    # The budget's window is a clock second: both requests go early in one,
    # or the second could land in the next window and get its retry.
    time.sleep(1.02 - time.time() % 1)
    assert chat().status_code == 200  # the one retry the window holds
    refused = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []},
                            headers={"x-request-id": "over-budget"}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["retry_budget"] == "exceeded"
    spent = "request over-budget  attempt 1  openai/gpt-4o  503"
    assert eventually(lambda: any(spent in line and line.rstrip().endswith("retry_budget spent")
                                  for line in planoai("logs", "-n", "50").stdout.splitlines())), \
        planoai("logs", "-n", "50").stdout

    primary.script = [Reply(status=429, headers={"Retry-After": "1"}, body={"error": {"message": "limited"}})]
    time.sleep(1.1)  # a new budget window
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    time.sleep(1.3)  # the block has ended: the next request probes
    primary.script = [Reply()]
    probe = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []},
                          headers={"x-request-id": "the-probe"}, timeout=10)
    assert probe.headers["x-plano-model"] == "openai/gpt-4o"
    line = "request the-probe  attempt 1  openai/gpt-4o  200"
    assert eventually(lambda: any(line in l and l.rstrip().endswith("probe yes")
                                  for l in planoai("logs", "-n", "50").stdout.splitlines())), \
        planoai("logs", "-n", "50").stdout
