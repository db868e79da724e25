"""Fixtures for the gateway's own end-to-end tests: the real `planoai` on
PATH, the real Envoy it starts (2 workers), and mock providers on loopback."""

import json
import os
import subprocess
import tempfile
import textwrap
import time

import pytest
import requests

from mock_provider import Provider

GATEWAY = "http://127.0.0.1:12000"
CHAT = f"{GATEWAY}/v1/chat/completions"
ADMIN = "http://127.0.0.1:9901"


@pytest.fixture(scope="session")
def session_home():
    with tempfile.TemporaryDirectory(prefix="plano-e2e-") as home:
        yield home


@pytest.fixture
def plano_home(session_home):
    """PLANO_HOME for the tests that ask for it (one directory for the whole
    session), put back as it was after each: the others keep the caller's."""
    before = os.environ.get("PLANO_HOME")
    os.environ["PLANO_HOME"] = session_home
    yield session_home
    if before is None:
        del os.environ["PLANO_HOME"]
    else:
        os.environ["PLANO_HOME"] = before


def planoai(*args, check=True, env=None):
    result = subprocess.run(["planoai", *args], capture_output=True, text=True, timeout=120, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"planoai {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


class Gateway:
    """Starts the gateway on a config; every output is kept for secret scans."""

    def __init__(self, home):
        self.home = home
        self.outputs = []

    def up(self, yaml_text, extra_env=None, check=True, args=()):
        path = os.path.join(self.home, "gateway.yaml")
        with open(path, "w") as f:
            f.write(textwrap.dedent(yaml_text))
        env = dict(os.environ, **(extra_env or {}))
        result = planoai("up", path, *args, env=env, check=check)
        self.outputs += [result.stdout, result.stderr]
        return result

    def log(self):
        return planoai("logs", "-n", "100000").stdout

    def down(self):
        result = planoai("down", check=False)
        self.outputs += [result.stdout, result.stderr]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test, for fixtures to see whether
    it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def gateway(plano_home, request):
    gw = Gateway(plano_home)
    yield gw
    # A failed test's gateway log is printed before the gateway goes (its
    # home is deleted with the session): Envoy's own lines and the access
    # log's response flags say what a 502 or a reset was.
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        tail = planoai("logs", "--envoy", "-n", "80", check=False)
        print(f"--- the gateway's log, last 80 lines ---\n{tail.stdout}{tail.stderr}")
    gw.down()


@pytest.fixture
def providers():
    started = []

    def make(*replies):
        p = Provider(*replies)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def chat(model="openai/gpt-4o", timeout=30, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(CHAT, json=body, headers={"Authorization": "Bearer client-secret"}, timeout=timeout)


def timed_chat(**kwargs):
    """A chat request and how many seconds it took."""
    start = time.time()
    resp = chat(**kwargs)
    return resp, time.time() - start


def eventually(check, seconds=10):
    """Whether `check` holds within `seconds`: Envoy writes its log and access
    log in batches (every 200 ms), and other things settle too."""
    deadline = time.time() + seconds
    while not check() and time.time() < deadline:
        time.sleep(0.1)
    return check()


def answers_healthz():
    """Whether the gateway's port answers its health check now."""
    try:
        return requests.get(GATEWAY + "/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def running(pid):
    """Whether `pid` runs (a zombie awaiting its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def state_pid(home):
    """The pid `planoai up` recorded for the running Envoy."""
    with open(os.path.join(home, "run", "state.json")) as f:
        return json.load(f)["pid"]


def stats(prefix="wasmcustom.plano"):
    text = requests.get(f"{ADMIN}/stats?filter={prefix}", timeout=5).text
    return {k.strip(): int(v) for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line) if v.strip().isdigit()}


# Each test's seconds (its setup and call) on its own result line, so that
# the tail of a CI log shows where the time went.
_seconds = {}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    _seconds[report.nodeid] = _seconds.get(report.nodeid, 0.0) + report.duration


def pytest_report_teststatus(report, config):
    if report.when != "call" or config.option.verbose <= 0 or hasattr(report, "wasxfail"):
        return None
    letter = {"passed": ".", "failed": "F", "skipped": "s"}[report.outcome]
    return report.outcome, letter, f"{report.outcome.upper()} ({_seconds.get(report.nodeid, 0):.0f} s)"
