"""docs/getting-started.md, followed as a reader follows it: the commands of
its native section and of the failover in `planoai logs`, run in order from
the page itself against the demo's mock providers, give the answer and the
log lines the page shows. (Its Docker and Compose steps are the ones
test_docker.py and test_compose.py run.)"""

import os
import pathlib
import re
import signal
import socket
import subprocess
import time

from conftest import eventually

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "getting-started.md"


def blocks(section):
    """The fenced blocks of one `## ` section of the page, as (language, text)."""
    text = PAGE.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```(\w+)\n(.*?)^```$", body, flags=re.S | re.M)


def commands(section):
    """The commands of a section's sh blocks, a trailing backslash joining lines."""
    found = []
    for lang, text in blocks(section):
        if lang == "sh":
            found += [c.strip() for c in text.replace("\\\n", " ").splitlines() if c.strip()]
    return found


def shown(section):
    """What the section's text blocks say the reader will see."""
    return [text for lang, text in blocks(section) if lang == "text"]


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(command):
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def steady(log_text):
    """Log lines without what changes from run to run: times, ids, latencies."""
    lines = []
    for line in log_text.splitlines():
        line = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}  ", "", line)
        line = re.sub(r"request \S+", "request ID", line)
        line = re.sub(r"\d+ ms", "N ms", line)
        lines.append(line)
    return lines


def test_the_native_steps_give_the_failover_and_the_log_lines_the_page_shows(gateway):
    steps = commands("Natively") + commands("The first failover in `planoai logs`")
    assert steps[0] == "make up" and "make demo-mocks" in steps, steps
    assert not listening(8001) and not listening(8002), "something already serves the demo's ports"
    mocks = None
    outputs = {}
    try:
        for step in steps:
            if step.startswith("make demo-mocks"):
                mocks = subprocess.Popen(["bash", "-c", step.rstrip("&").strip()], cwd=REPO,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         start_new_session=True)
                assert eventually(lambda: listening(8001) and listening(8002), seconds=20)
                continue
            if step == "planoai logs":
                # Envoy writes its log in batches, every 200 ms.
                eventually(lambda: "attempt 2" in run(step), seconds=5)
            outputs[step] = run(step)
    finally:
        if mocks is not None:
            os.killpg(mocks.pid, signal.SIGTERM)
            mocks.wait(timeout=10)

    answer = next(out for step, out in outputs.items() if step.startswith("curl"))
    answer = answer.replace("\r\n", "\n")
    (headers,) = shown("Natively")
    for line in headers.splitlines():
        assert line.lower() in answer.lower(), (line, answer)

    (sample,) = shown("The first failover in `planoai logs`")
    real = steady(outputs["planoai logs"])
    for line in steady(sample):
        assert line in real, (line, real)
    assert "model openai/gpt-4o for" in outputs["planoai status"], outputs["planoai status"]
    assert not listening(12000), "the page's last step leaves a gateway running"
