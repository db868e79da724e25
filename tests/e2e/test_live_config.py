"""`planoai up` on a running gateway: the new config is applied by the same
Envoy (watched lds.yaml/cds.yaml), so requests and streams in flight finish,
blocks are kept, and a bad config changes nothing. Also the Kubernetes-style
update: a symlink swap in the watched directory."""

import os
import shutil
import signal
import subprocess
import threading
import time

import requests
import yaml

from conftest import CHAT, GATEWAY, eventually, planoai, running, state_pid
from mock_provider import Reply

CHUNKS = 10
GAP = 0.5  # a stream lasts about 5 s


def sse():
    return [f'data: {{"choices":[{{"delta":{{"content":"c{i}"}}}}]}}\n\n' for i in range(CHUNKS)] + ["data: [DONE]\n\n"]


def config(p, f1, f2, slow, s, order, slow_timeout_ms):
    """P always fails over (503), to F1 and F2 in `order`; SLOW answers in 1 s,
    so its `timeout_ms` decides whether F1 answers instead; S streams."""
    return f"""
version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{p.port}
    access_key: sk-live-primary
    default: true
    retry_policy:
      fallback_models: [{", ".join(order)}]
      default_strategy: different_provider
      on_status_codes: [{{codes: [503], strategy: different_provider, max_attempts: 2}}]
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{f1.port}
  - model: mistral/mistral-large
    base_url: http://127.0.0.1:{f2.port}
  - model: groq/llama-slow
    base_url: http://127.0.0.1:{slow.port}
    timeout_ms: {slow_timeout_ms}
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_timeout: {{strategy: different_provider, max_attempts: 1}}
  - model: together_ai/streamer
    base_url: http://127.0.0.1:{s.port}
"""


def one_model(port, key=None):
    """A config of one model, the default, on a provider at `port`."""
    access = f"\n    access_key: {key}" if key else ""
    return f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{port}{access}
    default: true
"""


def watch(exe, path):
    """`EXE up --watch PATH` as a terminal starts it: its own process group,
    Ctrl-C not ignored (even when these tests run in the background, which
    ignores it). Returns the process, its output lines as they come, and
    the thread gathering them."""
    watcher = subprocess.Popen([exe, "up", "--watch", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(watcher.stdout), daemon=True)
    reader.start()
    return watcher, lines, reader


def post(session, model, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return session.post(CHAT, json=body, timeout=30, **({"stream": True} if extra.get("stream") else {}))


class Load:
    """A steady loop of requests on keep-alive connections, bounded in rate
    (each thread at most `rate` a second) and in time (until stopped)."""

    def __init__(self, threads=8, rate=100):
        self.statuses, self.began = [], time.time()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(rate,)) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self, rate):
        session = requests.Session()
        n = 0
        while not self.stop.is_set():
            started = time.time()
            n += 1
            # Every other request fails over; the rest go straight through.
            model = "openai/gpt-4o" if n % 2 else "anthropic/claude-3-5-sonnet"
            try:
                status = post(session, model).status_code
            except requests.RequestException as e:
                status = repr(e)
            with self.lock:
                self.statuses.append(status)
            time.sleep(max(0, 1 / rate - (time.time() - started)))

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        self.rate = len(self.statuses) / (time.time() - self.began)
        return self.statuses


class Stream(threading.Thread):
    def __init__(self, model="together_ai/streamer"):
        super().__init__()
        self.model, self.chunks, self.error, self.status = model, [], None, None
        self.start()

    def run(self):
        try:
            resp = post(requests, self.model, stream=True)
            self.status = resp.status_code
            if resp.status_code != 200:
                self.error = f"status {resp.status_code}"
                return
            self.chunks = [line for line in resp.iter_lines() if line]
        except Exception as e:  # a cut stream: "Response ended prematurely"
            self.error = repr(e)

    def complete(self):
        return self.error is None and len(self.chunks) == CHUNKS + 1 and self.chunks[-1] == b"data: [DONE]"


def live_reapply_drops_nothing(providers, tmp_path, docker=False, container=None):
    """5 re-applies with 50 streams in flight and a steady loop: nothing
    fails, nothing is cut, and each change shows on the next request."""
    p = providers(Reply(status=503, body={"error": {"type": "overloaded", "message": "busy"}}))
    f1, f2 = providers(Reply()), providers(Reply())
    slow = providers(Reply(delay=1.0))
    s = providers(Reply(stream=sse(), gap=GAP))
    path = tmp_path / "gw.yaml"
    orders = [["anthropic/claude-3-5-sonnet", "mistral/mistral-large"], ["mistral/mistral-large", "anthropic/claude-3-5-sonnet"]]
    mode = ["--docker"] if docker else []

    def write(i):
        path.write_text(config(p, f1, f2, slow, s, orders[i % 2], 3000 if i % 2 == 0 else 300))

    write(0)
    planoai("up", *mode, str(path))
    # The same Envoy throughout: its pid, or in Docker its container.
    same = container if docker else lambda: state_pid(os.environ["PLANO_HOME"])
    before = same()
    load = Load()
    streams = []
    outputs = []
    try:
        for i in range(1, 6):
            streams += [Stream() for _ in range(10)]
            time.sleep(1.0)  # every stream has its headers: in flight
            write(i)
            result = planoai("up", *mode, str(path))
            outputs.append(result.stdout)
            assert "applied to the running gateway" in result.stdout, result.stdout
            assert "~ openai/gpt-4o: retry_policy.fallback_models: [" in result.stdout, result.stdout
            assert "groq/llama-slow: timeout_ms:" in result.stdout, result.stdout
            # The next request sees the new order and the new timeout.
            first = orders[i % 2][0]
            resp = post(requests, "openai/gpt-4o")
            assert resp.status_code == 200 and resp.headers["x-plano-model"] == first, (i, resp.headers)
            resp = post(requests, "groq/llama-slow")
            expect = "groq/llama-slow" if i % 2 == 0 else "anthropic/claude-3-5-sonnet"
            assert resp.status_code == 200 and resp.headers["x-plano-model"] == expect, (i, resp.headers)
        for st in streams:
            st.join(30)
    finally:
        statuses = load.finish()
    failed = [x for x in statuses if x != 200]
    cut = [st.error or len(st.chunks) for st in streams if not st.complete()]
    print(f"\nmeasured: {len(statuses)} loop requests ({load.rate:.0f}/s), {len(failed)} failed; "
          f"{len(streams)} streams, {len(cut)} cut; 5 re-applies")
    assert len(statuses) > 1000, len(statuses)
    assert failed == [], failed[:10]
    assert len(streams) == 50 and cut == [], cut
    assert same() == before, "Envoy was restarted"
    for out in outputs:
        assert "sk-live-primary" not in out


def test_reapply_with_streams_and_load_in_flight_drops_nothing(gateway, providers, tmp_path):
    live_reapply_drops_nothing(providers, tmp_path)


def test_a_block_learned_before_a_reapply_still_holds_after(gateway, providers, tmp_path):
    limited = providers(Reply(status=429, headers={"Retry-After": "60"}, body={"error": {"type": "rate_limit", "message": "slow down"}}))
    fallback = providers(Reply())
    path = tmp_path / "gw.yaml"

    def write(timeout_ms):
        path.write_text(f"""
version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{limited.port}
    default: true
    timeout_ms: {timeout_ms}
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      retry_after_handling: {{scope: model, apply_to: global, max_retry_after_seconds: 300}}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{fallback.port}
""")

    write(30000)
    planoai("up", str(path))
    assert post(requests, "openai/gpt-4o").headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
    assert limited.calls == 1
    write(20000)
    out = planoai("up", str(path)).stdout
    assert "openai/gpt-4o: timeout_ms: 30000 -> 20000" in out, out
    # Blocked still: the next requests go straight to the fallback.
    for _ in range(4):
        resp = post(requests, "openai/gpt-4o")
        assert resp.status_code == 200 and resp.headers["x-plano-model"] == "anthropic/claude-3-5-sonnet"
        assert resp.headers["x-plano-attempts"] == "1", resp.headers
    assert limited.calls == 1, "the block was lost with the re-apply"
    assert "openai/gpt-4o" in planoai("status").stdout


def test_a_bad_config_on_a_running_gateway_changes_nothing(gateway, providers, tmp_path):
    a, b = providers(Reply()), providers(Reply())
    path = tmp_path / "gw.yaml"
    good = one_model(a.port)
    path.write_text(good)
    planoai("up", str(path))
    pid = state_pid(os.environ["PLANO_HOME"])
    path.write_text(good + f"""  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{b.port}
    timeout_ms: soon
""")
    result = planoai("up", str(path), check=False)
    assert result.returncode == 1
    assert f"{path}:9:17" in result.stderr, result.stderr
    assert "nothing was started or changed" in result.stderr
    # The old gateway answers, with the old config.
    assert state_pid(os.environ["PLANO_HOME"]) == pid and running(pid)
    assert post(requests, "openai/gpt-4o").status_code == 200
    assert post(requests, "anthropic/claude-3-5-sonnet").headers["x-plano-model"] == "openai/gpt-4o"
    assert b.calls == 0


def test_watch_reapplies_on_save(gateway, providers, tmp_path):
    a, b = providers(Reply()), providers(Reply())
    path = tmp_path / "gw.yaml"
    text = one_model(a.port)
    path.write_text(text)
    watcher, lines, reader = watch("planoai", path)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and post_ok() is None:
            time.sleep(0.2)
        path.write_text(text + f"""  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{b.port}
""")
        deadline = time.time() + 15
        while time.time() < deadline:
            if post_ok("anthropic/claude-3-5-sonnet") == "anthropic/claude-3-5-sonnet":
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the saved config was not applied")
        # Requests may see the new config a moment before the watcher has
        # confirmed it and said what changed.
        assert eventually(lambda: any("+ provider anthropic/claude-3-5-sonnet" in l for l in lines)), lines
        # Ctrl-C reaches the whole foreground process group: it stops
        # watching, and the gateway keeps running.
        os.killpg(watcher.pid, signal.SIGINT)
        watcher.wait(timeout=15)
    finally:
        if watcher.poll() is None:
            os.killpg(watcher.pid, signal.SIGKILL)
        reader.join(timeout=10)
    assert watcher.returncode in (0, -signal.SIGINT), (watcher.returncode, lines)
    assert requests.get(f"{GATEWAY}/healthz", timeout=5).status_code == 200
    assert post_ok("anthropic/claude-3-5-sonnet") == "anthropic/claude-3-5-sonnet"


def test_watch_restarts_after_an_upgrade_replaced_planoai(gateway, providers, tmp_path):
    """An `up --watch` started before an upgrade replaced planoai's file
    still restarts the gateway when a change needs it: the restart starts
    the log writer from the running program, not from the path now naming
    another file (or none)."""
    a = providers(Reply())
    installed = shutil.which("planoai")
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    os.symlink(os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(installed))), "share"), prefix / "share")
    exe = prefix / "bin" / "planoai"
    shutil.copy2(installed, exe)
    path = tmp_path / "gw.yaml"
    path.write_text(one_model(a.port, key="sk-before-upgrade"))
    watcher, lines, reader = watch(str(exe), path)
    try:
        assert eventually(lambda: post_ok() == "openai/gpt-4o", 30), lines
        # What an upgrade does: a new file under the old name.
        shutil.copy2(installed, tmp_path / "new-planoai")
        os.replace(tmp_path / "new-planoai", exe)
        # A changed provider key restarts Envoy.
        path.write_text(one_model(a.port, key="sk-after-upgrade"))
        assert eventually(lambda: any("restarting the gateway" in l for l in lines), 15), lines
        assert eventually(lambda: post_ok() == "openai/gpt-4o" and
                          a.requests[-1]["headers"].get("authorization") == "Bearer sk-after-upgrade", 30), \
            (lines, a.requests[-1]["headers"].get("authorization") if a.requests else None)
        assert not any("log writer" in l for l in lines), lines
    finally:
        os.killpg(watcher.pid, signal.SIGKILL)
        reader.join(timeout=10)


def post_ok(model="openai/gpt-4o"):
    try:
        return post(requests, model).headers.get("x-plano-model")
    except requests.RequestException:
        return None


def test_a_kubernetes_style_symlink_swap_reaches_a_running_envoy(plano_home, providers, tmp_path):
    """The rendered manifest's Secret, laid out as the kubelet mounts it
    (files are symlinks through `..data`, swapped by a rename), with Envoy
    started from it: a new Secret reaches Envoy without a restart."""
    a, b = providers(Reply()), providers(Reply())
    mount = tmp_path / "etc-plano"
    mount.mkdir()
    wasm = os.path.join(os.path.dirname(shutil.which("planoai")), "..", "share", "plano", "plano_filter.wasm")

    def secret(fallback_first):
        path = tmp_path / "gw.yaml"
        path.write_text(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{a.port}
    access_key: sk-k8s-a
    default: true
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{b.port if fallback_first else a.port}
""")
        out = tmp_path / f"render-{fallback_first}"
        planoai("render", str(path), "-o", str(out), "--kubernetes")
        docs = list(yaml.safe_load_all((out / "kubernetes.yaml").read_text()))
        # Where the volume's `items` put each of the Secret's files.
        volume = docs[1]["spec"]["template"]["spec"]["volumes"][0]["secret"]
        where = {item["key"]: item["path"] for item in volume["items"]}
        return {where[name]: text.replace("/etc/plano", str(mount)).replace("/usr/local/share/plano/plano_filter.wasm", wasm)
                for name, text in docs[0]["stringData"].items()}

    def kubelet_write(files, generation):
        # What the kubelet's atomic writer does: a new timestamped directory,
        # `..data_tmp` pointing at it, renamed over `..data`.
        data = mount / f"..2026_{generation}"
        data.mkdir()
        for name, text in files.items():
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            (data / name).write_text(text)
            top = name.split("/")[0]
            if not (mount / top).is_symlink():
                (mount / top).symlink_to(f"..data/{top}")
        (mount / "..data_tmp").symlink_to(data.name)
        os.rename(mount / "..data_tmp", mount / "..data")

    kubelet_write(secret(False), 1)
    envoy = os.path.join(os.path.dirname(shutil.which("planoai")), "..", "share", "plano", "envoy")
    proc = subprocess.Popen([envoy, "-c", str(mount / "envoy.yaml"), "--concurrency", "1", "--disable-hot-restart",
                             "--log-level", "warning"], stdout=open(tmp_path / "envoy.log", "w"), stderr=subprocess.STDOUT)
    try:
        served = lambda: post(requests, "anthropic/claude-3-5-sonnet").json().get("served_by")
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if served() == a.port:
                    break
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        assert served() == a.port
        kubelet_write(secret(True), 2)
        deadline = time.time() + 10
        while time.time() < deadline and served() != b.port:
            time.sleep(0.1)
        assert served() == b.port, "the swapped Secret was not applied"
        assert proc.poll() is None, "Envoy restarted"
        assert "Bearer sk-k8s-a" not in requests.get("http://127.0.0.1:9901/config_dump", timeout=5).text
    finally:
        proc.terminate()
        proc.wait(10)


def test_down_lets_streams_in_flight_finish_and_is_quick_when_idle(gateway, providers, tmp_path):
    s = providers(Reply(stream=sse(), gap=GAP))
    path = tmp_path / "gw.yaml"
    path.write_text(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: together_ai/streamer
    base_url: http://127.0.0.1:{s.port}
    default: true
""")
    planoai("up", str(path))
    streams = [Stream() for _ in range(3)]
    time.sleep(1.0)
    started = time.time()
    down = planoai("down", "--drain-seconds", "20")
    took = time.time() - started
    for st in streams:
        st.join(10)
    assert "draining: 3 request(s) in flight" in down.stdout, down.stdout
    assert [st.complete() for st in streams] == [True] * 3, [st.error for st in streams]
    assert 2.5 < took < 10, took
    # Nothing in flight: no wait.
    planoai("up", str(path))
    started = time.time()
    assert planoai("down").stdout.strip() == "gateway stopped"
    assert time.time() - started < 2


def test_a_stream_whose_retry_comes_after_a_reapply_finishes_under_its_old_config(gateway, providers, tmp_path):
    """The first attempt fails after the change: the retry still runs in the
    old listener's worker, with the old fallback's old time-to-headers limit,
    which the new attempt listener has no route of its own for."""
    first = providers(Reply(status=503, delay=2.0, body={"error": {"type": "overloaded", "message": "busy"}}))
    fallback = providers(Reply(stream=sse(), gap=0.1))
    path = tmp_path / "gw.yaml"

    def write(fallback_timeout_ms):
        path.write_text(f"""version: v0.3.0
listeners: [{{type: model, name: l, port: 12000}}]
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:{first.port}
    default: true
    timeout_ms: 5000
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{{codes: [503], strategy: different_provider, max_attempts: 1}}]
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:{fallback.port}
    timeout_ms: {fallback_timeout_ms}
""")

    write(7000)
    planoai("up", str(path))
    stream = Stream(model="openai/gpt-4o")
    time.sleep(0.5)
    write(6000)
    assert "anthropic/claude-3-5-sonnet: timeout_ms: 7000 -> 6000" in planoai("up", str(path)).stdout
    stream.join(20)
    assert stream.complete(), (stream.error, stream.chunks, stream.status)
    assert (first.calls, fallback.calls) == (1, 1)
