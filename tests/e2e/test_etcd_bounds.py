"""What a replica takes from etcd is bounded (issue 38): a block written
there by hand (or by a replica whose clock runs years ahead) holds no
longer than a local one, and ends when its key is shortened or deleted;
fake peers' counts cannot refuse a key, split a budget thousands of ways,
or slow a request down. Three real gateways (`test_replicas`' harness),
one real etcd on loopback, values written with the real `etcdctl`."""

import json
import os
import shutil
import tempfile
import time

import pytest
import requests

from conftest import eventually
from mock_provider import Provider
from test_quota_replicas import KEYS, gateway_config
from test_replicas import ETCD_PORT, Etcd, Replica, etcdctl, percentile, wait_up, world  # noqa: F401 (a fixture)

PREFIX = "/plano-test/"
YEAR_MS = 365 * 86_400_000
# The replicas' `max_retry_after_seconds` (the default): no block is longer.
CAP_MS = 300_000


def remaining_ms(replica, model):
    """How long `replica` holds `model` blocked (None: not blocked)."""
    report = requests.get(f"http://127.0.0.1:{replica.status}/plano/blocks", timeout=2).json()
    found = [b["remaining_ms"] for b in report["blocks"] if b["blocked"] == f"model openai/{model}"]
    return found[0] if found else None


def test_a_rogue_block_in_etcd_is_capped_and_its_key_shortened_or_deleted_is_honoured(world):
    make, _, _ = world
    replicas = make()
    wait_up(replicas)
    key = f"{PREFIX}plano.block.model.openai/m1"
    now = int(time.time() * 1000)
    # A hundred years, as a rogue writer or a replica whose clock runs
    # years ahead writes it (its write time years ahead too).
    etcdctl("put", key, f"{now + 100 * YEAR_MS},{now + 100 * YEAR_MS - 5_000}")
    assert eventually(lambda: all(remaining_ms(r, "m1") is not None for r in replicas), 5)
    held = [remaining_ms(r, "m1") for r in replicas]
    assert all(0 < h <= CAP_MS for h in held), f"a learned block outlasts max_retry_after_seconds: {held}"
    # Shortened in etcd: every replica follows.
    etcdctl("put", key, f"{now + 3_000},{now}")
    assert eventually(lambda: all((remaining_ms(r, "m1") or 0) <= 3_000 for r in replicas), 3), \
        [remaining_ms(r, "m1") for r in replicas]
    # Lengthened again, then deleted: every replica lets the model go.
    etcdctl("put", key, f"{now + 60_000},{now}")
    assert eventually(lambda: all((remaining_ms(r, "m1") or 0) > 3_000 for r in replicas), 3)
    etcdctl("del", key)
    assert eventually(lambda: all(remaining_ms(r, "m1") is None for r in replicas), 3), \
        [remaining_ms(r, "m1") for r in replicas]
    resp = replicas[0].chat("m1", "A")
    assert resp.status_code == 200 and resp.headers["x-plano-model"] == "openai/m1", dict(resp.headers)


# test_quota_replicas' gateway: keys of 60 requests a minute, its prefix.
QUOTA_PREFIX = "/plano-quota/"


@pytest.fixture
def one():
    """One gateway sharing through a real etcd, with limited client keys."""
    with tempfile.TemporaryDirectory(prefix="plano-bounds-") as workdir:
        data = tempfile.mkdtemp(prefix="plano-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else workdir)
        etcd = Etcd(data)
        etcd.start()
        provider = Provider()
        r = Replica("A", 0, workdir, provider, provider, True)
        with open(r.config, "w") as f:
            f.write(gateway_config(r.port, provider))
        try:
            yield r.start()
        finally:
            r.stop()
            provider.stop()
            etcd.kill()
            shutil.rmtree(data, ignore_errors=True)


def send(replica, key, session=requests):
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    return session.post(f"http://127.0.0.1:{replica.port}/v1/chat/completions", json=body,
                        headers={"Authorization": f"Bearer {KEYS[key]}"}, timeout=10)


def fake_peers(first, count, publication):
    """`count` fake replicas' counts, written with etcdctl in transactions
    of 128 puts (etcd's default limit of operations per transaction)."""
    value = json.dumps(publication, separators=(",", ":"))
    for start in range(first, first + count, 128):
        puts = "".join(f"put {QUOTA_PREFIX}plano.counts.fake{i:06d} {value}\n"
                       for i in range(start, min(start + 128, first + count)))
        etcdctl("txn", stdin=f"\n{puts}\n\n")


def refusals_ms(replica, key, n):
    """How long each of `n` requests of a spent key took: the gateway's own
    429, so the time is the gateway's (its limit check reads the peers'
    counts), no provider's."""
    session = requests.Session()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        resp = send(replica, key, session)
        out.append((time.perf_counter() - start) * 1000)
        assert resp.status_code == 429, resp.text
    return out


def test_fake_peers_are_capped_cost_a_request_nothing_and_a_claim_dated_ahead_leaves_the_window(one):
    a = one
    assert eventually(lambda: a.stat("up") == 1, 10)
    # The key's minute spent: every request after is the gateway's 429.
    assert [send(a, "alone").status_code for _ in range(61)] == [200] * 60 + [429]
    alone = percentile(refusals_ms(a, "alone", 300), 0.5)
    now = time.time()
    day, second = int(now // 86_400), int(now)
    # 20,000 replicas that never were, each with counts for the key.
    fake_peers(0, 20_000, {"plano.limit.alone": f"{day}:0;{second}:0:0"})
    assert eventually(lambda: (a.stat("peers") or 0) >= 64, 30)
    time.sleep(1.0)
    peers = a.stat("peers")
    crowded = percentile(refusals_ms(a, "alone", 300), 0.5)
    print(f"\nlimited key p50, ms: {alone:.2f} alone, {crowded:.2f} with 20,000 fake peers in etcd (counted: {peers})")
    assert peers == 64, f"peers counted: {peers}"
    assert crowded <= alone + 1.0, (alone, crowded)
    # A rogue claim of 10^12 requests dated a year ahead: counted as now's,
    # so it leaves the window within a minute, not a year.
    etcdctl("del", "--prefix", f"{QUOTA_PREFIX}plano.counts.fake")
    assert eventually(lambda: a.stat("peers") == 0, 10)
    ahead = second + 365 * 86_400
    fake_peers(0, 1, {"plano.limit.shared": f"{day}:0;{ahead}:1000000000000:0"})
    assert eventually(lambda: send(a, "shared").status_code == 429, 5)
    refused = send(a, "shared")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) <= 61, dict(refused.headers)
