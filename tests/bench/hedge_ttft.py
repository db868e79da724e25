"""Time to first token with and without `hedge`, on mocks whose first-token
time has a long tail (`make bench-hedge`). Both providers draw each answer's
first-token time: FAST_S with probability 1 - TAIL, else SLOW_S. Runs the real
gateway (`planoai up`) on loopback, ROUNDS interleaved rounds per mode, and
prints p50, p90, p99 and the share of requests hedged. HEDGE_CHUNKS chunks
HEDGE_GAP_MS apart follow the first token: a hedge's answer arrives whole,
so its first token comes with its last. Bounded: at most 2 x ROUNDS x
REQUESTS requests, each under SLOW_S + 5 s."""

import os
import random
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "e2e"))
from mock_provider import Provider, Reply  # noqa: E402

FAST_S, SLOW_S, TAIL = 0.05, 2.0, 0.05
AFTER_MS = 300
REQUESTS = int(os.environ.get("HEDGE_REQUESTS", "200"))
ROUNDS = int(os.environ.get("HEDGE_ROUNDS", "2"))
CHUNKS = int(os.environ.get("HEDGE_CHUNKS", "3"))
GAP_S = float(os.environ.get("HEDGE_GAP_MS", "5")) / 1000
CONCURRENCY = 4
CHAT = "http://127.0.0.1:12000/v1/chat/completions"
ADMIN = "http://127.0.0.1:9901"


def long_tail(seed):
    rng = random.Random(seed)
    lock = threading.Lock()

    def draw():
        with lock:
            return SLOW_S if rng.random() < TAIL else FAST_S

    return draw


def chunk(text):
    return 'data: {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "%s"}, "finish_reason": null}]}\n\n' % text


def stream(seed):
    return Reply(stream=[chunk(f"t{i}") for i in range(CHUNKS)] + ["data: [DONE]\n\n"], gap=GAP_S, lead=long_tail(seed))


def config(primary, fallback, hedge):
    line = f"      hedge: {{after_ms: {AFTER_MS}}}" if hedge else ""
    return textwrap.dedent(f"""\
    version: v0.3.0
    listeners:
      - type: model
        name: model_listener
        port: 12000
    logging: {{first_attempt_success: false}}
    model_providers:
      - model: openai/gpt-4o
        base_url: http://127.0.0.1:{primary.port}
        access_key: key-primary
        default: true
        retry_policy:
          fallback_models: [openai/gpt-4o-mini]
    {line}
      - model: openai/gpt-4o-mini
        base_url: http://127.0.0.1:{fallback.port}
        access_key: key-fallback
    """)


def first_token_s():
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    start = time.time()
    with requests.post(CHAT, json=body, stream=True, timeout=SLOW_S + 5) as resp:
        for line in resp.iter_lines():
            if b'"content"' in line:
                return time.time() - start
    raise AssertionError("no token")


def hedges():
    text = requests.get(f"{ADMIN}/stats?filter=wasmcustom.plano.retries.hedge", timeout=5).text
    return sum(int(v) for line in text.splitlines() for v in [line.split(":")[1]] if v.strip().isdigit())


def run(home, hedge, seed):
    primary, fallback = Provider(stream(seed)), Provider(stream(seed + 1))
    path = os.path.join(home, "bench.yaml")
    with open(path, "w") as f:
        f.write(config(primary, fallback, hedge))
    subprocess.run(["planoai", "up", path], check=True, capture_output=True, timeout=120)
    try:
        before = hedges()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            times = list(pool.map(lambda _: first_token_s(), range(REQUESTS)))
        return times, hedges() - before
    finally:
        subprocess.run(["planoai", "down"], capture_output=True, timeout=60)
        primary.stop()
        fallback.stop()


def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main():
    results = {False: [], True: []}
    sent = {False: 0, True: 0}
    with tempfile.TemporaryDirectory(prefix="plano-hedge-") as home:
        os.environ["PLANO_HOME"] = home
        for r in range(ROUNDS):
            for hedge in (False, True):
                times, hedged = run(home, hedge, seed=1000 * r)
                results[hedge] += times
                sent[hedge] += hedged
    print(f"first token: {1 - TAIL:.0%} at {FAST_S * 1000:.0f} ms, {TAIL:.0%} at {SLOW_S * 1000:.0f} ms, "
          f"then {CHUNKS} chunks {GAP_S * 1000:.0f} ms apart; "
          f"{ROUNDS} x {REQUESTS} requests per mode, {CONCURRENCY} at a time")
    for hedge in (False, True):
        t = results[hedge]
        name = f"hedge after_ms {AFTER_MS}" if hedge else "no hedge"
        print(f"{name:>20}: p50 {pct(t, 50) * 1000:7.0f} ms  p90 {pct(t, 90) * 1000:7.0f} ms  "
              f"p99 {pct(t, 99) * 1000:7.0f} ms  mean {statistics.mean(t) * 1000:6.0f} ms  "
              f"hedges {sent[hedge] / len(t):.1%} of requests")


if __name__ == "__main__":
    main()
