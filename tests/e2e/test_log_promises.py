"""Logs, the README's promises beyond test_papercuts.py: blocks and
exhausted requests are logged with both logging switches off, and every
way of running the gateway (compose, Kubernetes) batches Envoy's log and
caps the container's."""

import os
import subprocess

import requests
import yaml

from conftest import CHAT, eventually, planoai
from mock_provider import Reply
from test_gateway import HEADER

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BATCHED = ["--log-path", "/dev/stderr", "--file-flush-interval-msec", "200"]


def post(request_id, model="openai/gpt-4o"):
    return requests.post(CHAT, json={"model": model, "messages": []}, headers={"x-request-id": request_id}, timeout=10)


def test_blocks_and_exhaustions_are_logged_with_both_switches_off(gateway, providers):
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s"}
    primary = providers(Reply(headers=spent))
    fallback = providers(Reply(), Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"message": "limited"}}))
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            default: true
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
              default_strategy: different_provider
              rate_limit_headers: {{ min_remaining_requests: 0 }}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
        logging: {{ access_log: false, first_attempt_success: false }}
    """)
    # A first-attempt success that blocks its model ahead of the 429, a
    # first-attempt success elsewhere, then a 429 that blocks the fallback
    # and leaves the request nowhere to go.
    assert post("quota-spent").headers["x-plano-model"] == "openai/gpt-4o"
    assert post("went-elsewhere").headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    exhausted = post("nowhere-left")
    assert exhausted.status_code == 429 and exhausted.json()["error"]["type"] == "retry_exhausted"
    wanted = ["blocked model openai/gpt-4o for", "(quota headers)",
              "blocked model anthropic/claude-3-5-sonnet for", "(Retry-After)",
              'request "nowhere-left": retries exhausted after 1 attempts']
    assert eventually(lambda: all(w in planoai("logs", "-n", "200").stdout for w in wanted)), \
        planoai("logs", "-n", "200").stdout
    log = planoai("logs", "--envoy", "-n", "100000").stdout
    # What the switches turned off stays off: no access line, no line for
    # a first attempt that succeeded.
    assert "POST /v1/chat/completions" not in log, log[-2000:]
    assert 'request "quota-spent" attempt' not in log and 'request "went-elsewhere" attempt' not in log, log[-2000:]


def test_compose_batches_envoys_log_and_caps_the_containers():
    with open(os.path.join(ROOT, "docker-compose.yaml")) as f:
        gateway = yaml.safe_load(f)["services"]["gateway"]
    assert gateway["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    command = " ".join(gateway["command"])
    assert " ".join(BATCHED) in command, command


def test_the_kubernetes_manifest_batches_envoys_log(tmp_path):
    config = tmp_path / "gw.yaml"
    config.write_text(HEADER.replace("\n        ", "\n") + """
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:9
""")
    subprocess.run(["planoai", "render", str(config), "-o", str(tmp_path / "out"), "--kubernetes"],
                   check=True, capture_output=True)
    docs = list(yaml.safe_load_all((tmp_path / "out" / "kubernetes.yaml").read_text()))
    containers = [c for d in docs if d and d.get("kind") == "Deployment"
                  for c in d["spec"]["template"]["spec"]["containers"]]
    envoy = next(c for c in containers if c["name"] == "plano")
    assert " ".join(BATCHED) in " ".join(envoy["args"]), envoy["args"]


def test_no_key_reaches_the_log_with_envoys_debug_logging_on(gateway, providers, plano_home):
    # Keys in every header a provider or a client sends one in, and in a
    # request's path and query, with Envoy printing every header (debug).
    secrets = {
        "x-api-key": "sk-ant-provider-7f3a",
        "api-key": "azure-provider-9c1d",
        "authorization": "sk-openai-provider-2b8e",
        "client x-api-key": "sk-client-x-4d2f",
        "client api-key": "sk-client-azure-6e0a",
        "path params": "sk-in-params-1a9b",
        "path segment": "sk-in-segment-5c7d",
        "query": "sk-in-query-8e2c",
    }
    ant, azure, openai = providers(), providers(), providers()
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{openai.port}
            access_key: {secrets["authorization"]}
            default: true
          - model: x/anthropic-style
            base_url: http://127.0.0.1:{ant.port}
            access_key: {secrets["x-api-key"]}
            key_header: x-api-key
          - model: x/azure-style
            base_url: http://127.0.0.1:{azure.port}
            access_key: {secrets["api-key"]}
            key_header: api-key
    """)
    assert requests.post("http://127.0.0.1:9901/logging?level=debug", timeout=5).status_code == 200
    try:
        for model in ["openai/gpt-4o", "x/anthropic-style", "x/azure-style"]:
            headers = {"x-api-key": secrets["client x-api-key"], "api-key": secrets["client api-key"]}
            resp = requests.post(CHAT, json={"model": model, "messages": []}, headers=headers, timeout=10)
            assert resp.status_code == 200, resp.text
        for path in [
            f"/v1/chat/completions;key={secrets['path params']}",
            f"/v1/chat/completions/{secrets['path segment']}",
            f"/v1/chat/completions?key={secrets['query']}",
        ]:
            requests.post("http://127.0.0.1:12000" + path, json={"model": "openai/gpt-4o", "messages": []}, timeout=10)
        assert ant.requests[-1]["headers"]["x-api-key"] == secrets["x-api-key"]
        assert azure.requests[-1]["headers"]["api-key"] == secrets["api-key"]
        # The last request's lines, flushed (every 200 ms): debug lines among them.
        assert eventually(lambda: "completions?key=[redacted]'" in planoai("logs", "--envoy", "-n", "100000").stdout)
        assert "router decoding headers" in planoai("logs", "--envoy", "-n", "100000").stdout
    finally:
        requests.post("http://127.0.0.1:9901/logging?level=warning", timeout=5)
    shown = planoai("logs", "--envoy", "-n", "100000").stdout
    kept = ""
    run = os.path.join(plano_home, "run")
    for name in os.listdir(run):
        if name.startswith("envoy.log"):
            with open(os.path.join(run, name), errors="replace") as f:
                kept += f.read()
    for text, where in [(shown, "logs --envoy"), (kept, "envoy.log")]:
        leaked = [what for what, key in secrets.items() if key in text]
        assert leaked == [], f"{where} shows {leaked}"
        assert "'x-api-key', '[redacted]'" in text and "'api-key', '[redacted]'" in text, where
        assert "/v1/chat/completions/[redacted]" in text, where
