"""Two `planoai up` at once (an operator's beside `up --watch`, two scripts):
they take turns on a lock in the state directory, so exactly one Envoy runs
after, `status` and `down` know it, and no request is dropped meanwhile."""

import os
import subprocess
import threading
import time

from conftest import chat, state_pid


def envoys(home):
    """Pids of the Envoys started on this PLANO_HOME's config."""
    mine = os.path.join(home, "run", "config", "envoy.yaml")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if not zombie and args[0].endswith(b"envoy") and mine.encode() in args:
            found.append(int(pid))
    return found


def together(*argvs):
    """Runs each `planoai` command at the same moment; their results."""
    procs = [subprocess.Popen(["planoai", *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for a in argvs]
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def config(home, name, providers, timeout_ms):
    path = os.path.join(home, name)
    with open(path, "w") as f:
        f.write(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{providers.port}
    access_key: sk-test
    timeout_ms: {timeout_ms}
""")
    return path


def test_two_ups_at_once_take_turns_and_leave_one_envoy(gateway, plano_home, providers):
    p = providers()
    a = config(plano_home, "a.yaml", p, 20000)
    b = config(plano_home, "b.yaml", p, 25000)

    # Nothing runs: both start one, or the second applies to the first's.
    results = together(["up", a], ["up", b])
    assert [r[0] for r in results] == [0, 0], results
    assert envoys(plano_home) == [state_pid(plano_home)], results

    # A restart each (a new worker count): one after the other.
    results = together(["up", "--workers", "1", a], ["up", "--workers", "3", b])
    assert [r[0] for r in results] == [0, 0], results
    assert envoys(plano_home) == [state_pid(plano_home)], results

    # Back to the default worker count, then ten rounds of two changes
    # applied at once (no restart), under a request every 50 ms.
    assert subprocess.run(["planoai", "up", a], capture_output=True, timeout=120).returncode == 0
    done = threading.Event()
    outcomes = []

    def load():
        while not done.is_set():
            try:
                outcomes.append(chat(timeout=10).status_code)
            except Exception as e:  # a refused or reset connection is a failure too
                outcomes.append(repr(e))
            time.sleep(0.05)

    loop = threading.Thread(target=load)
    loop.start()
    said = []
    try:
        for _ in range(10):
            results = together(["up", a], ["up", b])
            said += [r[2] for r in results]
            assert [r[0] for r in results] == [0, 0], results
    finally:
        done.set()
        loop.join()
    failures = [o for o in outcomes if o != 200]
    assert len(outcomes) > 20 and failures == [], (len(outcomes), failures[:5])
    assert envoys(plano_home) == [state_pid(plano_home)]
    # The one that came second said it waited, and for whom.
    assert any("waiting for another planoai (pid" in s for s in said), said

    down = subprocess.run(["planoai", "down"], capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "gateway stopped" in down.stdout, down
    assert envoys(plano_home) == []
