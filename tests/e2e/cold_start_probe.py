"""A probe, not a test: fresh gateways configured as the quota-across-replicas
test's (etcd shared state, client keys), each round started cold and its
first requests counted. Run in a network namespace, from tests/e2e:

    python cold_start_probe.py ROUNDS burst|seq|hammer

`burst`: two replicas, 20 requests at once spread over both, right after
/healthz. `seq`: as the test orders it: peers seen, then 12 requests one at a
time. `hammer`: one replica, 6 threads posting from before its port opens
until a second after /healthz. Envoy logs of a round with a failure are kept
in /tmp/cold_start_probe_*.log. Issue 37 item 2 (see docs/guides/replicas.md,
"Seen, cause not found")."""

import collections
import concurrent.futures
import os
import shutil
import sys
import tempfile
import threading
import time

import requests

from conftest import eventually
from mock_provider import Provider
from test_quota_replicas import WARM_KEY, gateway_config
from test_quotas import used
from test_replicas import Etcd, Replica


def post(r):
    try:
        a = requests.post(f"http://127.0.0.1:{r.port}/v1/chat/completions", timeout=15,
                          json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"Authorization": f"Bearer {WARM_KEY}"})
        return a.status_code, a.text[:300]
    except requests.RequestException as e:
        return ("REFUSED" if "Connection refused" in str(e) else "EXC"), str(e)[:200]


def replica(name, n, workdir, provider):
    r = Replica(name, n, workdir, provider, provider, True)
    with open(r.config, "w") as f:
        f.write(gateway_config(r.port, provider))
    return r


def hammered(r):
    seen, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            status = post(r)
            if status[0] == "REFUSED":
                time.sleep(0.002)  # not listening yet
            else:
                seen.append(status)
    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    r.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    return seen


def main(rounds, mode):
    total, failed = collections.Counter(), 0
    with tempfile.TemporaryDirectory(prefix="cold-start-") as workdir:
        data = tempfile.mkdtemp(prefix="etcd-", dir=workdir)
        etcd = Etcd(data)
        etcd.start()
        for i in range(rounds):
            provider = Provider(used(10, 5))
            names = "A" if mode == "hammer" else "AB"
            rs = [replica(name, n, os.path.join(workdir, f"r{i}"), provider) for n, name in enumerate(names)]
            if mode == "hammer":
                seen = hammered(rs[0])
            else:
                for r in rs:
                    r.start()
                if mode == "burst":
                    with concurrent.futures.ThreadPoolExecutor(20) as ex:
                        seen = list(ex.map(post, [rs[k % 2] for k in range(20)]))
                else:
                    eventually(lambda: all(r.stat("peers") == 1 for r in rs), 10)
                    seen = [post(rs[k % 2]) for k in range(12)]
            counts = collections.Counter(s[0] for s in seen)
            total.update(counts)
            bad = [s for s in seen if s[0] != 200]
            print(f"round {i}: {dict(counts)}", bad[:3], flush=True)
            if bad:
                failed += 1
                for r in rs:
                    shutil.copy(os.path.join(r.dir, "envoy.log"), f"/tmp/cold_start_probe_{i}_{r.name}.log")
            for r in rs:
                r.stop()
            provider.stop()
        etcd.kill()
    print(f"rounds with a failure: {failed} of {rounds}; answers: {dict(total)}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
