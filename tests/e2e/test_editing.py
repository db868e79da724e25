"""Issue 17 with a running gateway: `planoai logs` shows one line per
attempt (time, request id, attempt, target, outcome, latency, wait), as text
or JSON, Envoy's raw log with --envoy, and no access key in any mode."""

import json
import os
import pathlib
import re

import jsonschema
import yaml

from conftest import CHAT, eventually, planoai
from mock_provider import Reply
from test_gateway import HEADER

import requests

KEY = "sk-editing-secret-1234"


def test_logs_show_one_line_per_attempt_in_every_mode_without_keys(gateway, providers, tmp_path):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    config = tmp_path / "gw.yaml"
    config.write_text(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: {KEY}
            default: true
            retry_policy: {{default_strategy: different_provider, default_max_attempts: 1}}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary.port}
            access_key: {KEY}
    """)
    planoai("up", str(config))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    resp = requests.post(CHAT, json=body, headers={"x-request-id": "edit-1"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["x-plano-attempts"] == "2"

    assert eventually(lambda: planoai("logs").stdout.count("request edit-1") == 2), planoai("logs").stdout
    text = planoai("logs").stdout
    ours = [line for line in text.splitlines() if "request edit-1" in line]
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(stamp + r"  request edit-1  attempt 1  openai/gpt-4o  429  \d+ ms  wait (-|\d+ ms)", ours[0]), ours
    assert re.fullmatch(stamp + r"  request edit-1  attempt 2  anthropic/claude-3-5-sonnet  200  \d+ ms  wait (-|\d+ ms)",
                        ours[1]), ours
    # Only the gateway's lines: Envoy's own (start-up warnings, access log) are left out.
    assert all(re.match(stamp + "  ", line) for line in text.splitlines()), text
    assert "[info]" not in text and "HTTP/1.1" not in text

    records = [json.loads(line) for line in planoai("logs", "--json").stdout.splitlines()]
    ours = [r for r in records if r.get("request_id") == "edit-1"]
    assert [(r["attempt"], r["target"], r["outcome"]) for r in ours] == [
        (1, "openai/gpt-4o", "429"), (2, "anthropic/claude-3-5-sonnet", "200")]
    assert all(isinstance(r["latency_ms"], int) and "time" in r and "wait_ms" in r for r in ours), ours

    raw = planoai("logs", "--envoy", "-n", "100000").stdout
    assert "wasm log plano plano plano: request \"edit-1\" attempt 2: anthropic/claude-3-5-sonnet -> 200" in raw

    for args in (["logs"], ["logs", "--json"], ["logs", "--envoy", "-n", "100000"]):
        assert KEY not in planoai(*args).stdout, args


# The schema shipped for editors: the same as `planoai schema`, and every
# example config (and the acceptance suite's) is valid under it.
REPO = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schema" / "gateway.schema.json"
ACCEPTANCE = pathlib.Path(os.environ.get("ACCEPTANCE", REPO.parent / "shared" / "acceptance"))
MODELINE = "# yaml-language-server: $schema=../schema/gateway.schema.json"


def test_the_shipped_schema_is_what_planoai_schema_prints():
    assert json.loads(planoai("schema").stdout) == json.loads(SCHEMA.read_text())


def test_every_config_validates_against_the_schema_and_points_editors_at_it():
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    ours = sorted((REPO / "configs").glob("*.yaml"))
    theirs = sorted((ACCEPTANCE / "configs").glob("*.yaml"))
    assert ours and theirs, (ours, theirs)
    for path in ours + theirs:
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert errors == [], path
    for path in ours:
        assert path.read_text().splitlines()[0] == MODELINE, path


def test_the_schema_rejects_what_validate_rejects():
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    config = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    config["model_providers"][0]["retry_policy"]["default_strategy"] = "same_modle"
    config["listeners"][0]["prot"] = 12000
    messages = " ".join(e.message for e in validator.iter_errors(config))
    assert "same_modle" in messages and "prot" in messages, messages


def test_up_shows_its_progress_on_a_terminal_and_nothing_elsewhere(gateway, providers, tmp_path):
    import pty

    p = providers(Reply())
    config = tmp_path / "gw.yaml"
    config.write_text(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{p.port}
    """)
    # Each `up` below must start a gateway, not apply to a running one
    # (which has nothing to wait for).
    assert planoai("status", check=False).stdout.startswith("not running")
    piped = planoai("up", str(config))
    assert "gateway listening on" in piped.stdout, piped.stdout
    assert "waiting for" not in piped.stdout + piped.stderr, piped.stderr
    planoai("down")
    assert planoai("status", check=False).stdout.startswith("not running")

    pid, fd = pty.fork()
    if pid == 0:
        os.execvp("planoai", ["planoai", "up", str(config)])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: planoai exited
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "waiting for the gateway to answer /healthz on port 12000" in text, text
    assert "gateway listening on" in text, text
