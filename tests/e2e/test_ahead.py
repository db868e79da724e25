"""Ahead of the 429: quota headers block a model before it refuses, a retry
budget bounds retries during an outage, and one probe tries a model whose
block has ended."""

import concurrent.futures
import threading
import time

import requests

from conftest import CHAT, chat, eventually, planoai, stats
from mock_provider import Reply
from test_gateway import HEADER



def config(primary, fallback, policy):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-primary-0001
            default: true
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
{policy}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
    """


QUOTA_POLICY = """              rate_limit_headers: { min_remaining_requests: 0 }"""


def rfc3339_in(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def check_preemptive_block(gateway, providers, low_quota_headers, block_ends_within=2.3):
    primary = providers(Reply(headers={}), Reply())
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, QUOTA_POLICY))
    # Set only now: a reset time must not run down while the gateway starts.
    primary.script[0].headers.update(low_quota_headers())
    first = chat()
    assert first.status_code == 200 and first.headers["x-plano-model"] == "openai/gpt-4o"
    blocked_at = time.time()
    second = chat()
    assert second.status_code == 200
    assert second.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert second.headers["x-plano-attempts"] == "1"  # no 429 first
    assert primary.calls == 1
    time.sleep(max(0.0, blocked_at + block_ends_within - time.time()))
    third = chat()
    assert third.headers["x-plano-model"] == "openai/gpt-4o"
    assert primary.calls == 2
    assert stats().get("wasmcustom.plano.preemptive_blocks") == 1
    assert eventually(lambda: "quota_block" in planoai("logs", "-n", "50").stdout)


def test_openai_quota_headers_block_before_the_429(gateway, providers):
    check_preemptive_block(gateway, providers, lambda: {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
    })


def test_anthropic_quota_headers_block_before_the_429(gateway, providers):
    # A whole-second time 3 s on: the block ends 2 to 3 s from now.
    check_preemptive_block(gateway, providers, lambda: {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": rfc3339_in(3),
    }, block_ends_within=3.3)


def test_quota_headers_are_ignored_unless_the_policy_reads_them(gateway, providers):
    primary = providers(Reply(headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, "              default_strategy: different_provider"))
    assert [chat().headers["x-plano-model"] for _ in range(3)] == ["openai/gpt-4o"] * 3


def test_an_outage_retries_within_the_budget(gateway, providers):
    primary = providers(Reply(status=503, body={"error": {"message": "down"}}))
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, """              default_strategy: different_provider
              retry_budget: { ratio: 0.2, min_retries_per_second: 1, window_seconds: 10 }"""))
    start = time.time()
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda _: chat(timeout=15), range(500)))
    took = time.time() - start
    assert took < 10, took  # everything within one window, and nothing hangs
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 503]
    assert len(ok) + len(refused) == 500
    # 20% of 500 requests, plus 1 a second over the 10 s window.
    assert fallback.calls == len(ok) <= 100 + 10, (fallback.calls, len(ok))
    assert len(ok) >= 90
    error = refused[0].json()["error"]
    assert error["type"] == "retry_exhausted" and error["retry_budget"] == "exceeded"
    assert "retry budget" in error["message"]
    assert stats().get("wasmcustom.plano.retries_over_budget") == len(refused)
    # The same, by model (a `model` label on /stats/prometheus).
    assert stats().get("wasmcustom.plano.model.retries_over_budget.model=.=openai/gpt-4o;.;") == len(refused)


def test_one_probe_when_a_block_ends(gateway, providers):
    limited = Reply(status=429, headers={"Retry-After": "2"}, body={"error": {"message": "limited"}})
    primary = providers(limited)
    fallback = providers(Reply())
    gateway.up(config(primary, fallback, "              default_strategy: different_provider"))
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    blocked_at = primary.requests[0]["at"]
    stop = time.time() + 4.5
    codes = []
    lock = threading.Lock()

    def client():
        with requests.Session() as s:
            while time.time() < stop:
                r = s.post(CHAT, json={"model": "openai/gpt-4o", "messages": []}, timeout=10)
                with lock:
                    codes.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(codes) == {200}, sorted(set(codes))
    assert len(codes) > 200
    # The block (2 s) ended twice in the 4.5 s: each time exactly one request
    # tried the still-limited primary, which renewed the block.
    tries = [r["at"] - blocked_at for r in primary.requests[1:]]
    assert len(tries) == 2, tries
    assert 2.0 <= tries[0] < 2.6 and 4.0 <= tries[1] < 4.8, tries
    assert stats().get("wasmcustom.plano.probes") == 2
