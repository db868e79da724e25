"""The README's Docker Compose steps, as a user runs them: build the image,
render the config with the image's filter path, `up -d`, a failover answered,
and `down` leaves nothing behind. Uses `docker compose` or `docker-compose`,
whichever the machine has. Mock providers on loopback: the container shares
the host's network."""

import json
import shutil
import socket
import subprocess
import time

import pytest

from conftest import answers_healthz, chat, eventually, planoai
from mock_provider import Reply

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
IMAGE = "plano-gateway:0.3.0"
CONTAINER = "plano-gateway-compose"


def compose_command():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed")


def container_names():
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"name=^{CONTAINER}$", "--format", "{{.Names}}"],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_compose_steps_of_the_readme_serve_a_failover_and_down_leaves_nothing(providers, tmp_path):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    config = tmp_path / "gw.yaml"
    config.write_text(f"""
version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://host.docker.internal:{primary.port}
    access_key: sk-compose-secret
    default: true
    retry_policy: {{default_strategy: different_provider}}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://host.docker.internal:{secondary.port}
""")
    # The README's steps, in a copy of the project's compose file beside its own dist/.
    shutil.copy(REPO / "docker-compose.yaml", tmp_path / "docker-compose.yaml")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        planoai("build")
    planoai("render", str(config), "-o", str(tmp_path / "dist"),
            "--wasm-path", "/usr/local/share/plano/plano_filter.wasm", "--config-dir", "/etc/plano")
    compose = [*compose_command(), "-p", "plano-e2e-compose", "-f", str(tmp_path / "docker-compose.yaml")]
    assert container_names() == [], "a compose gateway is already there"
    try:
        subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=120)
        assert eventually(answers_healthz, seconds=30)
        resp = chat()
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
        assert resp.headers["x-plano-attempts"] == "2"
        inspect = json.loads(subprocess.run(["docker", "inspect", CONTAINER], capture_output=True,
                                            text=True, check=True).stdout)[0]
        assert inspect["HostConfig"]["LogConfig"] == {
            "Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
        assert "sk-compose-secret" not in json.dumps(inspect)
        line = "attempt 2: anthropic/claude-3-5-sonnet -> 200"
        for _ in range(50):
            logs = subprocess.run([*compose, "logs"], capture_output=True, text=True).stdout
            if line in logs:
                break
            time.sleep(0.2)
        assert line in logs, logs[-2000:]
    finally:
        down = subprocess.run([*compose, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert container_names() == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", 12000)) != 0, "something still listens on 12000"
