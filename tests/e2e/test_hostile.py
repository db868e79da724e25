"""Hostile requests: no client input picks a cluster, reaches an endpoint the
gateway does not serve, or chooses the provider account."""

import os
import time

import requests

from conftest import CHAT, GATEWAY, chat
from mock_provider import Reply

CONFIG = """
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary}
            access_key: key-primary-0001
            default: true
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary}
            access_key: key-secondary-0002
"""


def start(gateway, providers):
    primary, secondary = providers(Reply()), providers(Reply())
    gateway.up(CONFIG.format(primary=primary.port, secondary=secondary.port))
    return primary, secondary


def test_a_client_header_cannot_pick_a_cluster(gateway, providers):
    primary, secondary = start(gateway, providers)
    steering = {
        "x-plano-cluster": "plano_1_anthropic_claude-3-5-sonnet",
        "x-plano-stream": "plano_stream",
        "x-plano-target": "plano_1_anthropic_claude-3-5-sonnet",
    }
    for method, path in [("POST", "/v2/files"), ("DELETE", "/admin/keys"), ("GET", "/v1/files")]:
        resp = requests.request(method, GATEWAY + path, headers=steering, data=b"x" * 1000, timeout=10)
        assert resp.status_code == 404, (method, path, resp.status_code)
        assert resp.json()["error"]["type"] == "not_found"
    # On the served endpoint the same headers change nothing either.
    resp = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []}, headers=steering, timeout=10)
    assert resp.status_code == 200 and resp.headers["x-plano-model"] == "openai/gpt-4o"
    assert secondary.calls == 0
    assert primary.calls == 1
    assert not any(k.startswith("x-plano-") for k in primary.requests[0]["headers"])


def test_only_the_served_endpoints_reach_a_provider(gateway, providers):
    primary, secondary = start(gateway, providers)
    for path in ["/v1/files", "/v1/fine_tuning/jobs", "/v1/", "/v1/batches", "/v1/../admin",
                 "/v1/chat/completions/../../files", "/plano/next-attempt?exchange=0123456789abcdef"]:
        resp = requests.post(GATEWAY + path, json={"model": "openai/gpt-4o"}, timeout=10)
        assert resp.status_code == 404, (path, resp.status_code, resp.text)
    resp = requests.post(GATEWAY + "/v1/..%2Fadmin", json={"model": "openai/gpt-4o"}, timeout=10)
    assert resp.status_code == 400
    # A doubled slash is the same endpoint, normalised before routing.
    resp = requests.post(GATEWAY + "/v1//chat/completions", json={"model": "openai/gpt-4o", "messages": []}, timeout=10)
    assert resp.status_code == 200
    assert primary.calls == 1 and secondary.calls == 0
    assert primary.requests[0]["path"] == "/v1/chat/completions"


def test_a_client_cannot_pick_the_provider_account(gateway, providers):
    primary, _ = start(gateway, providers)
    resp = requests.post(
        CHAT,
        json={"model": "openai/gpt-4o", "messages": []},
        headers={"OpenAI-Organization": "org-client", "OpenAI-Project": "proj-client", "x-goog-api-key": "client-goog",
                 "x-envoy-upstream-rq-timeout-ms": "1", "x-envoy-retry-on": "5xx"},
        timeout=10,
    )
    assert resp.status_code == 200
    seen = primary.requests[0]["headers"]
    for name in ["openai-organization", "openai-project", "x-goog-api-key"]:
        assert name not in seen, seen
    assert seen["authorization"] == "Bearer key-primary-0001"
    assert not any(k.startswith("x-envoy-") for k in seen), seen
    assert not any(k.lower().startswith("x-envoy-") for k in resp.headers), resp.headers
    assert chat().status_code == 200


def test_no_local_user_reads_a_provider_key_from_any_envoy_socket(gateway, providers, plano_home):
    import glob
    import subprocess

    primary, _ = start(gateway, providers)
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    ports = sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in listening.splitlines() if "envoy" in line})
    assert {12000, 9901} <= set(ports), listening
    seen = []
    for port in ports:
        for path in ["/", "/config_dump", "/config_dump?include_eds", "/v1/models", "/plano/blocks", "/stats"]:
            out = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c", f"curl -s -m 5 http://127.0.0.1:{port}{path}"],
                                 capture_output=True, text=True, timeout=20)
            seen.append(out.stdout)
    dump = "\n".join(seen)
    # config_dump was read (only it carries the dump's type), and it names the
    # secret that holds the key (Envoy redacts even its file's path), not the key.
    assert "type.googleapis.com/envoy.admin.v3.ClustersConfigDump" in dump
    assert '"name": "provider_key_0"' in dump or '"name":"provider_key_0"' in dump
    assert "key-primary-0001" not in dump and "key-secondary-0002" not in dump
    # The files that hold the keys are the owner's alone.
    keys = os.path.join(plano_home, "run", "config", "keys")
    assert os.stat(keys).st_mode & 0o077 == 0
    key_files = glob.glob(os.path.join(keys, "*.key"))
    assert len(key_files) == 2, os.listdir(keys)
    for key_file in key_files:
        assert os.stat(key_file).st_mode & 0o077 == 0, key_file
    assert chat().status_code == 200
    assert primary.requests[-1]["headers"]["authorization"] == "Bearer key-primary-0001"


def test_an_oversized_body_always_gets_the_json_413(gateway, providers):
    primary = providers(Reply())
    gateway.up(CONFIG.replace("port: 12000", "port: 12000\n            max_request_body_bytes: 2097152").format(
        primary=primary.port, secondary=primary.port))
    for size in [2_500_000, 3_000_000, 4_000_000, 3_000_000, 3_000_000]:
        body = b'{"model": "openai/gpt-4o", "messages": [], "pad": "' + b"x" * size + b'"}'
        resp = requests.post(CHAT, data=body, headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 413, size
        assert resp.json()["error"]["type"] == "request_too_large", resp.text
        # Sent chunked, without a length to refuse it by.
        resp = requests.post(CHAT, data=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                             headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 413, size
        assert resp.json()["error"]["type"] == "request_too_large", resp.text
    assert primary.calls == 0


def test_no_envoy_header_reaches_a_provider_on_any_path(gateway, providers):
    limited = Reply(status=429, body={"error": {"message": "limited"}})
    primary, secondary = providers(limited), providers(Reply(), Reply(stream=["data: x\n\n"]))
    gateway.up(CONFIG.format(primary=primary.port, secondary=secondary.port).replace(
        "default: true", "default: true\n            retry_policy: { default_strategy: different_provider }"))
    assert chat().status_code == 200  # a dispatched retry
    body = {"model": "openai/gpt-4o", "messages": [], "stream": True}
    assert requests.post(CHAT, json=body, timeout=10).status_code == 200  # a redirected one
    received = primary.requests + secondary.requests
    assert len(received) == 4
    for r in received:
        assert not any(k.startswith(("x-envoy-", "x-plano-")) for k in r["headers"]), r["headers"]


def test_malformed_bodies_and_admin_paths_reach_no_provider(gateway, providers):
    primary, secondary = start(gateway, providers)
    bad = {
        b'{"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "\xff\xfe"}]}': "invalid_request_error",
        b'{"model": "openai/gpt-4o", "model": "anthropic/claude-3-5-sonnet", "messages": []}': "invalid_request_error",
        b'{"model": "openai/gpt-4o", "messages": [' + b"[" * 200 + b"]" * 200 + b"]}": "invalid_request_error",
    }
    for body, kind in bad.items():
        resp = requests.post(CHAT, data=body, headers={"content-type": "application/json"}, timeout=10)
        assert resp.status_code == 400, body[:60]
        assert resp.json()["error"]["type"] == kind
    # A nested `model` is just data: the top-level one routes.
    nested = b'{"metadata": {"model": "anthropic/claude-3-5-sonnet"}, "model": "openai/gpt-4o", "messages": []}'
    resp = requests.post(CHAT, data=nested, headers={"content-type": "application/json"}, timeout=10)
    assert resp.status_code == 200 and resp.headers["x-plano-model"] == "openai/gpt-4o"
    # Envoy's admin is on its own loopback port, never through the gateway's.
    for path in ["/config_dump", "/stats", "/quitquitquit", "/clusters"]:
        assert requests.get(GATEWAY + path, timeout=10).status_code == 404
        assert requests.post(GATEWAY + path, timeout=10).status_code == 404
    assert primary.calls == 1 and secondary.calls == 0
    assert requests.get(GATEWAY + "/healthz", timeout=10).status_code == 200


def test_slow_clients_do_not_stall_the_others(gateway, providers):
    import socket
    import threading

    primary, _ = start(gateway, providers)
    stop = threading.Event()

    def trickle(body_first):
        # Headers (or a body) a byte at a time: what a slow or hostile client sends.
        s = socket.create_connection(("127.0.0.1", 12000))
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        if body_first:
            s.sendall(head + b"content-length: 100000\r\n\r\n")
        slow = b"x" * 1000 if body_first else head
        for b in slow:
            if stop.is_set():
                break
            try:
                s.send(bytes([b]))
            except OSError:
                break
            time.sleep(0.01)
        s.close()

    slowpokes = [threading.Thread(target=trickle, args=(i % 2 == 0,)) for i in range(20)]
    for t in slowpokes:
        t.start()
    try:
        time.sleep(0.3)
        for _ in range(20):
            start_at = time.time()
            assert chat().status_code == 200
            assert time.time() - start_at < 1.0
    finally:
        stop.set()
        for t in slowpokes:
            t.join()
    assert primary.calls == 20
