"""Pacing and the queue: a deployment's `rpm`/`tpm` are never exceeded, a
request finding no room goes to a deployment with room or waits (holding no
thread) until room comes, up to its deadline, and gets the gateway's 429
with a `Retry-After` that says when room returns. Real planoai, real Envoy,
loopback providers that enforce their limits as the providers do: past
them, a 429 with `Retry-After`."""

import json
import math
import re
import subprocess
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import requests

import pytest

from conftest import ADMIN, CHAT, GATEWAY, eventually, planoai, stats
from mock_provider import OK_BODY, Provider, Reply
from test_replicas import ETCD_PORT, Etcd, Replica, warm_up
from test_top import pane, tmux  # noqa: F401 (a fixture)

USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}


def _chunk(fields):
    return "data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", **fields}) + "\n\n"


# A chat stream with its usage event (the gateway asks for it).
STREAM = [
    _chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hello"}, "finish_reason": None}]}),
    _chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    _chunk({"choices": [], "usage": USAGE}),
    "data: [DONE]\n\n",
]


class Limiter:
    """A provider's limits as OpenAI and Anthropic keep them: a bucket of a
    minute's requests and tokens, refilling continuously (`rpm / 60` and
    `tpm / 60` a second), full at the start. A request takes one request
    and its estimate of tokens (the prompt's bytes / 4 plus `max_tokens`)
    when it comes; once its answer is sent, its `usage` replaces the
    estimate. Past them, the provider's 429 with `Retry-After`."""

    def __init__(self, rpm=None, tpm=None, delay=0.0, headers=None):
        self.rpm, self.tpm, self.delay = rpm, tpm, delay
        self.headers = headers or {}
        self.lock = threading.Lock()
        self.requests, self.tokens, self.at = float(rpm or 0), float(tpm or 0), time.time()
        self.answering = []  # [answered_at, estimate] not given back yet
        self.refused = 0

    def _refill(self, now):
        for a in [a for a in self.answering if a[0] <= now]:
            self.tokens += a[1] - USAGE["total_tokens"]
            self.answering.remove(a)
        dt = now - self.at
        self.at = now
        if self.rpm:
            self.requests = min(self.rpm, self.requests + dt * self.rpm / 60)
        if self.tpm:
            self.tokens = min(self.tpm, self.tokens + dt * self.tpm / 60)

    def __call__(self, record):
        body = json.loads(record["body"] or b"{}")
        estimate = math.ceil(len(record["body"]) / 4) + body.get("max_tokens", 1024)
        with self.lock:
            now = time.time()
            self._refill(now)
            short_requests = 1 - self.requests if self.rpm else 0
            short_tokens = estimate - self.tokens if self.tpm else 0
            if short_requests > 0 or short_tokens > 0:
                self.refused += 1
                wait = max(short_requests * 60 / (self.rpm or 1), short_tokens * 60 / (self.tpm or 1))
                return Reply(status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))},
                             body={"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})
            self.requests -= 1
            self.tokens -= estimate
            self.answering.append([now + self.delay, estimate])
        if body.get("stream"):
            return Reply(delay=self.delay, stream=STREAM)
        return Reply(delay=self.delay, headers=self.headers, body=dict(OK_BODY, usage=USAGE))


@pytest.fixture
def limited():
    """Providers answering as their `Limiter` says."""
    started = []

    def make(limiter):
        p = Provider(refuse=limiter)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def paced_config(providers_yaml, listener_extra=""):
    return f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
{listener_extra}
        model_providers:
{providers_yaml}
"""


def paced_model(provider, **fields):
    """`openai/gpt-4o` at `provider`, the default, with `fields` (its
    limits, a retry policy) added to the entry."""
    extra = "".join(f"\n            {k}: {v}" for k, v in fields.items())
    return f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: key-0001
            default: true{extra}
"""


def post(timeout=30, headers=None, **extra):
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(CHAT, json=body, headers=headers or {}, timeout=timeout)


def test_a_full_deployment_is_skipped_for_one_with_room(gateway, limited):
    # Equal weights, unequal minutes: a choice by weight alone would send
    # `a` half of the requests.
    a_limits, b_limits = Limiter(rpm=1), Limiter(rpm=5)
    a, b = limited(a_limits), limited(b_limits)
    gateway.up(paced_config(f"""
          - model: openai/gpt-4o
            access_key: key-0001
            default: true
            rpm: 5
            retry_policy: {{}}
            deployments:
              - {{ name: a, base_url: "http://127.0.0.1:{a.port}", rpm: 1 }}
              - {{ name: b, base_url: "http://127.0.0.1:{b.port}" }}
""", "            max_queue_ms: 3000"))
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: post(), range(6)))
    assert [r.status_code for r in answers] == [200] * 6, [r.text for r in answers]
    # Each deployment got its minute, and not one request more.
    assert (a.calls, b.calls) == (1, 5)
    assert a_limits.refused == b_limits.refused == 0
    # `planoai status` shows each minute against its limit.
    status = planoai("status").stdout
    assert "openai/gpt-4o[a]: 1/1 requests, 20 tokens this minute" in status, status
    assert "openai/gpt-4o[b]: 5/5 requests" in status, status


def test_room_refills_continuously_as_the_providers_bucket_does(gateway, limited):
    # 30 a minute: the gateway's bucket holds 29 (a minute's worth less two
    # seconds'), and gives one request back every 2 s, as the provider's
    # does. A sliding minute would have room again only when the burst's
    # second leaves it, a minute later.
    limits = Limiter(rpm=30)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, rpm=30), "            max_queue_ms: 10000"))
    now = {"x-plano-max-wait-ms": "0"}
    burst = 0
    while (r := post(headers=now)).status_code == 200:
        burst += 1
        assert burst <= 30, "more than the bucket holds"
    assert r.json()["error"]["type"] == "pacing", r.text
    # Room for one more comes with its refill, within about 3 s.
    wait_s = int(r.headers["retry-after-ms"]) / 1000
    assert wait_s <= 3.0, wait_s
    start = time.time()
    later = post(headers={"x-plano-max-wait-ms": "5000"})
    took = time.time() - start
    assert later.status_code == 200 and took < 3.5, (later.status_code, took)
    assert burst == 29 and p.calls == 30 and limits.refused == 0, (burst, p.calls, limits.refused)


def test_a_passed_deadline_gets_the_gateways_429_saying_when_room_returns(gateway, limited):
    limits = Limiter(rpm=2)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, rpm=2), "            max_queue_ms: 20000\n            max_queued: 1"))
    first = time.time()
    assert post().status_code == 200
    assert post().status_code == 200
    # The bucket (2 a minute) refills one request 30 s after the second
    # the two were sent in ends.
    room_at = math.floor(first) + 31

    # One request waits (for 1.5 s, as its header asks); with max_queued 1
    # the next is refused at once.
    def timed(**kwargs):
        start = time.time()
        return post(**kwargs), time.time() - start

    waiting = ThreadPoolExecutor(1).submit(timed, headers={"x-plano-max-wait-ms": "1500"})
    time.sleep(0.5)
    start = time.time()
    full = post(headers={"x-plano-max-wait-ms": "1500"})
    assert full.status_code == 429 and time.time() - start < 0.4, (full.status_code, full.text)
    assert "already wait" in full.json()["error"]["message"]

    late, waited = waiting.result()
    replied = time.time()
    # It waited as long as its header asked, not the listener's 20 s.
    assert 1.4 <= waited < 2.5, waited
    assert late.status_code == 429, late.text
    error = late.json()["error"]
    assert (error["type"], error["code"]) == ("pacing", "rate_limit_exceeded"), error
    wait_s = int(late.headers["retry-after-ms"]) / 1000
    assert abs(replied + wait_s - room_at) <= 1.0, (replied, wait_s, room_at)
    assert int(late.headers["retry-after"]) == math.ceil(wait_s)

    # Anthropic's Messages API gets its own shape of the same 429.
    messages = requests.post(f"{GATEWAY}/v1/messages", headers={"x-plano-max-wait-ms": "0"}, timeout=10, json={
        "model": "openai/gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    assert messages.status_code == 429, messages.text
    assert messages.json()["error"]["type"] == "rate_limit_error"
    assert abs(time.time() + int(messages.headers["retry-after-ms"]) / 1000 - room_at) <= 1.0
    assert p.calls == 2 and limits.refused == 0
    assert eventually(lambda: stats().get("wasmcustom.plano.queued") == 0)


def test_a_limit_the_provider_reports_tightens_the_configured_one(gateway, limited):
    # Configured at 5 a minute; the provider's headers say 2.
    limits = Limiter(rpm=2, headers={"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1"})
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, rpm=5)))
    assert post().status_code == 200
    assert post().status_code == 200
    third = post(headers={"x-plano-max-wait-ms": "0"})
    assert third.status_code == 429 and third.json()["error"]["type"] == "pacing", third.text
    assert p.calls == 2 and limits.refused == 0
    status = planoai("status").stdout
    assert "openai/gpt-4o: 2/2 requests (learned), 40 tokens this minute" in status, status


def test_a_queued_request_goes_when_room_comes_and_one_that_left_never(gateway, limited):
    # 1000 tokens a minute: a request asking for 900 fills it until its
    # answer says it took 20.
    limits = Limiter(tpm=1000, delay=2.0)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, tpm=1000)))
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, max_tokens=900)
        time.sleep(0.5)
        start = time.time()
        second = pool.submit(post, max_tokens=900)
        assert first.result().status_code == 200
        answered = time.time()
        assert second.result().status_code == 200, second.result().text
    # The second waited for the first's answer, and was sent as it came.
    second_sent = p.requests[1]["at"]
    assert second_sent - start > 1.0
    assert second_sent - answered < 0.6, second_sent - answered
    assert limits.refused == 0
    assert eventually(lambda: " queued " in gateway.log())

    # A client that leaves while queued is never sent.
    holder = ThreadPoolExecutor(1).submit(post, max_tokens=900)
    time.sleep(0.3)
    try:
        post(timeout=1.0, max_tokens=900)
        raise AssertionError("the queued request was answered")
    except requests.exceptions.ReadTimeout:
        pass
    assert holder.result().status_code == 200
    time.sleep(1.5)  # room came 1 s ago: a request still queued would be sent
    assert p.calls == 3
    assert stats().get("wasmcustom.plano.queued") == 0


def test_a_stream_waits_the_same_way_and_its_usage_makes_room(gateway, limited):
    limits = Limiter(tpm=1000, delay=1.5)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, tpm=1000, retry_policy="{}")))

    def stream():
        with post(stream=True, max_tokens=900) as resp:
            return resp.status_code, resp.content.decode()

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(stream)
        time.sleep(0.4)
        second = pool.submit(stream)
        time.sleep(0.4)
        third = pool.submit(post, max_tokens=900)
        for done in (first, second):
            status, text = done.result()
            assert status == 200 and '"hello"' in text and "[DONE]" in text, text
        assert third.result().status_code == 200, third.result().text
    # One at a time: each was sent once the one before had answered (its
    # usage, at the stream's end, gave back what it reserved).
    sent = [r["at"] for r in p.requests]
    assert len(sent) == 3 and sent[1] - sent[0] >= 1.4 and sent[2] - sent[1] >= 1.4, sent
    assert limits.refused == 0


def test_the_openai_and_anthropic_sdks_with_default_retries_see_no_error_at_twice_the_room(gateway, limited):
    # Room for 2 requests at once (2 x about 420 of 1000 tokens), 8 sent at
    # once: 4 by each SDK (Anthropic's through /v1/messages, translated).
    limits = Limiter(tpm=1000, delay=0.5)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, tpm=1000)))
    oa = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="unused")
    an = anthropic.Anthropic(base_url=GATEWAY, api_key="unused")
    messages = [{"role": "user", "content": "hi"}]

    def ask(i):
        if i % 2:
            answer = an.messages.create(model="openai/gpt-4o", max_tokens=400, messages=messages)
            return answer.content[0].text
        answer = oa.chat.completions.create(model="openai/gpt-4o", max_tokens=400, messages=messages)
        return answer.choices[0].message.content

    start = time.time()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    took = time.time() - start
    assert answers == ["hello"] * 8
    assert limits.refused == 0 and p.calls == 8
    # Two at a time, 0.5 s each: about 2 s, not the SDKs' backoffs.
    assert took < 6, took


def test_a_client_keys_own_deadline_replaces_the_listeners(gateway, limited):
    limits = Limiter(rpm=1)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, rpm=1), """            max_queue_ms: 20000
            client_keys:
              - { name: app, key: app-key-8a6e2f4b1c9d7e05 }
              - { name: interactive, key: int-key-3c5e7a9b1d2f4680, max_queue_ms: 800 }"""))
    app = {"Authorization": "Bearer app-key-8a6e2f4b1c9d7e05"}
    interactive = {"Authorization": "Bearer int-key-3c5e7a9b1d2f4680"}
    assert post(headers=app).status_code == 200
    start = time.time()
    refused = post(headers=interactive)
    took = time.time() - start
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "pacing", refused.text
    assert 0.7 <= took < 1.8, took
    assert p.calls == 1


def _closed_loop(headers, clients, until, max_tokens):
    """`clients` threads sending one request after another until `until`:
    each request's seconds from sent to answered, and its status."""
    out = []

    def run():
        while time.time() < until:
            start = time.time()
            r = post(timeout=40, headers=headers, max_tokens=max_tokens)
            out.append((time.time() - start, r.status_code))

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    return threads, out


def test_a_key_sending_ten_times_anothers_load_does_not_push_it_back(gateway, limited):
    # 24,000 tokens a minute, each request reserving about 1,920 until its
    # answer (1 s later) says it took 20: about 12 at a time. The heavy key
    # keeps 40 requests going, the light key 4: some 30 wait at any time.
    # In arrival order each would wait about 3 s; by fair share the light
    # key's requests go before the heavy key's and wait one answer at most.
    limits = Limiter(tpm=24000, delay=1.0)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, tpm=24000), """            max_queue_ms: 30000
            client_keys:
              - { name: batch, key: batch-key-5d1c8e3a7f2b9046 }
              - { name: agent, key: agent-key-9e4b2c7d1a5f8360 }"""))
    until = time.time() + 15
    heavy, heavy_out = _closed_loop({"Authorization": "Bearer batch-key-5d1c8e3a7f2b9046"}, 40, until, 1900)
    light, light_out = _closed_loop({"Authorization": "Bearer agent-key-9e4b2c7d1a5f8360"}, 4, until, 1900)
    for t in heavy + light:
        t.join()
    assert all(s == 200 for _, s in heavy_out + light_out), [s for _, s in heavy_out + light_out if s != 200]
    assert limits.refused == 0
    # A request's wait: its time less the provider's second.
    def p99(out):
        waits = sorted(max(0.0, took - 1.0) for took, _ in out)
        return waits[min(len(waits) - 1, math.ceil(len(waits) * 0.99) - 1)]
    light_p99, heavy_p99 = p99(light_out), p99(heavy_out)
    print(f"light key: {len(light_out)} requests, p99 wait {light_p99:.2f} s; "
          f"heavy key: {len(heavy_out)} requests, p99 wait {heavy_p99:.2f} s")
    assert len(light_out) >= 30, len(light_out)
    assert light_p99 < 2.0, (light_p99, heavy_p99)
    # The heavy key waited: the test did load the queue.
    assert heavy_p99 > 2.0, heavy_p99


def test_a_higher_priority_waiter_gets_the_room_before_one_that_came_first(gateway, limited):
    # Room for one request at a time (1,000 tokens, each asking 900 until
    # its answer says 20). A low-priority request waits, then a
    # high-priority one: when room comes, the high one goes first.
    limits = Limiter(tpm=1000, delay=1.5)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, tpm=1000), """            max_queue_ms: 20000
            client_keys:
              - { name: batch, key: batch-key-5d1c8e3a7f2b9046 }
              - { name: agent, key: agent-key-9e4b2c7d1a5f8360, priority: 10 }"""))
    batch = {"Authorization": "Bearer batch-key-5d1c8e3a7f2b9046"}
    agent = {"Authorization": "Bearer agent-key-9e4b2c7d1a5f8360"}
    with ThreadPoolExecutor(3) as pool:
        holder = pool.submit(post, headers=batch, max_tokens=900)
        time.sleep(0.3)
        low = pool.submit(post, headers=batch, max_tokens=900)
        time.sleep(0.5)
        high = pool.submit(post, headers=agent, max_tokens=900)
        assert [f.result().status_code for f in (holder, low, high)] == [200] * 3
    # The provider saw the holder, then the high one, then the low one.
    order = [r["at"] for r in p.requests]
    assert len(order) == 3 and limits.refused == 0
    high_done, low_done = high.result().elapsed.total_seconds(), low.result().elapsed.total_seconds()
    # The high one came 0.5 s later and was sent first: answered within
    # about two answers of its arrival; the low one waited for three.
    assert high_done < 3.6, high_done
    assert low_done > 4.0, low_done


def test_status_top_and_metrics_show_each_minute_and_the_queues_oldest_wait(gateway, limited, tmux):
    # 1,000 tokens a minute: the first request (900 asked) fills it for the
    # 4 s its answer takes, and the second waits for it.
    limits = Limiter(tpm=1000, delay=4.0)
    p = limited(limits)
    gateway.up(paced_config(paced_model(p, rpm=50, tpm=1000)))
    base, session = tmux
    subprocess.run(base + ["new-session", "-d", "-s", session, "-x", "160", "-y", "40", "planoai top"], check=True)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, max_tokens=900)
        time.sleep(0.5)
        second = pool.submit(post, max_tokens=900)
        time.sleep(1.5)
        status = planoai("status").stdout
        assert re.search(r"queue: +1 waiting, the oldest for 1\.\d s", status), status
        assert re.search(r"openai/gpt-4o: 1/50 requests, 9\d\d/1000 tokens this minute", status), status
        # The gauge of the oldest wait, and the minute's, for the dashboard.
        prom = requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text
        oldest = int(re.search(r"^plano_queue_oldest_wait_ms(?:{[^}]*})? (\d+)", prom, re.M).group(1))
        assert 1000 <= oldest < 3000, oldest
        assert re.search(r'^plano_pace_minute_requests{[^}]*model="openai/gpt-4o"[^}]*} 1$', prom, re.M), prom
        assert re.search(r'^plano_pace_tokens_per_minute{[^}]*} 1000$', prom, re.M), prom
        # `planoai top` shows the same within its refresh.
        seen = ""
        deadline = time.time() + 2.5
        while time.time() < deadline:
            seen = pane(base, session)
            if re.search(r"queue: 1 waiting, the oldest for [1-3]\.\d s", seen):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"top shows no queue:\n{seen}")
        assert re.search(r"openai/gpt-4o: 1/50 requests, 9\d\d/1000 tokens this minute", seen), seen
        assert first.result().status_code == 200 and second.result().status_code == 200
    status = planoai("status").stdout
    assert "queue:   none waiting" in status, status
    assert "openai/gpt-4o: 2/50 requests, 40/1000 tokens this minute" in status, status
    assert eventually(lambda: re.search(r"^plano_queue_oldest_wait_ms(?:{[^}]*})? 0$",
                                        requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text, re.M))
    # Piped, top prints the same lines once.
    snapshot = planoai("top").stdout
    assert "paced: openai/gpt-4o: 2/50 requests, 40/1000 tokens this minute" in snapshot, snapshot
    assert "paced: queue: none waiting" in snapshot, snapshot


def replica_config(port, provider, warm):
    return textwrap.dedent(f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: {port}
            max_queue_ms: 0
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: k-ok
            default: true
            rpm: 6
          - model: openai/warm
            base_url: http://127.0.0.1:{warm.port}
            access_key: k-ok
        shared_state:
          etcd_endpoints: [http://127.0.0.1:{ETCD_PORT}]
          key_prefix: /plano-pacing/
        """)


def test_one_deployments_minute_is_one_minute_across_replicas(limited):
    limits = Limiter(rpm=6)
    provider, warm = limited(limits), Provider()
    with tempfile.TemporaryDirectory(prefix="plano-pacing-replicas-") as workdir:
        data = tempfile.mkdtemp(prefix="plano-etcd-", dir=workdir)
        etcd = Etcd(data)
        etcd.start()
        replicas = []
        try:
            for n, name in enumerate("AB"):
                r = Replica(name, n, workdir, warm, warm, True)
                with open(r.config, "w") as f:
                    f.write(replica_config(r.port, provider, warm))
                replicas.append(r.start())
            a, b = replicas
            assert eventually(lambda: a.stat("peers") == 1 and b.stat("peers") == 1, 10)

            def send(r, model="openai/gpt-4o"):
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                return requests.post(f"http://127.0.0.1:{r.port}/v1/chat/completions", json=body, timeout=10)

            warm_up(replicas, lambda r: send(r, "openai/warm"), 4)  # an open defect: see warm_up
            at_a = [send(a).status_code for _ in range(4)]
            time.sleep(2.5)  # A's counts reach B (published about once a second)
            at_b = [send(b) for _ in range(4)]
            at_b = [(r.status_code, r.json().get("error", {}).get("type")) for r in at_b]
        finally:
            for r in replicas:
                r.stop()
            warm.stop()
            etcd.kill()
    # 6 a minute across both: B had room for the 2 A left.
    assert at_a == [200] * 4, at_a
    assert at_b == [(200, None), (200, None), (429, "pacing"), (429, "pacing")], at_b
    assert provider.calls == 6 and limits.refused == 0
