"""Observability: a real Prometheus (Debian's `prometheus`, started here on
loopback) scrapes the gateway's admin under mixed traffic (successes, 429s,
failovers, streams, a budget refusal); every PromQL expression of the shipped
Grafana dashboard shows a value above zero, and the token counts are what the
mocks reported."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import ADMIN, CHAT, eventually
from mock_provider import Reply
from test_gateway import HEADER

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "plano-dashboard.json"
PROMETHEUS = "http://127.0.0.1:9090"
CI_KEY, APP_KEY = "ci-key-0123456789abcdef", "app-key-0123456789abcdef"


def answer(prompt, completion):
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "mock",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    return Reply(body=body)


def streamed(prompt, completion):
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
    last = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    return Reply(stream=[f"data: {json.dumps(chunk)}\n\n", f"data: {json.dumps(last)}\n\n", "data: [DONE]\n\n"], gap=0.01)


def config(east, west, mini, mistral, fallback, o1, paced):
    return HEADER.replace("        model_providers:", f"""            client_keys:
              - {{ name: ci, key: {CI_KEY} }}
              - {{ name: app, key: {APP_KEY} }}
        model_providers:""") + f"""
          - model: openai/gpt-4o
            default: true
            deployments:
              - {{ name: east, base_url: "http://127.0.0.1:{east.port}", access_key: key-east-0001 }}
              - {{ name: west, base_url: "http://127.0.0.1:{west.port}", access_key: key-west-0002 }}
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{mini.port}
            access_key: key-mini-00003
          - model: mistral/mistral-large
            base_url: http://127.0.0.1:{mistral.port}
            access_key: key-mistral-04
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-05
          - model: openai/o1
            base_url: http://127.0.0.1:{o1.port}
            access_key: key-o1-0000006
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
              retry_budget: {{ ratio: 0, min_retries_per_second: 0 }}
          - model: openai/gpt-4.1
            base_url: http://127.0.0.1:{paced.port}
            access_key: key-paced-00007
            rpm: 1
            tpm: 100000
    """


@pytest.fixture
def prometheus():
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed: `make setup` installs it")
    with tempfile.TemporaryDirectory(prefix="plano-prom-") as home:
        conf = Path(home) / "prometheus.yml"
        # The shipped example, scraping every second for the test.
        example = (DASHBOARD.parents[1] / "prometheus" / "prometheus.yml").read_text()
        conf.write_text(example.replace("scrape_interval: 15s", "scrape_interval: 1s"))
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={home}/data",
             "--web.listen-address=127.0.0.1:9090", "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.DEVNULL, stderr=open(Path(home) / "log", "w"))
        try:
            assert eventually(lambda: ready(), 20), (Path(home) / "log").read_text()[-2000:]
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def ready():
    try:
        return requests.get(f"{PROMETHEUS}/-/ready", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def query(expr):
    resp = requests.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert resp["status"] == "success", (expr, resp)
    return resp["data"]["result"]


def values(expr, by):
    return {r["metric"].get(by, ""): float(r["value"][1]) for r in query(expr)}


def send(model, key, n, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    out = []
    for _ in range(n):
        r = requests.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200, r.text
        out.append(r)
    return out


def test_prometheus_scrapes_every_dashboard_query(gateway, providers, prometheus):
    east = providers(answer(11, 7))
    west = providers(*(Reply(status=429, headers={"Retry-After": after}, body={"error": {"message": "limited"}})
                       for after in ("1", "30")))
    mini = providers(streamed(13, 4))
    mistral = providers(Reply(status=503, body={"error": {"message": "down"}}))
    fallback = providers(answer(5, 3))
    o1 = providers(Reply(status=503, body={"error": {"message": "down"}}))
    paced = providers(answer(2, 1))
    gateway.up(config(east, west, mini, mistral, fallback, o1, paced))
    # Prometheus has scraped the start-up's zeros before any event: each
    # rate below then rises from a sample taken before it.
    assert eventually(lambda: query("plano_model_requests"), 20)
    # First (west's 30 s block below must outlast the panels' check): a
    # paced model's minute (1 request) filled, then a request that waits
    # 3 s for room (scraped while it waits) and gets the gateway's 429.
    send("openai/gpt-4.1", CI_KEY, 1)
    waited = requests.post(CHAT, json={"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
                           headers={"Authorization": f"Bearer {CI_KEY}", "x-plano-max-wait-ms": "3000"}, timeout=30)
    assert waited.status_code == 429 and waited.json()["error"]["type"] == "pacing", waited.text

    # Until west is chosen once: its 429 rotates to east and blocks it for
    # 1 s. A series is born at its first event, which no rate shows, so west's
    # 429s are counted in a scrape and then once more: when its block ends,
    # the probe's 429 blocks it for 30 s.
    answered = send("openai/gpt-4o", CI_KEY, 1)
    while not west.calls and len(answered) < 40:
        answered += send("openai/gpt-4o", CI_KEY, 1)
    assert west.calls == 1
    assert eventually(lambda: query('plano_model_attempts{outcome="429"}'), 10)
    time.sleep(1)
    while west.calls < 2 and len(answered) < 80:
        answered += send("openai/gpt-4o", CI_KEY, 1)
    assert west.calls == 2
    answered += send("openai/gpt-4o", CI_KEY, 5)
    streams = send("openai/gpt-4o-mini", APP_KEY, 6, stream=True, stream_options={"include_usage": True})
    failed_over = send("mistral/mistral-large", APP_KEY, 4)
    assert {r.headers["x-plano-model"] for r in failed_over} == {"anthropic/claude-3-5-sonnet"}
    # A model nobody configured goes to the default one, and never becomes a label.
    answered += send("evil/injected", CI_KEY, 1)
    # A model whose retry budget is 0 refuses its failover: the budget panel's event.
    for _ in range(2):
        refused = requests.post(CHAT, json={"model": "openai/o1", "messages": [{"role": "user", "content": "hi"}]},
                                headers={"Authorization": f"Bearer {APP_KEY}"}, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["retry_budget"] == "exceeded", refused.text
    assert fallback.calls == len(failed_over)
    assert "evil" not in requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text

    # Envoy flushes histograms to its admin every 5 s; a rate needs two scrapes after.
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    # The traffic above made each panel's event: each shows it, above zero.
    def shown(expr):
        return any(float(r["value"][1]) > 0 for r in query(expr))
    assert eventually(lambda: all(shown(e) for e in exprs), 30), \
        [e for e in exprs if not shown(e)]

    # Tokens by client key: what the mocks reported, per answer.
    want_input = {"ci": 11 * len(answered) + 2, "app": 13 * len(streams) + 5 * len(failed_over)}
    want_output = {"ci": 7 * len(answered) + 1, "app": 4 * len(streams) + 3 * len(failed_over)}
    assert eventually(lambda: values("sum by (client) (plano_model_input_tokens)", "client") == want_input, 10), \
        values("sum by (client) (plano_model_input_tokens)", "client")
    assert values("sum by (client) (plano_model_output_tokens)", "client") == want_output
    # By model too: the answering model is counted, not the one asked for.
    by_model = values("sum by (model) (plano_model_input_tokens)", "model")
    assert by_model == {"openai/gpt-4o": 11 * len(answered), "openai/gpt-4o-mini": 13 * len(streams),
                        "anthropic/claude-3-5-sonnet": 5 * len(failed_over), "openai/gpt-4.1": 2}

    # 429s by provider, failovers, the block and what it lasts.
    assert values('sum by (provider) (plano_model_attempts{outcome="429"})', "provider") == {"openai": 2}
    assert values('sum by (deployment) (plano_model_attempts{outcome="200",model="openai/gpt-4o"})', "deployment") \
        == {"east": len(answered)}
    failovers = values("sum by (model, deployment) (plano_model_failovers) > 0", "model")
    assert failovers == {"openai/gpt-4o": 2, "mistral/mistral-large": len(failed_over)}
    blocks = values("plano_block_until_ms / 1000 - time() > 0", "blocked")
    assert list(blocks) == ["openai/gpt-4o[west]"] and 20 < blocks["openai/gpt-4o[west]"] <= 30, blocks
    block_seconds = values("plano_block_ms > 0", "blocked")
    # West's two blocks, 1 s and 30 s (the same second's tolerance below as for one).
    assert 29_000 <= block_seconds["openai/gpt-4o[west]"] <= 31_000, block_seconds
    requests_by_model = values("plano_model_requests > 0", "model")
    assert requests_by_model == {"openai/gpt-4o": len(answered), "openai/gpt-4o-mini": len(streams),
                                 "mistral/mistral-large": len(failed_over), "openai/o1": 2,
                                 "openai/gpt-4.1": 2}
    assert values("plano_model_retries_over_budget > 0", "model") == {"openai/o1": 2}
    # One time to first byte per answered attempt, one added time per answer
    # (histograms reach the admin at Envoy's 5 s stats flush).
    ttfb = 'sum by (model) (plano_model_ttfb_ms_count{model="mistral/mistral-large"})'
    assert eventually(lambda: values(ttfb, "model") == {"mistral/mistral-large": len(failed_over)}, 15), values(ttfb, "model")
    added = values("sum by (model) (plano_model_added_ms_count)", "model")
    assert added["mistral/mistral-large"] == len(failed_over) and added["openai/gpt-4o"] == len(answered), added
