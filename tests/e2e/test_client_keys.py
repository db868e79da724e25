"""Client keys and the edge: who may spend the provider keys, and what one
client can do to the gateway. Real planoai, real Envoy, loopback mocks."""

import json
import os
import socket
import subprocess
import time

import requests

from conftest import ADMIN, CHAT, GATEWAY, answers_healthz, eventually, planoai
from mock_provider import Reply
from test_gateway import HEADER

CI_KEY = "ci-key-5f1d0c2a9e7b4c31"
APP_KEY = "app-key-8a6e2f4b1c9d7e05"

CONFIG = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            client_keys:
              - {{ name: ci, key: {ci} }}
              - {{ name: app, key: $PLANO_APP_KEY }}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary}
            access_key: key-primary-0001
            default: true
            retry_policy:
              on_status_codes: [{{ codes: [429], strategy: different_provider, max_attempts: 1 }}]
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary}
            access_key: key-secondary-0002
"""

OPEN = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            address: 0.0.0.0
{extra}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{port}
            access_key: key-primary-0001
"""

BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def raw_log(home):
    with open(os.path.join(home, "run", "state.json")) as f:
        path = json.load(f)["log"]
    with open(path) as f:
        return f.read()


def post(headers, **extra):
    return requests.post(CHAT, json=dict(BODY, **extra), headers=headers, timeout=30)


def test_only_a_client_key_lets_a_request_reach_a_provider(gateway, providers, plano_home):
    primary, secondary = providers(Reply()), providers(Reply())
    gateway.up(CONFIG.format(ci=CI_KEY, primary=primary.port, secondary=secondary.port),
               extra_env={"PLANO_APP_KEY": APP_KEY})

    refused = [
        post({}),
        post({"Authorization": "Bearer wrong-key-0000000000"}),
        post({"Authorization": f"Basic {CI_KEY}"}),
        post({"Authorization": f"Bearer {CI_KEY}x"}),
        post({"x-api-key": CI_KEY[:-1]}),
        post({}, stream=True),
        requests.get(GATEWAY + "/v1/models", timeout=10),
        requests.post(GATEWAY + "/v1/files", data=b"x", timeout=10),
    ]
    for resp in refused:
        assert resp.status_code == 401, (resp.status_code, resp.text)
        assert resp.json()["error"]["type"] == "invalid_api_key"
        assert resp.headers["www-authenticate"] == "Bearer"
    assert primary.calls == 0 and secondary.calls == 0

    # Health checks carry no key.
    assert requests.get(GATEWAY + "/healthz", timeout=5).status_code == 200

    ok = [
        post({"Authorization": f"Bearer {CI_KEY}"}),
        post({"authorization": f"bearer {CI_KEY}"}),
        post({"x-api-key": APP_KEY}),
        # A client made for one API may fill the other header with something else.
        post({"x-api-key": APP_KEY, "Authorization": "Bearer sk-placeholder"}),
    ]
    assert [r.status_code for r in ok] == [200] * 4, [r.text for r in ok]
    assert requests.get(GATEWAY + "/v1/models", headers={"x-api-key": CI_KEY}, timeout=5).status_code == 200

    # A streamed failover replays the request through the internal redirect,
    # which carries no client key: it must still be served.
    primary.script = [Reply(status=429, body={"error": {"message": "slow down"}})]
    secondary.script = [Reply(stream=['data: {"x": 1}\n\n', "data: [DONE]\n\n"])]
    resp = post({"Authorization": f"Bearer {CI_KEY}"}, stream=True)
    assert resp.status_code == 200 and "[DONE]" in resp.text, resp.text
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    resp = post({"x-api-key": APP_KEY})
    assert resp.status_code == 200 and resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"

    counters = requests.get(f"{ADMIN}/stats?filter=wasmcustom.plano.(client|unauthorized)", timeout=5).text
    stats = dict(line.split(": ") for line in counters.splitlines())
    assert stats["wasmcustom.plano.client.ci.requests"] == "4", stats   # 2 + models + stream
    assert stats["wasmcustom.plano.client.app.requests"] == "3", stats
    assert stats["wasmcustom.plano.unauthorized"] == "8", stats

    # The client's key reaches no provider, log, stat or config dump; the
    # log is read once Envoy has written it (every 200 ms).
    time.sleep(1)
    seen = [json.dumps(r["headers"]) + r["body"].decode() for r in primary.requests + secondary.requests]
    assert len(seen) == 8
    for r in primary.requests + secondary.requests:
        assert "x-api-key" not in r["headers"]
        assert r["headers"]["authorization"].startswith("Bearer key-")
    exposed = {
        "provider requests": "\n".join(seen),
        "envoy log": raw_log(plano_home),
        "planoai logs": gateway.log(),
        "stats": requests.get(f"{ADMIN}/stats", timeout=5).text,
        "prometheus": requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text,
        "config_dump": requests.get(f"{ADMIN}/config_dump", timeout=5).text,
        "planoai output": "\n".join(gateway.outputs),
    }
    for where, text in exposed.items():
        for key in (CI_KEY, APP_KEY):
            assert key not in text, f"a client key in the {where}"
    for line in ("plano_client_ci_requests{} 4", "plano_client_app_requests{} 3", "plano_unauthorized{} 8"):
        assert line in exposed["prometheus"].splitlines(), line


def test_an_open_listener_needs_keys_or_an_explicit_opt_out(gateway, providers):
    provider = providers(Reply())
    result = gateway.up(OPEN.format(extra="", port=provider.port), check=False)
    assert result.returncode != 0
    assert "listeners[0].address" in result.stderr and "nothing was started" in result.stderr
    for fix in ("client_keys", "address: 127.0.0.1", "allow_unauthenticated: true"):
        assert fix in result.stderr, result.stderr
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 12000)) != 0, "something listens on 12000"
    assert "not running" in planoai("status", check=False).stdout
    path = os.path.join(gateway.home, "gateway.yaml")
    rendered = planoai("render", path, "-o", os.path.join(gateway.home, "k8s"), "--kubernetes", check=False)
    assert rendered.returncode != 0 and "allow_unauthenticated" in rendered.stderr

    extra = "            allow_unauthenticated: true"
    result = gateway.up(OPEN.format(extra=extra, port=provider.port))
    assert "warning" in result.stderr and "without client keys" in result.stderr, result.stderr
    # It listens where it was told: every address, not loopback alone.
    listening = subprocess.run(["ss", "-ltnH", "sport = :12000"], capture_output=True, text=True, check=True).stdout
    assert {line.split()[3] for line in listening.splitlines()} == {"0.0.0.0:12000"}, listening
    assert post({}).status_code == 200
    assert provider.calls == 1


def test_the_edge_limits_connections_and_headers(gateway, providers, plano_home):
    provider = providers(Reply())
    limit = 20
    gateway.up(f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            max_connections: {limit}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
    """)
    # Envoy warns at start-up when no connection limit is set; its log is
    # written in batches (every 200 ms), so read it once the start-up health
    # check's access line is there and two more batches have gone.
    assert eventually(lambda: '"GET /healthz HTTP/1.1" 200' in raw_log(plano_home))
    time.sleep(0.5)
    assert "no configured limit" not in raw_log(plano_home)

    def request(s, path="/healthz"):
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return s.recv(65536)

    held = []
    for _ in range(limit):
        s = socket.create_connection(("127.0.0.1", 12000), timeout=5)
        assert request(s).startswith(b"HTTP/1.1 200"), "under the limit"
        held.append(s)
    refused = 0
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", 12000), timeout=5) as s:
            try:
                refused += request(s) == b""
            except ConnectionResetError:
                refused += 1
    assert refused == 10
    # The connections already open are still served, chat requests included.
    for s in held:
        assert request(s).startswith(b"HTTP/1.1 200")
    s = held[0]
    body = json.dumps(BODY).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(body), body))
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    overflow = requests.get(f"{ADMIN}/stats?filter=downstream_global_cx_overflow", timeout=5).text
    assert "downstream_global_cx_overflow: 10" in overflow, overflow
    # Closing some frees their places.
    for s in held:
        s.close()
    assert eventually(answers_healthz, seconds=5), "the gateway took no connection after others closed"

    big = requests.get(GATEWAY + "/healthz", headers={"x-big": "a" * 70 * 1024}, timeout=5)
    assert big.status_code == 431, big.status_code
    many = requests.get(GATEWAY + "/healthz", headers={f"x-h{i}": "1" for i in range(120)}, timeout=5)
    assert many.status_code == 431, many.status_code
    underscore = post({"x_api_key": "k"})
    assert underscore.status_code == 400, underscore.status_code
    assert provider.calls == 1


def test_a_listener_on_ipv6_loopback_starts_and_serves(gateway, providers):
    p = providers(Reply())
    gateway.up(HEADER.replace("port: 12000", "port: 12000\n            address: '::1'") + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{p.port}
    """)
    resp = requests.post("http://[::1]:12000/v1/chat/completions",
                         json={"model": "openai/gpt-4o", "messages": []}, timeout=10)
    assert resp.status_code == 200 and p.calls == 1
