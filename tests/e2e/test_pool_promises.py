"""Pools, the README's promises beyond spread and rotation (test_pools.py):
where blocks land, which rule applies after a rotation, what a rotation
spends, and how each deployment is named and keyed."""

import requests

from conftest import ADMIN, chat, eventually, planoai
from mock_provider import Reply
from test_gateway import HEADER

FREE = Reply()


def limited(retry_after=None):
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return Reply(status=429, headers=headers, body={"error": {"message": "limited"}})


def pool(east, west, fallback, policy="default_strategy: different_provider", extra_model=""):
    """openai/gpt-4o as two deployments: east keyed by the entry's
    `access_key`, west by its own; anthropic as its fallback."""
    return HEADER + f"""
          - model: openai/gpt-4o
            default: true
            access_key: key-pool-shared-01
            deployments:
              - {{ name: east, base_url: "http://127.0.0.1:{east.port}" }}
              - {{ name: west, base_url: "http://127.0.0.1:{west.port}", access_key: key-west-0002 }}
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
              {policy}
{extra_model}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0004
    """


def until_east_is_hit():
    """Requests until the random spread has sent one to east; that answer."""
    for _ in range(60):
        r = chat()
        if r.headers.get("x-plano-attempts") == "2" or r.headers.get("x-plano-deployment") == "east":
            return r
    raise AssertionError("east was never chosen")


def blocks():
    return planoai("status").stdout


def test_a_model_counts_as_blocked_only_when_all_its_deployments_are(gateway, providers):
    east, west, fallback = providers(limited(30)), providers(FREE), providers(FREE)
    gateway.up(pool(east, west, fallback))
    first = until_east_is_hit()
    assert east.calls == 1 and first.status_code == 200
    assert first.headers["x-plano-deployment"] == "west" and first.headers["x-plano-model"] == "openai/gpt-4o"
    status = blocks()
    assert "deployment openai/gpt-4o[east]" in status and "model openai/gpt-4o" not in status, status
    # East alone is blocked: the model still serves, from west, with no fallback.
    for _ in range(10):
        r = chat()
        assert (r.status_code, r.headers["x-plano-deployment"], r.headers["x-plano-attempts"]) == (200, "west", "1")
    assert east.calls == 1 and fallback.calls == 0
    # West blocked too: now the model is, and requests go to the fallback at once.
    west.script = [limited(30)]
    r = chat()
    assert r.status_code == 200 and r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    calls = (east.calls, west.calls)
    for _ in range(10):
        r = chat()
        assert r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet" and r.headers["x-plano-attempts"] == "1"
    assert (east.calls, west.calls) == calls
    assert "deployment openai/gpt-4o[west]" in blocks()


def test_scope_provider_blocks_the_whole_provider_from_one_deployment(gateway, providers):
    east, west, fallback, mini = providers(limited(30)), providers(FREE), providers(FREE), providers(FREE)
    gateway.up(pool(east, west, fallback, """default_strategy: different_provider
              retry_after_handling: { scope: provider, apply_to: global }""", f"""
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{mini.port}
            retry_policy: {{ fallback_models: [anthropic/claude-3-5-sonnet] }}"""))
    until_east_is_hit()
    west_calls = west.calls
    # The 429 blocked openai: neither west nor another openai model is tried.
    r = chat()
    assert r.status_code == 200 and r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    r = chat(model="openai/gpt-4o-mini")
    assert r.status_code == 200 and r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert east.calls == 1 and west.calls == west_calls and mini.calls == 0


def test_after_the_rotation_same_model_retries_the_deployment_that_failed(gateway, providers, plano_home):
    east, west, fallback = providers(limited()), providers(limited()), providers(FREE)
    gateway.up(pool(east, west, fallback, "on_status_codes: [{ codes: [429], strategy: same_model, max_attempts: 1 }]"))
    resp = requests.post("http://127.0.0.1:12000/v1/chat/completions", headers={"x-request-id": "pooled-same-model"},
                         json={"model": "openai/gpt-4o", "messages": []}, timeout=30)
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["type"] == "retry_exhausted"
    tried = [(a["model"], a["deployment"]) for a in error["attempts"]]
    # One rotation (free of charge), then the rule's one same-model retry,
    # on the deployment that failed last.
    assert len(tried) == 3 and {d for _, d in tried[:2]} == {"east", "west"} and tried[2] == tried[1], tried
    assert {m for m, _ in tried} == {"openai/gpt-4o"}
    assert fallback.calls == 0 and east.calls + west.calls == 3
    # Log lines name the deployment as `model[name]`.
    line = f"request pooled-same-model  attempt 3  openai/gpt-4o[{tried[2][1]}]  429"
    assert eventually(lambda: line in planoai("logs", "-n", "50").stdout), planoai("logs", "-n", "50").stdout


def test_a_rule_with_max_attempts_0_rotates_to_no_deployment(gateway, providers):
    east, west, fallback = providers(limited()), providers(limited()), providers(FREE)
    gateway.up(pool(east, west, fallback, "on_status_codes: [{ codes: [429], strategy: different_provider, max_attempts: 0 }]"))
    resp = chat()
    assert resp.status_code == 429
    assert east.calls + west.calls == 1 and fallback.calls == 0


def test_rotations_spend_the_retry_budget(gateway, providers):
    east, west, fallback = providers(limited()), providers(limited()), providers(FREE)
    gateway.up(pool(east, west, fallback, """default_strategy: different_provider
              retry_budget: { ratio: 0, min_retries_per_second: 1, window_seconds: 1 }"""))
    # The budget holds one retry: the first request's rotation spends it,
    # so its fallback is over budget.
    resp = chat()
    assert resp.status_code == 429, resp.text
    error = resp.json()["error"]
    assert error["retry_budget"] == "exceeded", error
    assert [a["deployment"] for a in error["attempts"]] in (["east", "west"], ["west", "east"])
    assert fallback.calls == 0


def test_each_deployment_has_its_key_stats_and_quota_block(gateway, providers):
    low = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    east, west, fallback = providers(Reply(headers=low)), providers(FREE), providers(FREE)
    gateway.up(pool(east, west, fallback, """default_strategy: different_provider
              rate_limit_headers: { min_remaining_requests: 0 }"""))
    until_east_is_hit()
    # East reported its quota spent: it is blocked, the model is not.
    for _ in range(10):
        r = chat()
        assert (r.status_code, r.headers["x-plano-deployment"]) == (200, "west")
    assert east.calls == 1 and fallback.calls == 0
    status = blocks()
    assert "deployment openai/gpt-4o[east]" in status and "model openai/gpt-4o" not in status, status
    # An entry's access_key reaches the deployments without their own.
    assert east.requests[0]["headers"]["authorization"] == "Bearer key-pool-shared-01"
    assert west.requests[0]["headers"]["authorization"] == "Bearer key-west-0002"
    # Each deployment is a cluster of its own, counted apart.
    text = requests.get(f"{ADMIN}/stats?filter=upstream_rq_200$", timeout=5).text
    counted = {line.split(".")[1]: int(line.split(": ")[1]) for line in text.splitlines() if line.startswith("cluster.plano_")}
    assert counted["plano_0_openai_gpt-4o_east"] == east.calls, counted
    assert counted["plano_1_openai_gpt-4o_west"] == west.calls, counted


def test_a_latency_block_lands_on_the_slow_deployment(gateway, providers):
    east, west, fallback = providers(Reply(delay=1.0)), providers(FREE), providers(FREE)
    gateway.up(pool(east, west, fallback, """default_strategy: different_provider
              on_high_latency: { threshold_ms: 300, measure: ttfb, max_attempts: 1, block_duration_seconds: 30, apply_to: global }"""))
    first = until_east_is_hit()
    # Given up on at 300 ms and rotated to the other deployment, not the fallback.
    assert first.headers["x-plano-deployment"] == "west" and first.headers["x-plano-model"] == "openai/gpt-4o"
    for _ in range(10):
        r = chat()
        assert (r.headers["x-plano-deployment"], r.headers["x-plano-attempts"]) == ("west", "1")
    assert east.calls == 1 and fallback.calls == 0
    status = blocks()
    assert "deployment openai/gpt-4o[east]" in status and "model openai/gpt-4o" not in status, status
