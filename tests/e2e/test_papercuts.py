"""Issue 18 with a running gateway: its log stays under the cap however much
traffic it gets, the access log can be turned off, and every command's
output can be cut short."""

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import CHAT, eventually, planoai
from mock_provider import Reply
from test_gateway import HEADER

BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def failover_config(tmp_path, primary, secondary, logging=""):
    """Every request fails over: the primary answers 429 without Retry-After."""
    path = tmp_path / "gw.yaml"
    path.write_text(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: sk-papercut-key
            default: true
            retry_policy: {{default_strategy: different_provider, default_max_attempts: 1}}
          - model: anthropic/claude-3-5-sonnet
            base_url: http://127.0.0.1:{secondary.port}
        {logging}
    """)
    return str(path)


def send(n, threads=8):
    def worker(count):
        with requests.Session() as s:
            return [s.post(CHAT, json=BODY, timeout=30).status_code for _ in range(count)]

    with ThreadPoolExecutor(threads) as pool:
        codes = [c for batch in pool.map(worker, [n // threads] * threads) for c in batch]
    assert codes == [200] * len(codes), sorted(set(codes))
    return len(codes)


# `[2026-11-29 22:10:00.123]` (Envoy) or `[2026-11-29T22:10:00.123Z]` (access log).
LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d\.\d{3}Z?\]")


def log_files(plano_home):
    run = os.path.join(plano_home, "run")
    return {f: os.path.getsize(os.path.join(run, f)) for f in os.listdir(run) if f.startswith("envoy.log")}


def test_native_log_stays_under_its_cap_and_keeps_the_latest_failover(gateway, providers, tmp_path, plano_home):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    config = failover_config(tmp_path, primary, secondary)
    max_size, files = 32 * 1024, 3
    planoai("up", "--log-max-size", "32k", "--log-max-files", str(files), config)
    # About 500 bytes of log per request (an access line, two attempt lines):
    # 1,600 requests write some 800 KB, eight times the cap.
    sent = send(1600)
    written = sum(log_files(plano_home).values())
    sizes = log_files(plano_home)
    assert sorted(sizes) == ["envoy.log", "envoy.log.1", "envoy.log.2"], sizes
    assert all(size <= max_size for size in sizes.values()), sizes
    assert written <= max_size * files, sizes
    # Rotated at whole lines: every rotated file ends with one, and every
    # line (Envoy's own and the access log's) starts with its time.
    for name in sizes:
        with open(os.path.join(plano_home, "run", name)) as f:
            text = f.read()
        if name != "envoy.log":
            assert text.endswith("\n"), (name, text[-200:])
        lines = text.splitlines()[:-1] if name == "envoy.log" else text.splitlines()
        torn = [line for line in lines if not LOG_LINE.match(line)]
        assert not torn, (name, torn[:3])
    # The newest failover is in the log, and `logs` reads across the files.
    resp = requests.post(CHAT, json=BODY, headers={"x-request-id": "the-last-failover"}, timeout=30)
    assert resp.status_code == 200 and resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    line = "request the-last-failover  attempt 2  anthropic/claude-3-5-sonnet  200"
    assert eventually(lambda: line in planoai("logs", "-n", "20").stdout), planoai("logs", "-n", "20").stdout
    tail = planoai("logs", "-n", "100000").stdout
    assert len(tail.splitlines()) > sent // 10, "logs read only part of the kept files"
    assert "sk-papercut-key" not in tail


def test_access_log_is_on_by_default_and_can_be_turned_off(gateway, providers, tmp_path, plano_home):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    access_line = '"POST /v1/chat/completions HTTP/1.1" 200'

    def log_after(logging):
        planoai("up", failover_config(tmp_path, primary, secondary, logging))
        send(8)
        planoai("down")  # Envoy flushes its access log as it exits
        with open(os.path.join(plano_home, "run", "envoy.log")) as f:
            return f.read()

    log = log_after("")
    assert log.count(access_line) == 8, log[-2000:]
    log = log_after("logging: {access_log: false}")
    assert access_line not in log, log[-2000:]
    # Retries are logged all the same.
    assert log.count("attempt 2: anthropic/claude-3-5-sonnet -> 200") == 8, log[-2000:]


def test_every_command_exits_quietly_when_its_reader_goes_away(gateway, providers, tmp_path):
    primary = providers(Reply(status=429))
    secondary = providers(Reply())
    config = failover_config(tmp_path, primary, secondary)
    planoai("up", config)
    send(16)
    for args in (["up", config], ["status"], ["logs"], ["logs", "-n", "5"], ["validate", config],
                 ["render", config, "-o", str(tmp_path / "out")], ["down"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first line
        try:
            result = subprocess.run(["planoai", *args], stdout=write, stderr=subprocess.PIPE, text=True,
                                    timeout=60, env=dict(os.environ, RUST_BACKTRACE="1"))
        finally:
            os.close(write)
        assert result.returncode == 0, (args, result.stderr)
        assert "panicked" not in result.stderr and "backtrace" not in result.stderr, (args, result.stderr)
    assert planoai("status", check=False).stdout.startswith("not running")


def test_first_attempt_successes_can_go_unlogged_while_retries_stay(gateway, providers, tmp_path, plano_home):
    primary = providers(Reply(), Reply(), Reply(status=429))
    secondary = providers(Reply())
    planoai("up", failover_config(tmp_path, primary, secondary, "logging: {first_attempt_success: false}"))
    for rid in ["ok-1", "ok-2", "failover-1"]:
        requests.post(CHAT, json=BODY, headers={"x-request-id": rid}, timeout=30).raise_for_status()
    # The access log (stdout) and the attempt lines (stderr) are flushed
    # apart, each up to 200 ms late: wait for both.
    wanted = ['failover-1" attempt 2', '"POST /v1/chat/completions HTTP/1.1" 200', '"ok-1"']
    assert eventually(lambda: all(w in planoai("logs", "--envoy", "-n", "100000").stdout for w in wanted)), \
        planoai("logs", "--envoy", "-n", "100000").stdout[-2000:]
    log = planoai("logs", "--envoy", "-n", "100000").stdout
    # Their access log lines stay; no attempt line names them.
    assert 'request "ok-1"' not in log and 'request "ok-2"' not in log, log[-2000:]
    assert 'request "failover-1" attempt 1: openai/gpt-4o -> 429' in log, log[-2000:]
    assert 'request "failover-1" attempt 2: anthropic/claude-3-5-sonnet -> 200' in log, log[-2000:]
