"""Running the gateway beside others and on unusual hosts: a second gateway
on one host (its own PLANO_HOME and ports), a provider on IPv6, a listener
address the host does not have, `logs -f` in a pipe that closes."""

import os
import subprocess
import time

import requests

from conftest import CHAT, planoai
from mock_provider import Provider

CONFIG = """version: v0.3.0
listeners: [{{type: model, name: l, port: {port}}}]
model_providers:
  - model: openai/gpt-4o
    base_url: {base_url}
    access_key: sk-test
{extra}"""


def write(home, text):
    os.makedirs(home, exist_ok=True)
    path = os.path.join(home, "gateway.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def chat_at(port):
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    return requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=10)


def test_two_gateways_run_on_one_host_with_their_own_ports(gateway, plano_home, providers, tmp_path):
    p = providers()
    gateway.up(CONFIG.format(port=12000, base_url=f"http://127.0.0.1:{p.port}", extra=""))
    second = dict(os.environ, PLANO_HOME=str(tmp_path / "second"))
    clash = write(str(tmp_path / "second"), CONFIG.format(port=12001, base_url=f"http://127.0.0.1:{p.port}", extra=""))
    # The first holds the default admin port: the second says which field to set.
    refused = planoai("up", clash, env=second, check=False)
    assert refused.returncode == 1 and "set `admin.port`" in refused.stderr, refused.stderr
    own_ports = CONFIG.format(port=12001, base_url=f"http://127.0.0.1:{p.port}", extra="admin: {port: 9911, status_port: 9912}\n")
    path = write(str(tmp_path / "second"), own_ports)
    try:
        planoai("up", path, env=second)
        assert chat_at(12000).status_code == 200 and chat_at(12001).status_code == 200
        # Each one's commands reach its own Envoy.
        assert requests.get("http://127.0.0.1:9911/ready", timeout=5).status_code == 200
        assert requests.get("http://127.0.0.1:9912/plano/blocks", timeout=5).status_code == 200
        status = planoai("status", env=second).stdout
        assert "12001" in status, status
        # A change applied live to the second goes through its own admin.
        write(str(tmp_path / "second"), own_ports.replace("sk-test", "sk-test\n    timeout_ms: 20000"))
        applied = planoai("up", path, env=second)
        assert "applied to the running gateway" in applied.stdout, applied.stdout
        assert chat_at(12001).status_code == 200
    finally:
        planoai("down", env=second, check=False)
    assert chat_at(12000).status_code == 200


def test_a_provider_on_ipv6_is_reached(gateway, providers):
    p = Provider(host="::1")
    try:
        gateway.up(CONFIG.format(port=12000, base_url=f"http://[::1]:{p.port}", extra=""))
        resp = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert p.calls == 1 and p.requests[0]["headers"]["host"] == f"[::1]:{p.port}"
    finally:
        p.stop()


def test_a_listener_address_not_on_this_host_is_named(gateway, providers):
    p = providers()
    text = CONFIG.format(port=12000, base_url=f"http://127.0.0.1:{p.port}", extra="")
    text = text.replace("port: 12000}", "port: 12000, address: 192.0.2.7, allow_unauthenticated: true}")
    out = gateway.up(text, check=False)
    assert out.returncode == 1
    assert "address 192.0.2.7 is not on this host" in out.stderr, out.stderr
    assert "already in use" not in out.stderr


def test_logs_follow_ends_when_its_reader_goes_on_a_quiet_gateway(gateway, providers):
    p = providers()
    gateway.up(CONFIG.format(port=12000, base_url=f"http://127.0.0.1:{p.port}", extra=""))
    for _ in range(3):
        assert chat_at(12000).status_code == 200
    time.sleep(0.5)  # the attempt lines reach the log (flushed every 200 ms)
    start = time.time()
    piped = subprocess.run(["sh", "-c", "planoai logs -f | head -2"], capture_output=True, text=True, timeout=30)
    took = time.time() - start
    assert len(piped.stdout.splitlines()) == 2, piped.stdout
    assert took < 5, f"`logs -f | head -2` took {took:.1f}s"
