"""Pools: several deployments (keys, endpoints) behind one model, spread by
weight, rotated on a 429 before any fallback model."""

import concurrent.futures
import time

import requests

from conftest import CHAT, chat, planoai
from mock_provider import Reply

HEADER = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
        model_providers:"""


def pool_config(a, b, c, fallback, policy="default_strategy: different_provider"):
    return HEADER + f"""
          - model: openai/gpt-4o
            default: true
            deployments:
              - {{ name: east, base_url: "http://127.0.0.1:{a.port}", access_key: key-east-0001 }}
              - {{ name: west, base_url: "http://127.0.0.1:{b.port}", access_key: key-west-0002 }}
              - {{ name: north, base_url: "http://127.0.0.1:{c.port}", access_key: key-north-003, weight: 2 }}
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
              {policy}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-04
    """


def send(n, threads=16):
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: chat(), range(n)))


def test_requests_spread_by_weight(gateway, providers):
    a, b, c, fallback = providers(Reply()), providers(Reply()), providers(Reply()), providers(Reply())
    gateway.up(pool_config(a, b, c, fallback))
    answers = send(400)
    assert {r.status_code for r in answers} == {200}
    shares = [p.calls / 400 for p in (a, b, c)]
    # Weights 1:1:2 -> 25/25/50, each within 10% of its share.
    for share, want in zip(shares, [0.25, 0.25, 0.5]):
        assert abs(share - want) <= want * 0.1, shares
    assert fallback.calls == 0
    # Each deployment got its own key; responses name the deployment.
    assert a.requests[0]["headers"]["authorization"] == "Bearer key-east-0001"
    assert c.requests[0]["headers"]["authorization"] == "Bearer key-north-003"
    assert {r.headers["x-plano-deployment"] for r in answers} == {"east", "west", "north"}
    assert {r.headers["x-plano-model"] for r in answers} == {"openai/gpt-4o"}


def test_a_limited_deployment_is_rotated_away_from_and_blocked_alone(gateway, providers):
    limited = Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"message": "limited"}})
    a, b, c, fallback = providers(Reply()), providers(Reply()), providers(limited), providers(Reply())
    gateway.up(pool_config(a, b, c, fallback))
    # Until north is hit once, some requests go there; each rotates at once.
    first = None
    for _ in range(40):
        r = chat()
        assert r.status_code == 200
        if c.calls:
            first = r
            break
    assert first is not None, "north was never chosen"
    assert first.headers["x-plano-attempts"] == "2"
    assert first.headers["x-plano-deployment"] in {"east", "west"}
    assert first.headers["x-plano-model"] == "openai/gpt-4o"
    blocked_at = time.time()
    before = (a.calls, b.calls)
    answers = send(200)
    assert time.time() - blocked_at < 5
    assert {r.status_code for r in answers} == {200}
    assert c.calls == 1  # exactly one call in the following 5 s
    assert fallback.calls == 0
    shared = (a.calls - before[0], b.calls - before[1])
    assert sum(shared) == 200 and min(shared) >= 70, shared
    status = planoai("status").stdout
    assert "deployment openai/gpt-4o[north]" in status, status


def test_when_every_deployment_is_limited_the_fallback_model_takes_over(gateway, providers):
    limited = Reply(status=429, body={"error": {"message": "limited"}})
    a, b, c, fallback = providers(limited), providers(limited), providers(limited), providers(Reply())
    gateway.up(pool_config(a, b, c, fallback, "default_strategy: different_provider\n              default_max_attempts: 1"))
    r = chat()
    assert r.status_code == 200
    assert r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert r.headers["x-plano-attempts"] == "4"
    assert (a.calls, b.calls, c.calls, fallback.calls) == (1, 1, 1, 1)
    # A stream follows the same order through the router.
    body = {"model": "openai/gpt-4o", "messages": [], "stream": True}
    streamed = requests.post(CHAT, json=body, timeout=10)
    assert streamed.status_code == 200 and streamed.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"


def test_a_single_key_entry_is_unchanged(gateway, providers):
    p = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{p.port}
            access_key: key-single-0001
    """)
    r = chat()
    assert r.status_code == 200 and "x-plano-deployment" not in r.headers
