"""Providers that misbehave, and clients that leave: the gateway answers,
stays up, and keeps nothing it should not."""

import concurrent.futures
import json
import os
import time

import requests

from conftest import chat, planoai, stats, timed_chat
from mock_provider import Reply
from test_gateway import HEADER, RATE_LIMITED

SECONDARY = Reply()


def failover_config(primary_url, secondary, extra=""):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: {primary_url}
            default: true
            timeout_ms: 3000
            retry_policy:
              default_strategy: different_provider
              on_timeout: {{strategy: different_provider, max_attempts: 1}}
{extra}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary.port}
            timeout_ms: 3000
    """


def envoy_rss_mb(home):
    with open(os.path.join(home, "run", "state.json")) as f:
        pid = json.load(f)["pid"]
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def assert_fails_over(gateway, primary_url, providers):
    secondary = providers(SECONDARY)
    gateway.up(failover_config(primary_url, secondary))
    resp = chat()
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert resp.headers["x-plano-attempts"] == "2"
    assert secondary.calls == 1
    # The gateway is still up and serving.
    assert requests.get("http://127.0.0.1:12000/healthz", timeout=5).status_code == 200


def test_a_provider_closing_before_headers_fails_over(gateway, providers):
    closing = providers(Reply(close=True))
    assert_fails_over(gateway, f"http://127.0.0.1:{closing.port}", providers)


def test_a_provider_sending_garbage_fails_over(gateway, providers):
    garbage = providers(Reply(garbage=b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02 not http at all\r\n\r\n"))
    assert_fails_over(gateway, f"http://127.0.0.1:{garbage.port}", providers)


def test_a_provider_whose_host_does_not_resolve_fails_over(gateway, providers):
    assert_fails_over(gateway, "http://no-such-provider.invalid:8080", providers)


def test_a_provider_that_never_answers_times_out_and_fails_over(gateway, providers):
    silent = providers(Reply(delay=30))
    start = time.time()
    assert_fails_over(gateway, f"http://127.0.0.1:{silent.port}", providers)
    assert 2.9 < time.time() - start < 6


def test_a_fallback_that_resets_mid_body_ends_in_an_error_not_a_hang(gateway, providers):
    primary = providers(RATE_LIMITED)
    broken = providers(Reply(truncate=True, body={"pad": "x" * 10000}))
    gateway.up(failover_config(f"http://127.0.0.1:{primary.port}", broken))
    resp, took = timed_chat()
    assert took < 5
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["type"] == "retry_exhausted"
    assert [a["error_type"] for a in error["attempts"]] == ["http_429", "connect_failure"]
    assert "pad" not in resp.text


def test_a_first_attempt_reset_mid_stream_ends_the_stream(gateway, providers):
    broken = providers(Reply(truncate=True, body={"pad": "x" * 10000}))
    secondary = providers(SECONDARY)
    gateway.up(failover_config(f"http://127.0.0.1:{broken.port}", secondary))
    try:
        resp = chat()
        body = resp.content
        assert len(body) < 10000, "a truncated answer came back whole"
    except requests.exceptions.RequestException:
        pass  # the stream was cut: that is the contract once bytes have flowed
    # Bytes reached the client: no retry may follow.
    assert secondary.calls == 0
    assert chat(model="anthropic/claude-3-5-sonnet").status_code == 200


def test_a_huge_429_body_is_dropped_not_held(gateway, providers, plano_home):
    huge = providers(Reply(status=429, body="x" * (10 * 1024 * 1024)))
    secondary = providers(SECONDARY)
    gateway.up(failover_config(f"http://127.0.0.1:{huge.port}", secondary))
    assert chat().status_code == 200
    before = envoy_rss_mb(plano_home)
    for _ in range(5):
        resp = chat()
        assert resp.status_code == 200
        assert len(resp.content) < 10000
    grew = envoy_rss_mb(plano_home) - before
    assert grew < 15, f"Envoy grew {grew:.1f} MB over five 10 MB error bodies"


def test_a_client_leaving_while_its_retry_is_in_flight(gateway, providers):
    primary = providers(Reply(status=429, headers={"Retry-After": "30"}))
    slow = providers(Reply(delay=1.5))
    gateway.up(failover_config(f"http://127.0.0.1:{primary.port}", slow))
    try:
        chat(timeout=0.5)
        raise AssertionError("expected the client to give up first")
    except requests.exceptions.ReadTimeout:
        pass
    time.sleep(1.5)
    assert slow.calls == 1
    # The block learnt from the 429 is kept: the next request skips the primary.
    resp = chat()
    assert resp.status_code == 200
    assert resp.headers["x-plano-attempts"] == "1"
    assert primary.calls == 1
    assert "model openai/gpt-4o for" in planoai("status").stdout
    assert requests.get("http://127.0.0.1:12000/healthz", timeout=5).status_code == 200


def test_concurrent_blocks_from_both_workers_lose_no_write(gateway, providers):
    # Two providers each answer 429 with a different Retry-After; many
    # requests race on both workers. Every block must end up recorded.
    first = providers(Reply(status=429, headers={"Retry-After": "40"}))
    second = providers(Reply(status=429, headers={"Retry-After": "50"}))
    last = providers(SECONDARY)
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{first.port}
            default: true
            retry_policy: {{default_strategy: different_provider, default_max_attempts: 3}}
          - model: mistral/large
            base_url: http://127.0.0.1:{second.port}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{last.port}
    """)
    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        codes = list(pool.map(lambda _: chat().status_code, range(120)))
    assert codes == [200] * 120
    status = planoai("status").stdout
    assert "model openai/gpt-4o for" in status and "model mistral/large for" in status, status
    # Once both blocks are in, requests go straight to the last provider.
    calls = (first.calls, second.calls)
    assert all(chat().headers["x-plano-attempts"] == "1" for _ in range(10))
    assert (first.calls, second.calls) == calls
    assert stats()["wasmcustom.plano.blocks.retry_after"] >= 2


def test_a_provider_with_an_untrusted_certificate_is_refused(gateway, providers, tmp_path):
    # A self-signed HTTPS provider: Envoy verifies provider certificates
    # against the system CA bundle, so the attempt fails and fails over.
    import http.server
    import ssl
    import subprocess
    import threading

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        hits = 0

        def do_POST(self):
            Handler.hits += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert_fails_over(gateway, f"https://localhost:{server.server_address[1]}", providers)
        assert Handler.hits == 0, "a request reached a provider whose certificate is not trusted"
    finally:
        server.shutdown()


def test_envoy_admin_listens_on_loopback_only(gateway, providers):
    import subprocess

    secondary = providers(SECONDARY)
    gateway.up(failover_config(f"http://127.0.0.1:{secondary.port}", secondary))
    assert requests.get("http://127.0.0.1:9901/ready", timeout=5).status_code == 200
    # Read the listening sockets; no traffic to any other address.
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    local = [line.split()[3] for line in listening.splitlines() if line.split()[3].endswith((":9901", ":9902"))]
    assert sorted(set(local)) == ["127.0.0.1:9901", "127.0.0.1:9902"], local
