"""The CLI's lifecycle as a person uses it: replacing a running gateway,
running attached and stopping on Ctrl-C."""

import os
import signal
import subprocess

import requests

from conftest import chat, planoai, running, state_pid
from test_gateway import HEADER
from mock_provider import Reply


def config(tmp_path, name, port):
    path = tmp_path / f"{name}.yaml"
    path.write_text(HEADER + f"""
          - model: openai/{name}
            base_url: http://127.0.0.1:{port}
            default: true
    """)
    return str(path)


def test_up_applies_to_a_running_gateway_and_restarts_only_for_what_needs_it(gateway, providers, tmp_path, plano_home):
    p = providers(Reply())
    planoai("up", config(tmp_path, "first", p.port))
    old = state_pid(plano_home)
    # A new provider list: the same Envoy takes it.
    result = planoai("up", config(tmp_path, "second", p.port))
    assert "applied to the running gateway" in result.stdout, result.stdout
    assert "+ provider openai/second" in result.stdout and "- provider openai/first" in result.stdout
    assert state_pid(plano_home) == old and running(old)
    models = requests.get("http://127.0.0.1:12000/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["openai/second"]
    # Another worker count needs a new Envoy: the old one is replaced.
    result = planoai("up", "--workers", "1", config(tmp_path, "second", p.port))
    assert "restarting the gateway (workers 2 -> 1)" in result.stdout, result.stdout
    assert "gateway listening on" in result.stdout
    new = state_pid(plano_home)
    assert new != old and running(new)
    assert not running(old), "the replaced Envoy still runs"
    assert f"pid:     {new}" in planoai("status").stdout


def test_up_refuses_a_port_another_program_holds(gateway, providers, tmp_path):
    import socket

    p = providers(Reply())
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 12000))
        s.listen()
        result = planoai("up", config(tmp_path, "blocked", p.port), check=False)
    assert result.returncode != 0
    assert "port 12000 is already in use" in result.stderr


def test_foreground_runs_attached_and_stops_on_ctrl_c(plano_home, providers, tmp_path):
    p = providers(Reply())
    proc = subprocess.Popen(
        ["planoai", "up", "--foreground", config(tmp_path, "attached", p.port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        # Wait for planoai itself to see the gateway up: Envoy may answer
        # /healthz before planoai's own check does, and a Ctrl-C then is
        # one during start-up.
        started = ""
        while "gateway listening" not in started:
            line = proc.stdout.readline()
            assert line, f"planoai ended before the gateway was up: {started}{proc.stderr.read()}"
            started += line
        assert chat(model="openai/attached").status_code == 200
        # Ctrl-C reaches the whole foreground process group.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        requests.get("http://127.0.0.1:12000/healthz", timeout=1)
        raise AssertionError(f"the gateway still answers after Ctrl-C: {proc.communicate()}")
    except requests.ConnectionError:
        pass
    out, err = proc.communicate()
    out = started + out
    assert proc.returncode == 0, (out, err)
    assert "gateway stopped" in out, (out, err)
    assert planoai("status", check=False).stdout.strip().startswith("not running")
