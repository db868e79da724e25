"""Many gateways, one memory (issue 28): three real Envoys rendered by the
real `planoai`, one real etcd started here on loopback, mock providers that
record who called them. Envoy's admin and status ports are fixed in
`planoai` (9901, 9902), so the three replicas are rendered with `planoai
render` and started as `planoai up` starts Envoy, each with those two ports
moved; `planoai up` itself is covered by the status test at the end."""

import json
import os
import re
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from concurrent import futures
from http.server import BaseHTTPRequestHandler

import pytest
import grpc
import requests

from conftest import eventually, planoai
from mock_provider import MockServer

ETCD_PORT = 22379
PEER_PORT = 22380
BLOCK_SECONDS = 2
# Models whose block must outlast a gateway's restart or etcd's.
LONG_BLOCKS = {"m0": 10, "m2": 10}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free_within(port, seconds):
    """Whether nothing listens on 127.0.0.1:`port` within `seconds`: a bind
    without SO_REUSEPORT fails while any socket listens there (SO_REUSEADDR
    lets it pass the closed connections still in TIME_WAIT)."""
    deadline = time.time() + seconds
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.time() >= deadline:
                    return False
        time.sleep(0.1)


class Limited:
    """A provider on loopback that records every call (when, from whose
    client, for which model) and answers 429 with `Retry-After` when
    `limit(body)` says so, 200 otherwise."""

    def __init__(self, limit):
        self.calls = []
        self.limit = limit
        self.lock = threading.Lock()
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                limited = me.limit(body)
                with me.lock:
                    me.calls.append({"at": time.time(), "user": body.get("user"), "model": body.get("model"), "limited": limited})
                if limited:
                    out, status, extra = b'{"error": {"message": "rate limited"}}', 429, {"Retry-After": str(LONG_BLOCKS.get(body.get("model"), BLOCK_SECONDS))}
                else:
                    out = json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()
                    status, extra = 200, {}
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = MockServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def since(self, t, **match):
        with self.lock:
            return [c for c in self.calls if c["at"] >= t and all(c[k] == v for k, v in match.items())]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Etcd:
    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.proc = None

    def start(self):
        url = f"http://127.0.0.1:{ETCD_PORT}"
        self.proc = subprocess.Popen(
            ["etcd", "--data-dir", self.data_dir, "--listen-client-urls", url, "--advertise-client-urls", url,
             "--listen-peer-urls", f"http://127.0.0.1:{PEER_PORT}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{PEER_PORT}",
             "--initial-cluster", f"default=http://127.0.0.1:{PEER_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                if requests.get(url + "/health", timeout=1).json().get("health") == "true":
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        raise AssertionError("etcd did not become healthy")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def etcdctl(*args, stdin=None):
    env = dict(os.environ, ETCDCTL_API="3")
    result = subprocess.run(["etcdctl", f"--endpoints=http://127.0.0.1:{ETCD_PORT}", *args],
                            input=stdin, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def envoy_binary():
    found = os.environ.get("PLANO_ENVOY") or shutil.which("envoy") or os.path.join(sys.prefix, "bin", "envoy")
    assert os.path.exists(found), "no Envoy: run `make setup`"
    return found


class Replica:
    """One gateway: its config rendered by `planoai render`, run by Envoy as
    `planoai up` runs it (2 workers, no hot restart), with the admin and
    status ports moved so that three fit on one host."""

    def __init__(self, name, n, workdir, limited, ok, shared, shared_extra="", etcd_port=ETCD_PORT):
        self.name, self.n = name, n
        self.port, self.admin, self.status = 12000 + n, 9911 + 10 * n, 9912 + 10 * n
        self.dir = os.path.join(workdir, f"{name}{n}")
        os.makedirs(self.dir, exist_ok=True)
        models = "\n".join(
            f"""
              - model: openai/{m}
                base_url: http://127.0.0.1:{limited.port}
                access_key: k-limited
                timeout_ms: 2000
                retry_policy:
                  fallback_models: [anthropic/claude]
                  retry_after_handling: {{ scope: model, apply_to: global }}""" for m in MODELS)
        extra = "".join(f"\n              {line}" for line in shared_extra.splitlines())
        shared_state = f"""
            shared_state:
              etcd_endpoints: [http://127.0.0.1:{etcd_port}]
              key_prefix: /plano-test/{extra}
            """ if shared else ""
        config = textwrap.dedent(f"""
            version: v0.3.0
            listeners:
              - {{ type: model, name: model_listener, port: {self.port} }}
            model_providers:{models}
              - model: anthropic/claude
                base_url: http://127.0.0.1:{ok.port}
                access_key: k-ok
                timeout_ms: 2000
            """) + textwrap.dedent(shared_state)
        self.config = os.path.join(self.dir, "gateway.yaml")
        with open(self.config, "w") as f:
            f.write(config)
        self.proc = None

    def start(self):
        # Envoy binds with SO_REUSEPORT: beside an Envoy still on the port
        # (an earlier test's, shutting down) it would start and share the
        # port's connections with it. Wait for the port to be free instead.
        for port in (self.port, self.admin, self.status):
            assert port_free_within(port, 15), f"port {port} is still taken: gateway {self.name} cannot start alone"
        out = os.path.join(self.dir, "run")
        planoai("render", self.config, "-o", out)
        for name, old, new in [("envoy.yaml", "9901", self.admin), ("lds.yaml", "9902", self.status)]:
            path = os.path.join(out, name)
            with open(path) as f:
                text = f.read()
            with open(path, "w") as f:
                f.write(re.sub(rf"\b{old}\b", str(new), text))
        self.log = open(os.path.join(self.dir, "envoy.log"), "ab")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", os.path.join(out, "envoy.yaml"), "--concurrency", "2", "--disable-hot-restart",
             "--log-level", "warn", "--component-log-level", "wasm:info", "--file-flush-interval-msec", "200"],
            stdout=self.log, stderr=self.log)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"gateway {self.name} did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, chars=4000):
        """The end of this gateway's Envoy log, for a failure's message."""
        with open(os.path.join(self.dir, "envoy.log"), errors="replace") as f:
            return f"--- {self.name}'s Envoy log ---\n" + f.read()[-chars:]

    def chat(self, model, user, session=requests, timeout=10):
        body = {"model": f"openai/{model}", "messages": [{"role": "user", "content": "hi"}], "user": user}
        return session.post(f"http://127.0.0.1:{self.port}/v1/chat/completions", json=body, timeout=timeout)

    def stat(self, name):
        text = requests.get(f"http://127.0.0.1:{self.admin}/stats?filter=wasmcustom.plano.shared_state.{name}$", timeout=5).text
        return int(text.split(":")[1]) if ":" in text else None

    def blocked(self, model, session=requests):
        report = session.get(f"http://127.0.0.1:{self.status}/plano/blocks", timeout=2).json()
        return any(b["blocked"] == f"model openai/{model}" for b in report["blocks"])


def warm_up(replicas, send, each):
    """Each gateway serves `each` requests (`send(replica)`) before a test
    counts calls. An OPEN DEFECT, not a fix: one of a just-started replica's
    first requests got the gateway's 502 `connect_failure` (Envoy saw the
    provider's connection end before headers) in full e2e runs, never when a
    test runs alone, and the cause is not found (see the replicas guide).
    Such an answer is a warning in the run's summary with what finds the
    cause: the answer, the gateway's Envoy log (its access log lines carry
    Envoy's response flags) and the loopback sockets at that moment. Every
    gateway must still serve."""
    for r in replicas:
        answers = [send(r) for _ in range(each)]
        bad = [(a.status_code, a.text[:300]) for a in answers if a.status_code != 200]
        if bad:
            sockets = subprocess.run(["ss", "-tanoi"], capture_output=True, text=True).stdout
            # The access log is flushed every 200 ms: a refused or failed
            # provider connection has its own line there; a connection
            # Envoy closed itself (the framing listener's) has none.
            time.sleep(1)
            log = r.log_tail(8000)
            seen = "with" if "provider connection failed" in log else "WITHOUT"
            warnings.warn(f"warm-up at {r.name}: {bad}, {seen} a `provider connection failed` line\n{log}"
                          f"\n--- sockets ---\n{sockets[-8000:]}")
        assert len(bad) < each, (r.name, bad)


MODELS = [f"m{i}" for i in range(8)]


@pytest.fixture
def world():
    with tempfile.TemporaryDirectory(prefix="plano-replicas-") as workdir:
        # etcd on tmpfs where there is one: on this machine's disk each
        # write's fsync alone takes 5-25 ms (README, Replicas).
        data = tempfile.mkdtemp(prefix="plano-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else workdir)
        etcd = Etcd(data)
        etcd.start()
        # Limited when the client says so (`user: trigger`), or always for `m7`.
        limited = Limited(lambda body: body.get("user") == "trigger" or body.get("model") == "m7")
        ok = Limited(lambda body: False)
        replicas = []

        def make(shared=True, shared_extra=""):
            made = [Replica(n, i + (0 if shared else 3), workdir, limited, ok, shared, shared_extra) for i, n in enumerate("ABC")]
            replicas.extend(made)
            return [r.start() for r in made]

        yield make, limited, etcd
        for r in replicas:
            r.stop()
        limited.stop()
        ok.stop()
        etcd.kill()
        shutil.rmtree(data, ignore_errors=True)


def wait_up(replicas, seconds=10):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if all(r.stat("up") == 1 for r in replicas):
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"etcd not up on every replica: {[r.stat('up') for r in replicas]}")


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def test_a_block_learned_by_one_replica_holds_on_the_others_within_a_round_trip(world):
    make, limited, _ = world
    a, b, c = make()
    wait_up([a, b, c])
    learn_ms = []
    late_calls = []
    lags = []
    for model in MODELS[:6]:
        stop = threading.Event()
        seen = {}

        def drive(replica):
            session = requests.Session()
            while not stop.is_set():
                resp = replica.chat(model, replica.name, session)
                assert resp.status_code == 200, resp.text
                time.sleep(0.005)

        def watch(replica):
            # The replica's own blocks, every 1 ms: when it learned the block.
            session = requests.Session()
            while not stop.is_set() and replica.name not in seen:
                if replica.blocked(model, session):
                    seen[replica.name] = time.time()
                time.sleep(0.001)

        threads = [threading.Thread(target=f, args=(r,)) for r in (b, c) for f in (drive, watch)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        resp = a.chat(model, "trigger")
        answered = time.time()
        assert resp.status_code == 200 and resp.headers["x-plano-model"] == "anthropic/claude"
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        (the_429,) = limited.since(0, model=model, user="trigger")
        lags.append([r.stat("sync_lag_ms") for r in (b, c)])
        for name in "BC":
            assert name in seen, f"{name} never learned the block on {model}"
            learn_ms.append((seen[name] - the_429["at"]) * 1000)
            late_calls += limited.since(answered, model=model, user=name)
    print(f"\ntime to learn a block on another replica, ms: p50 {percentile(learn_ms, 0.5):.1f} p99 {percentile(learn_ms, 0.99):.1f} (n={len(learn_ms)}); etcd's own sync lag (write to watch event) ms: {lags}")
    assert late_calls == [], f"calls after A's answer: {late_calls}"
    assert percentile(learn_ms, 0.5) < 100


def count_limited_calls(replicas, limited, seconds):
    """Drives every replica at the always-limited model m7 every 20 ms for
    `seconds`; returns the calls m7's provider got after the first block
    period began, and when that was."""
    stop = threading.Event()
    errors = []

    def drive(replica):
        session = requests.Session()
        while not stop.is_set():
            # A request that raises must fail the test, not end this
            # replica's thread quietly (its calls would just be missing).
            try:
                resp = replica.chat("m7", replica.name, session)
                if resp.status_code != 200:
                    errors.append((replica.name, resp.status_code))
            except requests.RequestException as e:
                errors.append((replica.name, repr(e)))
            time.sleep(0.02)

    threads = [threading.Thread(target=drive, args=(r,)) for r in replicas]
    start = time.time()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    assert errors == [], errors
    calls = limited.since(start, model="m7")
    # Every replica must have been driven to its limited model at least once.
    assert {c["user"] for c in calls} == {r.name for r in replicas}, calls
    # The first calls race each other (nothing is blocked yet): count from
    # the first block's start on.
    first = calls[0]["at"]
    return [c for c in calls if c["at"] > first + 0.5], first


def test_three_sharing_replicas_call_a_limited_provider_about_once_a_block_with_one_probe(world):
    make, limited, _ = world
    shared = make(shared=True)
    wait_up(shared)
    calls, first = count_limited_calls(shared, limited, 7)
    periods = int((calls[-1]["at"] - first) // BLOCK_SECONDS) if calls else 0
    for r in shared:
        r.stop()
    alone = make(shared=False)
    alone_calls, alone_first = count_limited_calls(alone, limited, 7)
    print(f"\ncalls to a limited provider in 7 s (block {BLOCK_SECONDS} s), after the first block: 3 sharing {len(calls)}, 3 alone {len(alone_calls)}")
    # One probe per block end across the three: the calls are a block apart.
    gaps = [b["at"] - a["at"] for a, b in zip(calls, calls[1:])]
    assert all(g > BLOCK_SECONDS * 0.8 for g in gaps), f"more than one probe at a block's end: gaps {gaps}"
    assert 2 <= len(calls) <= periods + 1
    assert len(alone_calls) >= 2.5 * len(calls), (len(alone_calls), len(calls))


def test_a_block_shortened_in_etcd_gets_one_probe_at_its_new_end(world):
    """A later write with an earlier end (an operator shortening a block; a
    replica slow to hear its 429) still gets exactly one probe across the
    replicas, at the new end: the claim names the write, not the end."""
    make, limited, _ = world
    replicas = make()
    wait_up(replicas)
    key = "/plano-test/plano.block.model.openai/m7"
    now = int(time.time() * 1000)
    etcdctl("put", key, f"{now + 30_000},{now}")
    assert eventually(lambda: all(r.blocked("m7") for r in replicas), 3)
    end = time.time() + 1.5
    etcdctl("put", key, f"{int(end * 1000)},{now}")
    stop = threading.Event()
    errors = []

    def drive(replica):
        session = requests.Session()
        while not stop.is_set():
            resp = replica.chat("m7", replica.name, session)
            if resp.status_code != 200:
                errors.append((replica.name, resp.status_code))
            time.sleep(0.02)

    threads = [threading.Thread(target=drive, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    # The probe's 429 blocks m7 for BLOCK_SECONDS more: a window shorter
    # than that and than the probe lease (2 s) sees the one probe only.
    time.sleep(end + 1.5 - time.time())
    stop.set()
    for t in threads:
        t.join()
    assert errors == [], errors
    calls = limited.since(end - 1.5, model="m7")
    assert len(calls) == 1, f"probes at the shortened end: {[(c['user'], round(c['at'] - end, 3)) for c in calls]}"
    assert calls[0]["at"] >= end - 0.05, "probed before the block's end"


def test_a_restarted_replica_skips_a_model_still_blocked(world):
    make, limited, _ = world
    a, b, c = make()
    wait_up([a, b, c])
    b.stop()
    assert a.chat("m0", "trigger").headers["x-plano-model"] == "anthropic/claude"
    # In etcd before B starts: C has it through its watch (A's Put goes
    # out on A's next tick; CI once restarted B before it had).
    assert eventually(lambda: c.blocked("m0"), 5)
    b.start()
    wait_up([b])
    resp = b.chat("m0", "B")
    assert resp.status_code == 200
    assert resp.headers["x-plano-model"] == "anthropic/claude" and resp.headers["x-plano-attempts"] == "1", (
        dict(resp.headers), b.blocked("m0"), b.stat("blocks_learned"), b.log_tail())
    assert limited.since(0, model="m0", user="B") == []


def test_etcd_killed_under_load_costs_no_request_and_resyncs(world):
    make, limited, etcd = world
    a, b, c = make()
    wait_up([a, b, c])
    latencies = {"up": [], "down": []}
    slowest = []
    errors = []
    phase = ["up"]
    stop = threading.Event()

    def drive(replica):
        session = requests.Session()
        while not stop.is_set():
            t = time.time()
            try:
                resp = replica.chat("m1", replica.name, session)
                if resp.status_code != 200:
                    errors.append(resp.status_code)
            except requests.RequestException as e:
                errors.append(repr(e))
            latencies[phase[0]].append((time.time() - t) * 1000)
            slowest.append(((time.time() - t) * 1000, t, replica.name))
            time.sleep(0.01)

    threads = [threading.Thread(target=drive, args=(r,)) for r in (a, b, c)]
    for t in threads:
        t.start()
    time.sleep(3)
    phase[0] = "down"
    etcd.kill()
    killed = time.time()
    time.sleep(3)
    # With etcd down, a block is still learned locally: A skips m2 after its 429.
    assert a.chat("m2", "trigger").headers["x-plano-model"] == "anthropic/claude"
    assert a.chat("m2", "A").headers["x-plano-attempts"] == "1"
    stop.set()
    for t in threads:
        t.join()
    assert all(r.stat("up") == 0 for r in (a, b, c)), "etcd's loss was not noticed"
    p99 = {k: percentile(v, 0.99) for k, v in latencies.items()}
    print(f"\nclient p99 ms: etcd up {p99['up']:.1f}, etcd killed {p99['down']:.1f}; requests {len(latencies['up'])} / {len(latencies['down'])}; errors {len(errors)}")
    print("slowest:", [(round(ms), round(t - killed, 2), name) for ms, t, name in sorted(slowest)[-5:]])
    assert errors == []
    # A request that waited on etcd would wait out a 1 s call timeout or
    # the 2 s watchdog; the rest is this shared machine's noise.
    assert p99["down"] < 2 * p99["up"] + 250
    # etcd back: every replica resyncs, and the block A queued meanwhile
    # reaches the others while it is still on.
    etcd.start()
    back = time.time()
    resynced = wait_up([a, b, c], seconds=15)
    print(f"resync after etcd came back: {(resynced - back) * 1000:.0f} ms (killed {back - killed:.1f} s before)")
    assert resynced - back < 4
    # Up is each one's own link; A's queued Put then goes out on its next
    # tick and reaches the others by their watches: a tick and a round trip.
    assert eventually(lambda: b.blocked("m2") and c.blocked("m2"), 2)
    print(f"the queued block reached B and C within {(time.time() - resynced) * 1000:.0f} ms of all being up")
    assert all(r.stat("resyncs") >= 1 for r in (a, b, c))


def test_status_reports_etcd_up_and_down(world, gateway):
    make, limited, etcd = world
    gateway.up(f"""
        version: v0.3.0
        listeners:
          - {{ type: model, name: model_listener, port: 12000 }}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{limited.port}
            access_key: k
        shared_state:
          etcd_endpoints: [http://127.0.0.1:{ETCD_PORT}]
        """)
    deadline = time.time() + 10
    while "shared:  etcd up" not in planoai("status").stdout and time.time() < deadline:
        time.sleep(0.1)
    assert "shared:  etcd up" in planoai("status").stdout
    etcd.kill()
    deadline = time.time() + 10
    while "etcd down" not in planoai("status").stdout and time.time() < deadline:
        time.sleep(0.1)
    assert "shared:  etcd down: blocks and budgets are local only" in planoai("status").stdout


def test_writes_past_max_queued_writes_while_etcd_is_away_are_dropped_counted_and_never_written(world):
    make, limited, etcd = world
    a, b, c = make(shared_extra="max_queued_writes: 1")
    wait_up([a, b, c])
    etcd.kill()
    assert eventually(lambda: a.stat("up") == 0, 5), "etcd's loss was not noticed"
    # Both blocks last 10 s: neither write ends while queued, so only the
    # queue's bound can drop one, and it drops the older, m0's.
    learned = time.time()
    for model in ("m0", "m2"):
        assert a.chat(model, "trigger").headers["x-plano-model"] == "anthropic/claude"
    assert eventually(lambda: a.stat("writes_dropped") == 1, 2), a.stat("writes_dropped")
    print(f"\nwrites_dropped counted {(time.time() - learned) * 1000:.0f} ms after the second block")
    writes = a.stat("writes")
    etcd.start()
    back = time.time()
    wait_up([a, b, c], seconds=10)
    # The kept write reaches the others; the dropped one never does,
    # though its block is still on at A.
    assert eventually(lambda: b.blocked("m2") and c.blocked("m2"), 3), (b.blocked("m2"), c.blocked("m2"))
    print(f"the kept write reached B and C {(time.time() - back) * 1000:.0f} ms after etcd was back")
    assert a.stat("writes") == writes + 1
    assert a.blocked("m0") and not b.blocked("m0") and not c.blocked("m0")
    assert a.stat("writes_dropped") == 1


class EtcdProxy:
    """etcd's gRPC API passed through unchanged (as bytes) on a port of its
    own, each call recorded. `before_next_watch`, when set, runs once before
    the next watch is forwarded: the test writes to etcd and compacts it
    there, past the revision that watch starts from, as when etcd compacts
    during a holder's load."""

    WATCH = "/etcdserverpb.Watch/Watch"

    def __init__(self):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{ETCD_PORT}")
        self.calls = []
        self.before_next_watch = None
        me = self

        class Pass(grpc.GenericRpcHandler):
            def service(self, details):
                method = details.method
                if method == me.WATCH:
                    return grpc.stream_stream_rpc_method_handler(me.watch)
                return grpc.unary_unary_rpc_method_handler(lambda request, context: me.unary(method, request, context))

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[Pass()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def record(self, method, message):
        # A heartbeat is a Range of one key named so; a load is the prefix's.
        self.calls.append((time.time(), method.rsplit("/", 1)[1], b"heartbeat" in message))

    def loads(self):
        return [t for t, method, heartbeat in self.calls if method == "Range" and not heartbeat]

    def watches(self):
        return [t for t, method, _ in self.calls if method == "Watch"]

    def unary(self, method, request, context):
        self.record(method, request)
        try:
            return self.channel.unary_unary(method)(request, timeout=5)
        except grpc.RpcError as e:
            context.abort(e.code(), e.details() or "")

    def watch(self, messages, context):
        def forward():
            for message in messages:
                self.record(self.WATCH, message)
                run, self.before_next_watch = self.before_next_watch, None
                if run:
                    run()
                yield message

        call = self.channel.stream_stream(self.WATCH)(forward())
        context.add_callback(call.cancel)
        try:
            yield from call
        except grpc.RpcError:
            pass

    def stop(self):
        self.server.stop(0)
        self.channel.close()


def test_a_watch_started_on_a_compacted_revision_loads_again_and_learns_what_it_missed(world, tmp_path):
    _, limited, _ = world

    def write_blocks_and_compact():
        now = int(time.time() * 1000)
        # Between the holder's load and its watch: two blocks written, and
        # etcd compacted to the second, past the revision the watch starts
        # from (the load's plus one). Only a new load can learn them.
        for model in ("m0", "m2"):
            etcdctl("put", f"/plano-test/plano.block.model.openai/{model}", f"{now + 30_000},{now}")
        revision = json.loads(etcdctl("get", "/plano-test/", "-w", "json"))["header"]["revision"]
        etcdctl("compact", str(revision))
        compacted.append(time.time())

    compacted = []
    proxy = EtcdProxy()
    proxy.before_next_watch = write_blocks_and_compact
    a = Replica("A", 0, str(tmp_path), limited, limited, True, etcd_port=proxy.port)
    try:
        a.start()
        assert eventually(lambda: a.stat("up") == 1 and a.blocked("m0") and a.blocked("m2"), 5), (
            proxy.calls, a.stat("up"), a.log_tail())
        loads, watches = proxy.loads(), proxy.watches()
        # Load, compacted watch, load again, watch.
        assert len(loads) == 2 and len(watches) == 2 and loads[0] < watches[0] < loads[1] < watches[1], proxy.calls
        assert a.stat("resyncs") == 1
        print(f"\nthe holder loaded again {(loads[1] - compacted[0]) * 1000:.0f} ms after etcd compacted past its watch")
        # The blocks seen after: the missed one is skipped by requests, and
        # the new watch carries what is written next.
        resp = a.chat("m0", "A")
        assert resp.headers["x-plano-model"] == "anthropic/claude" and resp.headers["x-plano-attempts"] == "1"
        assert limited.since(0, model="m0") == []
        now = int(time.time() * 1000)
        etcdctl("put", "/plano-test/plano.block.model.openai/m1", f"{now + 30_000},{now}")
        assert eventually(lambda: a.blocked("m1"), 2)
    finally:
        a.stop()
        proxy.stop()
