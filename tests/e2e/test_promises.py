"""README promises, each through the real parts: planoai, Envoy, loopback
providers (or, where no provider is reachable, what planoai renders)."""

import json
import os
import re
import socket
import subprocess
import time

import requests

from conftest import ADMIN, CHAT, GATEWAY, chat, eventually, planoai, running, state_pid, stats, timed_chat
from mock_provider import Reply
from test_gateway import HEADER, two_providers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CREDENTIALS = {
    "authorization": "Bearer client-secret",
    "x-api-key": "client-x-api-key",
    "api-key": "client-api-key",
    "proxy-authorization": "Basic client-proxy",
    "cookie": "session=client-cookie",
}


def stream_lines(body, timeout=30):
    """POSTs a streaming request; returns [(seconds since sent, line)] and the response."""
    start = time.time()
    resp = requests.post(CHAT, json=body, stream=True, timeout=timeout)
    lines = [(time.time() - start, line) for line in resp.iter_lines() if line]
    return lines, resp


def rendered(config_text, tmp_path, env=None):
    """`planoai render` of a config: Envoy's YAML text and the filter's plan."""
    config = tmp_path / "render.yaml"
    config.write_text(config_text)
    out = tmp_path / "out"
    result = planoai("render", str(config), "-o", str(out), env=env)
    assert "owner-only" in result.stdout
    yaml_text = (out / "lds.yaml").read_text() + (out / "cds.yaml").read_text()
    value = re.search(r"^\s*value: (\".*\")$", yaml_text, re.M).group(1)
    return yaml_text, json.loads(json.loads(value))


def test_max_retry_after_seconds_caps_the_block_and_the_same_model_wait(gateway, providers):
    primary = providers(Reply(status=429, headers={"Retry-After": "3600"}), Reply())
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              default_strategy: same_model
              retry_after_handling: {scope: model, apply_to: global, max_retry_after_seconds: 2}
    """))
    # The same_model retry waits the capped 2 s, not an hour.
    resp, took = timed_chat()
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-attempts"] == "2"
    assert (primary.calls, secondary.calls) == (2, 0)
    assert 1.8 < took < 4, took


def test_max_retry_after_seconds_caps_a_global_block(gateway, providers):
    primary = providers(Reply(status=429, headers={"Retry-After": "3600"}), Reply())
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              default_strategy: different_provider
              retry_after_handling: {scope: model, apply_to: global, max_retry_after_seconds: 1}
    """))
    assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    blocked_at = time.time()
    assert chat().headers["x-plano-attempts"] == "1"
    assert primary.calls == 1
    # Past the capped second the primary is tried again (an hour uncapped).
    time.sleep(max(0, blocked_at + 1.5 - time.time()))
    resp = chat()
    assert resp.headers["x-plano-model"] == "openai/gpt-4o"
    assert primary.calls == 2


def test_no_client_credential_reaches_a_provider_first_or_retry(gateway, providers):
    primary = providers(Reply(status=503))
    secondary = providers(Reply())
    config = two_providers(primary, secondary, "              default_strategy: different_provider")
    gateway.up(config.replace("            access_key: key-secondary-0002\n", ""))
    resp = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []}, headers=CREDENTIALS, timeout=30)
    assert resp.status_code == 200, resp.text
    first, = primary.requests
    retry, = secondary.requests
    assert first["headers"]["authorization"] == "Bearer key-primary-0001"
    # The secondary has no key: it gets no authorization at all.
    assert "authorization" not in retry["headers"]
    for req in (first, retry):
        for name, value in CREDENTIALS.items():
            assert name == "authorization" or name not in req["headers"], (name, req["headers"])
            assert value.split()[-1] not in json.dumps(req["headers"])


def test_a_first_attempt_stream_longer_than_timeout_ms_is_not_cut(gateway, providers):
    chunks = [f'data: {{"n": {i}}}\n\n' for i in range(6)] + ["data: [DONE]\n\n"]
    primary = providers(Reply(stream=chunks, gap=0.3))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              on_timeout: {strategy: different_provider, max_attempts: 1}",
                             primary_extra="            timeout_ms: 500"))
    lines, resp = stream_lines({"model": "openai/gpt-4o", "stream": True, "messages": []})
    assert resp.headers["x-plano-attempts"] == "1"
    assert [line for _, line in lines] == [c.strip().encode() for c in chunks]
    # The stream ran well past timeout_ms (7 chunks 0.3 s apart) and was not retried.
    assert lines[-1][0] > 1.5
    assert secondary.calls == 0


def test_default_takes_unknown_and_ambiguous_models(gateway, providers):
    first, second, fallback = providers(Reply()), providers(Reply()), providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{first.port}
          - model: mistral/gpt-4o
            base_url: http://127.0.0.1:{second.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            default: true
    """)
    # Unknown, and a bare name two providers offer: both go to the default.
    for model in ("nobody/knows", "gpt-4o"):
        resp = chat(model=model)
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert json.loads(fallback.requests[-1]["body"])["model"] == "claude-3-5-sonnet"
    assert chat(model="mistral/gpt-4o").headers["x-plano-model"] == "mistral/gpt-4o"
    assert (first.calls, second.calls, fallback.calls) == (0, 1, 2)


# provider: (authority, the upstream path of /v1/chat/completions), as each
# provider documents its OpenAI-compatible endpoint.
WELL_KNOWN = {
    "openai": ("api.openai.com", "/v1/chat/completions"),
    "anthropic": ("api.anthropic.com", "/v1/chat/completions"),
    "mistral": ("api.mistral.ai", "/v1/chat/completions"),
    "groq": ("api.groq.com", "/openai/v1/chat/completions"),
    "deepseek": ("api.deepseek.com", "/v1/chat/completions"),
    "gemini": ("generativelanguage.googleapis.com", "/v1beta/openai/chat/completions"),
    "xai": ("api.x.ai", "/v1/chat/completions"),
    "together_ai": ("api.together.xyz", "/v1/chat/completions"),
}


def cluster_section(yaml_text, name):
    start = yaml_text.index(f"    - name: {name}\n")
    end = yaml_text.find("\n    - name: ", start + 1)
    return yaml_text[start:] if end < 0 else yaml_text[start:end]


def test_well_known_providers_render_their_https_endpoints(tmp_path):
    config = HEADER.replace("\n        ", "\n") + "".join(
        f"\n  - model: {p}/m\n    access_key: k-{p}" for p in WELL_KNOWN)
    yaml_text, plan = rendered(config, tmp_path)
    assert [t["provider"] for t in plan["targets"]] == list(WELL_KNOWN)
    for t in plan["targets"]:
        host, path = WELL_KNOWN[t["provider"]]
        assert t["authority"] == host
        client = "/v1/chat/completions"
        rest = client[len(t["strip_prefix"]):] if client.startswith(t["strip_prefix"]) else client
        assert t["path_prefix"] + rest == path, t
        # TLS is spoken past the framing hop (which sees plain HTTP/1.1 and
        # ends a body the provider cut), on the cluster it forwards to.
        assert f"envoy_internal_address: {{ server_listener_name: {t['cluster']}_framing }}" in cluster_section(yaml_text, t["cluster"])
        cluster = cluster_section(yaml_text, t["cluster"] + "_direct")
        # Names and addresses are quoted in the template (an IPv6 one needs it).
        assert f'socket_address: {{ address: "{host}", port_value: 443 }}' in cluster
        assert "UpstreamTlsContext" in cluster
        assert f'sni: "{host}"\n' in cluster
        assert "trusted_ca: { filename: /etc/ssl/certs/ca-certificates.crt }" in cluster
        assert f'matcher: {{ exact: "{host}" }}' in cluster


def test_native_down_stops_envoy_and_frees_the_port(gateway, providers, plano_home):
    p = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{p.port}
    """)
    pid = state_pid(plano_home)
    assert running(pid)
    assert planoai("down").stdout.strip() == "gateway stopped"
    assert not running(pid), "Envoy is still running"
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 12000))
    assert planoai("status", check=False).stdout.strip().startswith("not running")
    assert planoai("down").stdout.strip() == "no gateway is running"


def test_backoff_applies_to_same_provider_retries_only(gateway, providers):
    primary = providers(Reply(status=503))
    sibling = providers(Reply(status=502))
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            default: true
            retry_policy:
              on_status_codes:
                - {{codes: [503], strategy: same_provider, max_attempts: 1}}
                - {{codes: [502], strategy: different_provider, max_attempts: 1}}
              backoff: {{apply_to: same_provider, base_ms: 700, jitter: false}}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{sibling.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{other.port}
    """)
    resp, took = timed_chat()
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-attempts"] == "3"
    # 0.7 s before the openai sibling; none before anthropic (a global
    # backoff would add 1.4 s more, none at all would be near 0).
    wait_sibling = sibling.requests[0]["at"] - primary.requests[0]["at"]
    wait_other = other.requests[0]["at"] - sibling.requests[0]["at"]
    assert 0.65 < wait_sibling < 1.3, wait_sibling
    assert wait_other < 0.5, wait_other
    assert took < 2.0


def test_ttfb_latency_blocks_globally(gateway, providers):
    primary = providers(Reply(delay=1.0))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, """
              on_high_latency:
                threshold_ms: 300
                measure: ttfb
                strategy: different_provider
                max_attempts: 1
                block_duration_seconds: 30
                apply_to: global
    """))
    resp, took = timed_chat()
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert took < 0.9, took
    # Blocked for every request on every worker: straight to the secondary.
    for _ in range(6):
        resp, took = timed_chat()
        assert resp.headers["x-plano-attempts"] == "1"
        assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert primary.calls == 1
    assert stats()["wasmcustom.plano.blocks.high_latency"] == 1
    assert "model openai/gpt-4o for" in planoai("status").stdout


def test_latency_scope_provider_blocks_every_model_of_the_provider(gateway, providers):
    slow = providers(Reply(delay=0.4))
    sibling = providers(Reply())
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{slow.port}
            default: true
            retry_policy:
              on_high_latency:
                threshold_ms: 200
                measure: total
                block_duration_seconds: 30
                scope: provider
                apply_to: global
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{sibling.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{other.port}
    """)
    assert chat().headers["x-plano-model"] == "openai/gpt-4o"
    # The whole provider is blocked: the openai sibling is skipped too.
    for _ in range(4):
        assert chat().headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert (slow.calls, sibling.calls) == (1, 0)
    assert "provider openai for" in planoai("status").stdout


def test_an_http10_provider_streams_on_the_first_attempt(gateway, providers):
    chunks = [f'data: {{"n": {i}}}\n\n' for i in range(4)] + ["data: [DONE]\n\n"]
    primary = providers(Reply(stream=chunks, gap=0.4, http10=True))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))
    lines, resp = stream_lines({"model": "openai/gpt-4o", "stream": True, "messages": []})
    assert resp.status_code == 200
    assert resp.headers["x-plano-attempts"] == "1"
    assert [line for _, line in lines] == [c.strip().encode() for c in chunks]
    # Streamed, not buffered to the close: the first line came a gap before the last.
    assert lines[-1][0] - lines[0][0] > 1.2
    assert secondary.calls == 0


def test_the_kubernetes_example_is_what_render_produces(tmp_path):
    # From the tree's root, as `make k8s` runs it: the manifest names its source.
    subprocess.run(["planoai", "render", "configs/demo.yaml", "-o", str(tmp_path), "--kubernetes"],
                   cwd=ROOT, check=True, capture_output=True)
    with open(os.path.join(ROOT, "deploy", "kubernetes", "demo.yaml")) as f:
        assert (tmp_path / "kubernetes.yaml").read_text() == f.read()


def test_the_environment_wins_over_dot_env(tmp_path):
    (tmp_path / ".env").write_text("E2E_DOTENV_KEY=from-dotenv\nE2E_OTHER_KEY=other-from-dotenv\n")
    config = HEADER.replace("\n        ", "\n") + """
  - model: openai/a
    base_url: http://127.0.0.1:9
    access_key: $E2E_DOTENV_KEY
  - model: openai/b
    base_url: http://127.0.0.1:9
    access_key: ${E2E_OTHER_KEY}
"""
    env = dict(os.environ, E2E_DOTENV_KEY="from-environment")
    env.pop("E2E_OTHER_KEY", None)
    _, plan = rendered(config, tmp_path, env=env)
    keys = sorted((tmp_path / "out" / "keys").iterdir())
    assert [k.read_text() for k in keys] == ["Bearer from-environment", "Bearer other-from-dotenv"]


def test_logs_tail_and_follow(gateway, providers, plano_home):
    p = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{p.port}
    """)
    for _ in range(3):
        assert chat().status_code == 200
    path = os.path.join(plano_home, "run", "envoy.log")
    assert eventually(lambda: len(open(path).read().splitlines()) > 3)
    for _ in range(10):
        # Compare only while the log stands still (access lines may lag).
        with open(path) as f:
            before = f.read().splitlines()
        tail = planoai("logs", "--envoy", "-n", "2").stdout.splitlines()
        with open(path) as f:
            if f.read().splitlines() == before:
                break
    assert len(before) > 3
    assert tail == before[-2:]
    follow = subprocess.Popen(["planoai", "logs", "--envoy", "-f", "-n", "0"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        resp = chat(model="openai/gpt-4o", stream=False)
        assert resp.status_code == 200
        deadline = time.time() + 10
        seen = ""
        while "attempt 1: openai/gpt-4o -> 200" not in seen and time.time() < deadline:
            seen += follow.stdout.readline()
        assert "attempt 1: openai/gpt-4o -> 200" in seen, seen
        # Following ends when the gateway does.
        planoai("down")
        follow.wait(timeout=5)
    finally:
        follow.kill()


def test_stats_prometheus_carries_the_gateway_counters(gateway, providers):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    gateway.up(two_providers(primary, secondary, "              default_strategy: different_provider"))
    for _ in range(3):
        assert chat().status_code == 200
    text = requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text
    # Envoy names the filter's wasmcustom.plano.* stats plano_* here.
    metrics = {k: int(v) for k, v in re.findall(r"^(plano_[a-z_]+)(?:\{\})? (\d+)$", text, re.M)}
    counters = stats()
    assert metrics.get("plano_requests") == counters["wasmcustom.plano.requests"] == 3, sorted(metrics)
    assert metrics.get("plano_retries_status") == counters["wasmcustom.plano.retries.status"] >= 1, sorted(metrics)
    assert requests.get(f"{GATEWAY}/healthz", timeout=5).status_code == 200
