"""`planoai top` under tmux: a 429 with Retry-After: 30 shows its block, with
the time left, within 2 s; `q` quits; piped, it prints one snapshot."""

import shutil
import subprocess
import time

import pytest

from conftest import chat, planoai
from mock_provider import Reply
from test_gateway import HEADER


def config(limited, fallback):
    return HEADER + f"""
          - model: openai/gpt-4o
            default: true
            base_url: http://127.0.0.1:{limited.port}
            access_key: key-primary-0001
            retry_policy:
              fallback_models: [anthropic/claude-3-5-sonnet]
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-02
    """


@pytest.fixture
def tmux(plano_home):
    if not shutil.which("tmux"):
        pytest.fail("tmux is not installed: `make setup` installs it")
    session = "plano-top-e2e"
    # Its own server socket: no other tmux of this machine is touched.
    base = ["tmux", "-L", session]
    yield base, session
    subprocess.run(base + ["kill-server"], capture_output=True)


def pane(base, session):
    return subprocess.run(base + ["capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def test_top_shows_a_block_with_its_time_left(gateway, providers, tmux):
    limited = providers(Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"message": "limited"}}))
    fallback = providers(Reply())
    gateway.up(config(limited, fallback))
    base, session = tmux
    # The pane stays when top ends, so the test sees that it ended.
    subprocess.run(base + ["new-session", "-d", "-s", session, "-x", "160", "-y", "30", "planoai top"], check=True)
    subprocess.run(base + ["set-option", "-t", session, "remain-on-exit", "on"], check=True)
    time.sleep(1.5)
    assert "MODEL" in pane(base, session), pane(base, session)
    r = chat()
    assert r.status_code == 200 and r.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    blocked_at = time.time()
    seen = ""
    while time.time() - blocked_at < 2.0:
        seen = pane(base, session)
        if "model openai/gpt-4o for 3" in seen or "model openai/gpt-4o for 29s" in seen:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no block shown within 2 s:\n{seen}")
    print(f"block shown after {time.time() - blocked_at:.2f} s")
    row = next(line for line in seen.splitlines() if "openai/gpt-4o" in line and "BLOCKED" not in line)
    assert "29s" in row or "30s" in row, seen
    # `q` quits: the pane's command ends.
    subprocess.run(base + ["send-keys", "-t", session, "q"], check=True)
    deadline = time.time() + 3
    while time.time() < deadline:
        cmd = subprocess.run(base + ["list-panes", "-t", session, "-F", "#{pane_dead}#{pane_current_command}"],
                             capture_output=True, text=True).stdout
        if cmd.startswith("1"):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"top still runs after q: {cmd}")


def test_top_piped_prints_one_snapshot(gateway, providers):
    limited = providers(Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"message": "limited"}}))
    fallback = providers(Reply())
    gateway.up(config(limited, fallback))
    assert chat().status_code == 200
    started = time.time()
    out = planoai("top").stdout  # stdout is a pipe here
    assert time.time() - started < 5
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["MODEL", "DEPLOYMENT", "REQ/S"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines[1:] if not line.startswith("blocked")}
    assert set(rows) == {"openai/gpt-4o", "anthropic/claude-3-5-sonnet"}
    assert rows["openai/gpt-4o"][5] == "1"  # one 429 so far
    assert rows["openai/gpt-4o"][6] in {"29s", "30s"}
    assert any(line.startswith("blocked: model openai/gpt-4o for ") for line in lines)
