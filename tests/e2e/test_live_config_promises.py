"""Changing a running gateway, the README's promises beyond
test_live_config.py: a config Envoy rejects, the changes that need a new
Envoy with requests in flight, `down`'s drain limit and a streamed retry in
flight, latency windows kept across a re-apply, and a changed `shared_state`
restarting Envoy."""

import os
import threading
import time

import requests

from conftest import planoai, running, state_pid
from mock_provider import Reply
from test_live_config import CHUNKS, GAP, Stream, sse


def write(path, primary, fallback, streamer, port=12000, address="127.0.0.1", timeout_ms=30000, listener=""):
    path.write_text(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: {port}, address: "{address}"{listener}}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{primary.port}
    default: true
    retry_policy: {{ fallback_models: [together_ai/streamer], default_strategy: different_provider }}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{fallback.port}
    timeout_ms: {timeout_ms}
  - model: together_ai/streamer
    base_url: http://127.0.0.1:{streamer.port}
""")
    return str(path)


def chat(model, address="127.0.0.1", port=12000, **headers):
    return requests.post(f"http://{address}:{port}/v1/chat/completions",
                         json={"model": model, "messages": []}, headers=headers, timeout=30)


class Slow(threading.Thread):
    """A non-streamed request to a provider that answers after a while."""

    def __init__(self, address, port):
        super().__init__()
        self.address, self.port, self.status = address, port, None
        self.start()

    def run(self):
        try:
            self.status = chat("anthropic/claude-3-5-sonnet", address=self.address, port=self.port).status_code
        except requests.RequestException as e:
            self.status = repr(e)


def test_a_config_envoy_rejects_changes_nothing_on_a_running_gateway(gateway, providers, tmp_path, plano_home):
    primary, fallback, streamer = providers(Reply()), providers(Reply()), providers(Reply())
    path = tmp_path / "gw.yaml"
    planoai("up", write(path, primary, fallback, streamer))
    pid = state_pid(plano_home)
    # Valid for planoai; Envoy's 32-bit buffer limit refuses it.
    result = planoai("up", write(path, primary, fallback, streamer, timeout_ms=1000,
                                 listener=", max_request_body_bytes: 5000000000"), check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Envoy rejects" in result.stderr, result.stderr
    assert "applied" not in result.stdout, result.stdout
    assert state_pid(plano_home) == pid and running(pid)
    # The old config still serves: the old timeout, not the rejected 1 s.
    fallback.script = [Reply(delay=1.5)]
    resp = chat("anthropic/claude-3-5-sonnet")
    assert resp.status_code == 200, resp.text


def test_each_change_that_needs_a_new_envoy_lets_requests_in_flight_finish(gateway, providers, tmp_path, plano_home):
    primary, fallback, streamer = providers(Reply()), providers(Reply(delay=2.0)), providers(Reply(stream=sse(), gap=GAP))
    path = tmp_path / "gw.yaml"
    planoai("up", write(path, primary, fallback, streamer))
    # The log cap, then the port, then the address; each flag stays given.
    changes = [
        ({}, "the log cap"),
        ({"port": 12001}, "listener 127.0.0.1:12000 -> 127.0.0.1:12001"),
        ({"port": 12001, "address": "127.0.0.2"}, "listener 127.0.0.1:12001 -> 127.0.0.2:12001"),
    ]
    address, port = "127.0.0.1", 12000
    for listener, reason in changes:
        old = state_pid(plano_home)
        # Aimed at the old listener: a slow answer, and on 12000 a stream (about 5 s).
        slow = Slow(address, port)
        stream = Stream() if port == 12000 else None
        time.sleep(0.5)
        result = planoai("up", "--log-max-size", "20M", write(path, primary, fallback, streamer, **listener))
        assert f"restarting the gateway ({reason})" in result.stdout, result.stdout
        new = state_pid(plano_home)
        assert new != old and running(new) and not running(old)
        slow.join(30)
        assert slow.status == 200, (reason, slow.status)
        if stream:
            stream.join(30)
            assert stream.complete(), (reason, stream.error, len(stream.chunks))
        address, port = listener.get("address", "127.0.0.1"), listener.get("port", 12000)
        assert chat("openai/gpt-4o", address=address, port=port).status_code == 200


def test_down_cuts_a_stream_that_outlasts_its_drain_seconds(gateway, providers, tmp_path):
    primary, fallback = providers(Reply()), providers(Reply())
    streamer = providers(Reply(stream=sse(), gap=GAP))
    planoai("up", write(tmp_path / "gw.yaml", primary, fallback, streamer))
    stream = Stream()
    time.sleep(1.0)
    started = time.time()
    planoai("down", "--drain-seconds", "1")
    took = time.time() - started
    stream.join(10)
    assert took < 4, took
    assert not stream.complete() and len(stream.chunks) < CHUNKS + 1, (stream.error, len(stream.chunks))
    assert planoai("status", check=False).stdout.startswith("not running")


def test_down_lets_a_streamed_retry_in_flight_finish(gateway, providers, tmp_path):
    # openai/gpt-4o answers 429 after 2 s, once `down` has begun; its
    # fallback then streams for about 5 s, through the internal listeners.
    limited = Reply(status=429, delay=2.0, body={"error": {"message": "limited"}})
    primary, fallback = providers(limited), providers(Reply())
    streamer = providers(Reply(stream=sse(), gap=GAP))
    planoai("up", write(tmp_path / "gw.yaml", primary, fallback, streamer))
    stream = Stream(model="openai/gpt-4o")
    time.sleep(0.5)
    assert primary.calls == 1 and streamer.calls == 0
    down = planoai("down")
    stream.join(10)
    assert streamer.calls == 1
    assert stream.complete(), (stream.error, len(stream.chunks))
    assert "draining: 1 request(s) in flight" in down.stdout, down.stdout
    assert planoai("status", check=False).stdout.startswith("not running")


def test_latency_windows_are_kept_across_a_reapply(gateway, providers, tmp_path, plano_home):
    slow, fallback = providers(Reply(delay=0.4)), providers(Reply())
    path = tmp_path / "gw.yaml"

    def config(timeout_ms):
        path.write_text(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{slow.port}
    default: true
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_high_latency: {{ threshold_ms: 200, measure: total, min_triggers: 2, trigger_window_seconds: 60,
                          block_duration_seconds: 60, apply_to: global }}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{fallback.port}
    timeout_ms: {timeout_ms}
""")
        return str(path)

    planoai("up", config(30000))
    pid = state_pid(plano_home)
    # One slow answer: an event, not yet a block.
    assert chat("openai/gpt-4o").headers["x-plano-model"] == "openai/gpt-4o"
    assert "applied to the running gateway" in planoai("up", config(20000)).stdout
    assert state_pid(plano_home) == pid
    # The second after the re-apply: with the first, a block.
    assert chat("openai/gpt-4o").headers["x-plano-model"] == "openai/gpt-4o"
    resp = chat("openai/gpt-4o")
    assert resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet" and resp.headers["x-plano-attempts"] == "1"
    assert slow.calls == 2


def test_a_new_filter_or_provider_key_restarts_and_lets_requests_in_flight_finish(gateway, providers, tmp_path, plano_home):
    import shutil

    primary, fallback, streamer = providers(Reply()), providers(Reply(delay=2.0)), providers(Reply())
    installed = os.path.join(os.path.dirname(shutil.which("planoai")), "..", "share", "plano", "plano_filter.wasm")
    wasm = tmp_path / "plano_filter.wasm"
    shutil.copy(installed, wasm)
    env = dict(os.environ, PLANO_FILTER_WASM=str(wasm))
    path = tmp_path / "gw.yaml"
    planoai("up", write(path, primary, fallback, streamer), env=env)
    # A new build of the filter (same bytes, a new file time), then a new key.
    def rebuild():
        later = os.stat(wasm).st_mtime_ns + 1_000_000_000
        os.utime(wasm, ns=(later, later))

    def new_key():
        path.write_text(path.read_text().replace("default: true", "default: true\n    access_key: sk-rotated-0001"))

    for change, reason in [(rebuild, "a new filter (.wasm)"), (new_key, "the provider keys")]:
        old = state_pid(plano_home)
        slow = Slow("127.0.0.1", 12000)
        time.sleep(0.5)
        change()
        result = planoai("up", str(path), env=env)
        assert f"restarting the gateway ({reason})" in result.stdout, result.stdout
        new = state_pid(plano_home)
        assert new != old and running(new) and not running(old)
        slow.join(30)
        assert slow.status == 200, (reason, slow.status)
    assert chat("openai/gpt-4o").status_code == 200
    assert primary.requests[-1]["headers"]["authorization"] == "Bearer sk-rotated-0001"


def test_a_changed_shared_state_restarts_envoy(gateway, providers, plano_home):
    ok = providers(Reply())
    config = f"""
        version: v0.3.0
        listeners: [{{type: model, name: l, port: 12000}}]
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{ok.port}
            default: true
    """
    # No etcd answers there: the gateway serves as without it (fail open).
    shared = """
        shared_state:
          etcd_endpoints: [http://127.0.0.1:9]
          key_prefix: {}
    """
    gateway.up(config)
    for added in (shared.format("/one/"), shared.format("/two/")):
        old = state_pid(plano_home)
        result = gateway.up(config + added)
        assert "restarting the gateway (shared_state)" in result.stdout, result.stdout
        assert state_pid(plano_home) != old and not running(old)
        assert chat("openai/gpt-4o").status_code == 200
    # The same section again is no change.
    old = state_pid(plano_home)
    assert "restarting" not in gateway.up(config + shared.format("/two/")).stdout
    assert state_pid(plano_home) == old
