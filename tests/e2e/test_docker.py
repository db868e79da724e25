"""`planoai up --docker`: the gateway as a container, and nothing left after `down`."""

import json
import socket
import subprocess

from conftest import chat, eventually, planoai
from mock_provider import Reply


def containers():
    out = subprocess.run(["docker", "ps", "-a", "--filter", "name=plano-gateway", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_docker_gateway_serves_and_down_leaves_nothing(plano_home, providers, tmp_path):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://host.docker.internal:{primary.port}
    access_key: sk-docker-secret
    default: true
    retry_policy: {{default_strategy: different_provider}}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://host.docker.internal:{secondary.port}
""")
    try:
        # Caps other than this Docker daemon's defaults (10m, 3), to tell them apart.
        planoai("up", "--docker", "--log-max-size", "5M", "--log-max-files", "4", str(config))
        assert containers() == ["plano-gateway"]
        resp = chat()
        assert resp.status_code == 200
        assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
        status = planoai("status").stdout
        assert "mode:    docker" in status and "plano-gateway" in status
        assert eventually(lambda: "attempt 2: anthropic/claude-3-5-sonnet -> 200" in planoai("logs", "--envoy").stdout)
        inspect = subprocess.run(["docker", "inspect", "plano-gateway"], capture_output=True, text=True).stdout
        assert "sk-docker-secret" not in inspect
        # The container's log is capped as `up` was told.
        log = subprocess.run(["docker", "inspect", "-f", "{{json .HostConfig.LogConfig}}", "plano-gateway"],
                             capture_output=True, text=True, check=True).stdout
        assert json.loads(log) == {"Type": "json-file", "Config": {"max-size": str(5 << 20), "max-file": "4"}}, log
    finally:
        down = planoai("down", "--docker")
    assert down.stdout.strip() == "gateway stopped"
    assert containers() == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 12000)) != 0, "something still listens on 12000"
    with socket.socket() as s:
        # Free for the next server (which, like Envoy, reuses TIME_WAIT addresses).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 12000))
        s.listen()
    assert planoai("down", "--docker").stdout.strip() == "no gateway is running"
