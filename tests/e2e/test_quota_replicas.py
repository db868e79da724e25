"""One client key's limit across gateways (issue 30 with issue 28's etcd):
two real Envoys rendered by the real `planoai`, one real etcd on loopback, a
mock provider that counts the calls. With etcd up, one key's minute is one
minute across both, within the stated error, and tokens settled at one are
spent at the other (status and gauges show both's spending); with etcd
killed, each holds its share; back, the whole limit is shared again; a
replica killed takes its counts with it within its lease's 10 s."""

import os
import shutil
import tempfile
import textwrap
import time

import pytest
import requests

from conftest import eventually
from mock_provider import Provider
from test_quotas import used
from test_replicas import ETCD_PORT, Etcd, Replica, warm_up

KEYS = {"shared": "shared-key-4b7e1a9c03d25f68", "alone": "alone-key-9d03c6e2b1a7f584",
        "back": "back-key-2c7d9e0a4f3b1685"}
# A key with a token limit, spent at one replica and read at the other.
TOKENS_KEY = "tokens-key-8f1b3d5a7c9e0246"
# A key with no limits, for the requests that warm each gateway up.
WARM_KEY = "warm-key-5e8a0c3f71b9d246"


def gateway_config(port, provider):
    keys = "".join(f"""
                  - name: {name}
                    key: {key}
                    limits: {{ requests_per_minute: 60 }}""" for name, key in KEYS.items())
    keys += f"""
                  - name: tokens
                    key: {TOKENS_KEY}
                    limits: {{ tokens_per_minute: 1000 }}
                  - name: warm
                    key: {WARM_KEY}"""
    return textwrap.dedent(f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: {port}
            client_keys:{keys}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: k-ok
            default: true
        shared_state:
          etcd_endpoints: [http://127.0.0.1:{ETCD_PORT}]
          key_prefix: /plano-quota/
        """)


@pytest.fixture
def pair():
    with tempfile.TemporaryDirectory(prefix="plano-quota-replicas-") as workdir:
        data = tempfile.mkdtemp(prefix="plano-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else workdir)
        etcd = Etcd(data)
        etcd.start()
        provider = Provider(used(10, 5))
        replicas = []
        for n, name in enumerate("AB"):
            r = Replica(name, n, workdir, provider, provider, True)
            with open(r.config, "w") as f:
                f.write(gateway_config(r.port, provider))
            replicas.append(r.start())
        yield replicas, provider, etcd
        for r in replicas:
            r.stop()
        provider.stop()
        etcd.kill()
        shutil.rmtree(data, ignore_errors=True)


def send(replica, secret, **extra):
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(f"http://127.0.0.1:{replica.port}/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {secret}"}, timeout=10)


def spending(replica, key):
    """What `planoai status` shows of `key` at `replica` (its status port)."""
    report = requests.get(f"http://127.0.0.1:{replica.status}/plano/blocks", timeout=2).json()
    return next(c for c in report["clients"] if c["name"] == key)


def gauges(replica, key):
    """The key's spending gauges at `replica`'s admin."""
    text = requests.get(f"http://127.0.0.1:{replica.admin}/stats?filter=wasmcustom.plano.client.{key}.", timeout=5).text
    got = {line.split(":")[0].rsplit(".", 1)[1]: int(line.split(":")[1]) for line in text.splitlines() if ":" in line}
    return {k: got.get(k) for k in ("minute_requests", "minute_tokens", "day_tokens")}


def test_one_keys_minute_is_one_minute_across_gateways_and_each_holds_its_share_without_etcd(pair):
    (a, b), provider, etcd = pair
    assert eventually(lambda: a.stat("up") == 1 and b.stat("up") == 1, 10)
    # Each replica learns of the other (its published counts) before the run.
    assert eventually(lambda: a.stat("peers") == 1 and b.stat("peers") == 1, 10), (a.stat("peers"), b.stat("peers"))
    warm_up((a, b), lambda r: send(r, WARM_KEY), 6)
    warm = provider.calls
    statuses = {a.name: [], b.name: []}
    # Any answer but a 200 or the gateway's 429, whole, for the failure's message.
    unexpected = []
    started = time.monotonic()
    for i in range(100):
        r = (a, b)[i % 2]
        answer = send(r, KEYS["shared"])
        statuses[r.name].append(answer.status_code)
        if answer.status_code not in (200, 429):
            unexpected.append((i, r.name, answer.status_code, dict(answer.headers), answer.text[:500]))
        time.sleep(max(0.0, started + (i + 1) * 0.1 - time.monotonic()))
    served = sum(s.count(200) for s in statuses.values())
    refused = sum(s.count(429) for s in statuses.values())
    if unexpected:
        # Printed whole (an assertion's message is cut short in the report).
        print(a.log_tail(), b.log_tail(), sep="\n")
    assert served + refused == 100, (unexpected, statuses)
    # The stated error: what the other replica admitted in the ~1.5 s its
    # counts take to arrive (5 requests a second here: at most 8).
    assert 60 <= served <= 68, statuses
    assert provider.calls - warm == served
    # Both replicas served a part: neither held the whole limit alone.
    assert all(s.count(200) < 60 for s in statuses.values()), statuses
    # Each one's status shows the key's spending at both.
    assert eventually(lambda: [spending(r, "shared")["minute_requests"] for r in (a, b)] == [served] * 2, 5), \
        [spending(r, "shared") for r in (a, b)]

    # Tokens too: what A's answers settled (15 each) is spent at B.
    first = [send(a, TOKENS_KEY, max_tokens=20) for _ in range(5)]
    assert [r.status_code for r in first] == [200] * 5
    assert eventually(lambda: spending(b, "tokens")["minute_tokens"] == 75, 5), spending(b, "tokens")
    at_b = send(b, TOKENS_KEY, max_tokens=20)
    assert int(at_b.headers["x-ratelimit-remaining-tokens"]) \
        == int(first[0].headers["x-ratelimit-remaining-tokens"]) - 75, (first[0].headers, at_b.headers)
    # B's gauges, set as its answer was settled, hold A's spending with its own.
    assert eventually(lambda: gauges(b, "tokens") == {"minute_requests": 6, "minute_tokens": 90, "day_tokens": 90}, 5), \
        gauges(b, "tokens")

    etcd.kill()
    assert eventually(lambda: a.stat("up") == 0 and b.stat("up") == 0, 10)
    before = provider.calls
    alone = {r.name: sum(send(r, KEYS["alone"]).status_code == 200 for _ in range(45)) for r in (a, b)}
    # Two replicas were alive when etcd went: each holds 60 / 2.
    assert alone == {a.name: 30, b.name: 30}, alone
    assert provider.calls - before == 60

    # etcd back: the peers' counts load again and the whole limit is shared.
    etcd.start()
    assert eventually(lambda: [r.stat("up") for r in (a, b)] == [1, 1] and [r.stat("peers") for r in (a, b)] == [1, 1],
                      10), [(r.stat("up"), r.stat("peers")) for r in (a, b)]
    at_a = sum(send(a, KEYS["back"]).status_code == 200 for _ in range(45))
    assert eventually(lambda: spending(b, "back")["minute_requests"] == 45, 5), spending(b, "back")
    at_b = sum(send(b, KEYS["back"]).status_code == 200 for _ in range(45))
    assert (at_a, at_b) == (45, 15)

    # A replica that dies takes its counts with it (its lease, 10 s).
    b.proc.kill()
    died = time.monotonic()
    assert eventually(lambda: a.stat("peers") == 0, 15)
    assert time.monotonic() - died <= 11
