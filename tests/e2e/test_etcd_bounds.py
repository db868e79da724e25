"""What a replica takes from etcd is bounded (issue 38): a block written
there by hand (or by a replica whose clock runs years ahead) holds no
longer than a local one, and ends when its key is shortened or deleted;
fake peers' counts cannot refuse a key, split a budget thousands of ways,
or slow a request down. Three real gateways (`test_replicas`' harness),
one real etcd on loopback, values written with the real `etcdctl`."""

import os
import subprocess
import time

from conftest import eventually
from test_replicas import ETCD_PORT, wait_up, world  # noqa: F401 (a fixture)

PREFIX = "/plano-test/"
YEAR_MS = 365 * 86_400_000
# The replicas' `max_retry_after_seconds` (the default): no block is longer.
CAP_MS = 300_000


def etcdctl(*args, stdin=None):
    env = dict(os.environ, ETCDCTL_API="3")
    result = subprocess.run(["etcdctl", f"--endpoints=http://127.0.0.1:{ETCD_PORT}", *args],
                            input=stdin, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def remaining_ms(replica, model):
    """How long `replica` holds `model` blocked (None: not blocked)."""
    import requests

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
