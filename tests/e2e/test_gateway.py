"""The gateway end to end: real planoai, real Envoy (2 workers), loopback mocks.

Each test covers what the user's acceptance suite does not."""

import concurrent.futures
import email.utils
import http.client
import json
import os
import re
import socket
import threading
import time

import requests

from conftest import ADMIN, CHAT, GATEWAY, chat, eventually, planoai, stats, timed_chat
from mock_provider import Reply

# Every test config starts so; each test adds its providers after it.
HEADER = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
        model_providers:"""

RATE_LIMITED = Reply(status=429, body={"error": {"type": "rate_limit", "message": "slow down"}})


def two_providers(primary, secondary, policy="", primary_extra="", secondary_model="anthropic/claude-3-5-sonnet"):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://host.docker.internal:{primary.port}
            access_key: key-primary-0001
            default: true
{primary_extra}
            retry_policy:
{policy}
          - model: {secondary_model}
            base_url: http://127.0.0.1:{secondary.port}
            access_key: key-secondary-0002
    """


def test_request_is_rewritten_for_each_target(gateway, providers):
    primary = providers(RATE_LIMITED)
    secondary = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://host.docker.internal:{primary.port}/proxy
            access_key: key-primary-0001
            default: true
            retry_policy:
              default_strategy: different_provider
          - model: anthropic/claude-3-5-sonnet
            base_url: http://localhost:{secondary.port}
            access_key: key-secondary-0002
    """)
    raw = b'{"model": "openai/gpt-4o",  "messages":[{"role":"user","content":"model: keep \\"me\\""}], "temperature":0.25}'
    resp = requests.post(
        CHAT,
        data=raw,
        headers={"Authorization": "Bearer client-secret", "x-api-key": "client-key", "content-type": "application/json", "x-trace": "t1"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-attempts"] == "2"
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"

    first, = primary.requests
    assert first["path"] == "/proxy/v1/chat/completions"
    assert first["headers"]["host"] == f"host.docker.internal:{primary.port}"
    assert first["headers"]["authorization"] == "Bearer key-primary-0001"
    assert first["body"] == raw.replace(b'"openai/gpt-4o"', b'"gpt-4o"')

    retry, = secondary.requests
    assert retry["path"] == "/v1/chat/completions"
    assert retry["headers"]["host"] == f"localhost:{secondary.port}"
    assert retry["headers"]["authorization"] == "Bearer key-secondary-0002"
    assert retry["headers"]["x-trace"] == "t1"
    assert retry["body"] == raw.replace(b'"openai/gpt-4o"', b'"claude-3-5-sonnet"')
    for req in (first, retry):
        assert "client-secret" not in json.dumps(req["headers"])
        assert "x-api-key" not in req["headers"]


def test_a_typo_in_the_config_names_file_line_and_field_and_starts_nothing(gateway, plano_home, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(
        "version: v0.3.0\n"
        "listeners:\n"
        "  - type: model\n"
        "    name: l\n"
        "    port: 12000\n"
        "model_providers:\n"
        "  - model: openai/gpt-4o\n"
        "    base_url: http://127.0.0.1:9\n"
        "    retry_policy:\n"
        "      on_status_codes:\n"
        "        - codes: [429]\n"
        "          max_attempt: 2\n"
    )
    result = planoai("up", str(config), check=False)
    assert result.returncode != 0
    assert f"{config}:12:11" in result.stderr
    assert "model_providers[0].retry_policy.on_status_codes[0].max_attempt" in result.stderr
    assert "did you mean `max_attempts`?" in result.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 12000)) != 0, "something listens on 12000"


def test_a_status_range_is_retried(gateway, providers):
    primary = providers(Reply(status=502, body="bad gateway"))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              on_status_codes:
                - codes: ["502-504"]
                  strategy: different_provider
                  max_attempts: 1
              default_max_attempts: 0
    """))
    assert chat().status_code == 200
    assert (primary.calls, secondary.calls) == (1, 1)


def test_a_final_status_passes_through_untouched(gateway, providers):
    body = '{"error": {"message": "bad temperature", "type": "invalid_request_error"}}'
    primary = providers(Reply(status=400, body=body, headers={"x-provider": "yes"}))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))
    resp = chat()
    assert resp.status_code == 400
    assert resp.text == body
    assert resp.headers["x-provider"] == "yes"
    assert resp.headers["x-plano-attempts"] == "1"
    assert secondary.calls == 0


def test_same_provider_stays_with_the_provider(gateway, providers):
    primary = providers(RATE_LIMITED)
    sibling = providers(Reply())
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            default: true
            retry_policy:
              default_strategy: same_provider
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{other.port}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{sibling.port}
    """)
    resp = chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-model"] == "openai/gpt-4o-mini"
    assert json.loads(sibling.requests[0]["body"])["model"] == "gpt-4o-mini"
    assert other.calls == 0


def test_retry_after_as_an_http_date_blocks_the_whole_provider(gateway, providers):
    until = email.utils.formatdate(time.time() + 30, usegmt=True)
    primary = providers(Reply(status=429, headers={"Retry-After": until}))
    sibling = providers(Reply())
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            default: true
            retry_policy:
              default_strategy: different_provider
              retry_after_handling:
                scope: provider
                apply_to: global
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{sibling.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{other.port}
    """)
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    # The provider is blocked: neither openai model is tried, on any worker.
    for _ in range(6):
        resp = chat()
        assert resp.status_code == 200
        assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
        assert resp.headers["x-plano-attempts"] == "1"
    assert (primary.calls, sibling.calls) == (1, 0)
    assert stats()["wasmcustom.plano.blocks.retry_after"] >= 1
    status = planoai("status").stdout
    assert "blocks:" in status and "provider openai for" in status, status
    counters = [line.strip() for line in status.split("counters:")[1].splitlines() if line.strip()]
    assert counters and all(re.fullmatch(r"plano\.[a-z_.]+: \d+", c) for c in counters), counters


def test_max_retry_duration_stops_waiting(gateway, providers):
    primary = providers(Reply(status=503, body="busy"))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              default_strategy: same_model
              default_max_attempts: 10
              max_retry_duration_ms: 1500
              backoff:
                apply_to: same_model
                base_ms: 400
                jitter: false
    """))
    resp, took = timed_chat()
    # Waits 400 (ends at 0.4 s) then 800 (ends near 1.2 s); 1600 more would pass 1.5 s.
    assert resp.status_code == 503
    error = resp.json()["error"]
    assert error["type"] == "retry_exhausted"
    assert error["retry_budget_exhausted"] is False
    assert primary.calls == 3
    assert 1.1 < took < 2.5


def test_latency_events_block_after_min_triggers_within_the_window(gateway, providers):
    primary = providers(Reply(delay=0.4))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              on_high_latency:
                threshold_ms: 200
                measure: total
                min_triggers: 2
                trigger_window_seconds: 30
                block_duration_seconds: 30
    """))
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    assert primary.calls == 1
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    assert primary.calls == 2
    # Two slow answers within the window: the primary is now blocked.
    resp = chat()
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert primary.calls == 2
    counters = stats()
    assert counters["wasmcustom.plano.latency_events"] == 2
    assert counters["wasmcustom.plano.blocks.high_latency"] == 1


def test_ttfb_abandons_a_slow_attempt(gateway, providers):
    primary = providers(Reply(delay=5))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              on_high_latency:
                threshold_ms: 300
                measure: ttfb
                strategy: different_provider
                max_attempts: 1
                apply_to: request
    """))
    resp, took = timed_chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert 0.3 <= took < 2.0, took


def test_a_refused_connection_fails_over(gateway, providers):
    secondary = providers(Reply())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = type("Dead", (), {"port": dead_port})
    gateway.up(two_providers(dead, secondary, "              on_timeout: {strategy: different_provider, max_attempts: 1}"))
    resp = chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    # Counted as what went wrong: a connection failure, in the timeout class.
    counters = stats()
    assert counters["wasmcustom.plano.retries.timeout"] == 1
    assert counters["wasmcustom.plano.retries.status"] == 0


def test_a_timeout_without_policy_still_answers(gateway, providers):
    slow = providers(Reply(delay=3))
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{slow.port}
            timeout_ms: 500
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{other.port}
    """)
    resp, took = timed_chat()
    assert resp.status_code == 504
    assert resp.json()["error"]["type"] == "timeout"
    assert took < 2
    assert other.calls == 0


def test_exhaustion_says_when_to_come_back(gateway, providers):
    body = {"error": {"type": "rate_limit", "message": "primary-says-slow-down"}}
    primary = providers(Reply(status=429, headers={"Retry-After": "20"}, body=body))
    secondary = providers(Reply(status=429, headers={"Retry-After": "7"}, body="secondary-says-wait"))
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))
    resp = chat()
    assert resp.status_code == 429
    error = resp.json()["error"]
    assert error["type"] == "retry_exhausted"
    assert error["total_attempts"] == 2
    assert [(a["model"], a["status"]) for a in error["attempts"]] == [
        ("openai/gpt-4o", 429), ("anthropic/claude-3-5-sonnet", 429)]
    assert 6 <= int(resp.headers["retry-after"]) <= 7
    # The providers' own error bodies stay with the gateway.
    assert "says" not in resp.text


def test_gateway_made_errors_are_openai_shaped_and_reach_no_provider(gateway, providers):
    primary = providers(Reply())
    secondary = providers(Reply())
    config = f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            max_request_body_bytes: 2000
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary.port}
    """
    gateway.up(config)
    deep = '{"model": "openai/gpt-4o", "x": ' + "[" * 200 + "]" * 200 + "}"
    cases = [
        (b"not json", 400, "invalid_request_error", "not valid JSON"),
        (b"[1, 2]", 400, "invalid_request_error", "must be a JSON object"),
        (b'{"messages": []}', 400, "invalid_request_error", "has no `model`"),
        (b'{"model": 7}', 400, "invalid_request_error", "must be a string"),
        (b'{"model": "nobody/knows"}', 404, "model_not_found", "nobody/knows"),
        (json.dumps({"model": "openai/gpt-4o", "pad": "x" * 5000}).encode(), 413, "request_too_large", ""),
        # A valid request but for its depth: refused for that alone.
        (deep.encode(), 400, "invalid_request_error", "nests deeper than 128"),
    ]
    for body, status, kind, says in cases:
        resp = requests.post(CHAT, data=body, headers={"content-type": "application/json"}, timeout=10)
        assert resp.status_code == status, (body[:40], resp.status_code, resp.text)
        error = resp.json()["error"]
        assert error["type"] == kind and says in error["message"], (body[:40], error)
    assert primary.calls == secondary.calls == 0
    # The bare model name works when it is unambiguous.
    assert chat(model="claude-3-5-sonnet").headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    models = requests.get(f"{GATEWAY}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["openai/gpt-4o", "anthropic/claude-3-5-sonnet"]


def test_a_stream_from_the_first_attempt_is_not_buffered(gateway, providers):
    chunks = [f'data: {{"n": {i}}}\n\n' for i in range(5)] + ["data: [DONE]\n\n"]
    primary = providers(Reply(stream=chunks, gap=0.3))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))
    start = time.time()
    resp = requests.post(CHAT, json={"model": "openai/gpt-4o", "stream": True, "messages": []}, stream=True, timeout=30)
    lines = resp.iter_lines()
    first = next(line for line in lines if line)
    first_at = time.time() - start
    rest = [line for line in lines if line]
    last_at = time.time() - start
    assert first == b'data: {"n": 0}'
    assert rest[-1] == b"data: [DONE]"
    # The provider spends 6 x 0.3 s on the stream: buffered, the first
    # chunk would come with the last; streamed, the chunks keep their gaps.
    assert last_at - first_at > 1.2, f"first chunk at {first_at:.2f}s, last at {last_at:.2f}s: buffered"


def test_concurrent_requests_fail_over_and_the_primary_is_spared(gateway, providers):
    primary = providers(Reply(status=429, headers={"Retry-After": "60"}))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))

    def one(_):
        return chat(timeout=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one, range(200)))
    assert [r.status_code for r in results] == [200] * 200
    assert all(r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet" for r in results)
    # Only the requests already in flight before the first 429 reach it.
    assert primary.calls <= 60, primary.calls
    counters = stats()
    assert counters["wasmcustom.plano.requests"] == 200
    assert counters["wasmcustom.plano.retries.status"] == primary.calls


def test_no_access_key_in_any_output(gateway, providers):
    primary = providers(RATE_LIMITED)
    secondary = providers(Reply())
    config = two_providers(primary, secondary, "              default_strategy: different_provider")
    config = config.replace("key-primary-0001", "$E2E_PRIMARY_KEY")
    gateway.up(config, extra_env={"E2E_PRIMARY_KEY": "sk-e2e-do-not-leak"})
    resp = chat()
    assert resp.status_code == 200
    assert primary.requests[0]["headers"]["authorization"] == "Bearer sk-e2e-do-not-leak"
    # The whole log, written: the failover's last line is in it.
    assert eventually(lambda: "attempt 2  anthropic/claude-3-5-sonnet  200" in gateway.log())
    outputs = gateway.outputs + [gateway.log(), resp.text, json.dumps(dict(resp.headers))]
    outputs.append(planoai("status").stdout)
    outputs.append(requests.get(f"{ADMIN}/stats", timeout=5).text)
    for text in outputs:
        assert "sk-e2e-do-not-leak" not in text
        assert "key-secondary-0002" not in text


def test_a_key_is_nowhere_in_a_config_envoy_rejects(gateway, providers, tmp_path):
    primary = providers(Reply())
    config = HEADER.replace("port: 12000", "port: 12000\n            max_request_body_bytes: 5000000000") + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: $E2E_REJECTED_KEY
    """
    # Valid for planoai, but Envoy's buffer limit is 32-bit: Envoy's check,
    # before anything starts, rejects the config and echoes all of it, which
    # `up` shows. The key is not in that config (Envoy reads it from its own
    # secret file), so it is in no output or log.
    # A home of its own: what is left there is this attempt's, not an
    # earlier test's gateway or log.
    home = tmp_path / "home"
    result = gateway.up(config, extra_env={"E2E_REJECTED_KEY": "sk-e2e-rejected-key", "PLANO_HOME": str(home)},
                        check=False)
    assert result.returncode != 0
    assert "Unable to parse JSON as proto" in result.stderr, result.stderr
    echoed = result.stderr
    assert "provider_0.key" in echoed, "Envoy did not echo its config: this test shows nothing"
    logs = planoai("logs", "-n", "1000", check=False, env=dict(os.environ, PLANO_HOME=str(home)))
    assert "no gateway is running" in logs.stderr, (logs.stdout, logs.stderr)
    left = [p.read_text(errors="replace") for p in home.rglob("*") if p.is_file()]
    for text in (echoed, result.stdout, result.stderr, logs.stdout, logs.stderr, *left):
        assert "sk-e2e-rejected-key" not in text
    assert primary.calls == 0


def test_a_client_leaving_during_backoff_leaves_nothing_behind(gateway, providers):
    primary = providers(RATE_LIMITED, Reply())
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              default_strategy: same_model
              backoff:
                apply_to: same_model
                base_ms: 1500
                jitter: false
    """))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        leaving = pool.submit(chat, timeout=0.8)
        time.sleep(0.4)
        assert stats()["wasmcustom.plano.waiting"] == 1
        try:
            leaving.result()
            raise AssertionError("the request should still be waiting in backoff")
        except requests.exceptions.ReadTimeout:
            pass
    time.sleep(2)
    # The waiting retry was dropped with its client: never sent.
    assert primary.calls == 1
    assert stats()["wasmcustom.plano.waiting"] == 0
    resp = chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-attempts"] == "1"


def test_a_fresh_gateways_first_twenty_requests_at_once_all_succeed(gateway, providers):
    """Twenty clients send at once the moment `up` returns, half of them
    streamed (through the attempt listener). Envoy's workers then open their
    connections to the provider in a burst; with `timeout_ms: 1000` (a
    one-second connect timeout) a connection dropped from the provider's
    listen backlog, retransmitted after a second, would fail."""
    provider = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: key-burst-0001
            default: true
            timeout_ms: 1000
    """)
    ready = threading.Barrier(20)

    def send(i):
        conn = http.client.HTTPConnection("127.0.0.1", 12000, timeout=30)
        conn.connect()
        body = json.dumps({"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": i % 2 == 1})
        ready.wait()
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        answer = resp.status, resp.read()
        conn.close()
        return answer

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(send, range(20)))
    failed = [(i, status, body[:200]) for i, (status, body) in enumerate(answers) if status != 200]
    assert failed == [], failed
    assert provider.calls == 20
