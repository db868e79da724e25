"""Traces: a real OTLP/gRPC receiver (grpcio with opentelemetry-proto,
started here on loopback) gets the spans of requests that failed over, and
each provider sees its attempt's own span as the parent of its request; a
collector that accepts and never answers is logged a bounded few times and
costs a request little."""

import dataclasses
import json
import re
import socket
import statistics
import threading
import time
from concurrent import futures

import grpc
import pytest
import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import CHAT, eventually, planoai, stats
from mock_provider import Reply
from test_gateway import HEADER, RATE_LIMITED, two_providers

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
CLIENT_PARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it, with its service's name."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                service = {a.key: a.value.string_value for a in rs.resource.attributes}["service.name"]
                for ss in rs.scope_spans:
                    self.spans += [(service, s) for s in ss.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id):
        with self.lock:
            return [s for _, s in self.spans if s.trace_id.hex() == trace_id]


@pytest.fixture
def collector():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver
    server.stop(grace=None)


def traced(primary, secondary, collector, sampling="1.0"):
    return two_providers(primary, secondary, policy="              default_strategy: different_provider") + f"""
        tracing:
          endpoint: http://127.0.0.1:{collector.port}
          sampling: {sampling}
          service_name: plano-e2e
    """


def attrs(span):
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = v.string_value if v.HasField("string_value") else v.int_value
    return out


def parent_of(provider_request):
    """The span id a provider's request names as its parent."""
    version, trace, span, flags = provider_request["headers"]["traceparent"].split("-")
    assert (version, flags) == ("00", "01")
    return trace, span


def wait_for_trace(collector, trace_id, count):
    assert eventually(lambda: len(collector.trace(trace_id)) >= count, 10), collector.spans
    time.sleep(0.2)  # nothing more may follow
    return collector.trace(trace_id)


# Each attempt's provider takes this long to its status line: the spans'
# times to first byte measure it.
PRIMARY_DELAY, SECONDARY_DELAY = 0.15, 0.3


def check_failover_trace(spans, primary, secondary, trace_id, client_span, tokens):
    assert len(spans) == 3, spans
    [request] = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
    attempts = sorted((s for s in spans if s.kind == s.SPAN_KIND_CLIENT), key=lambda s: attrs(s)["plano.attempt"])
    assert request.parent_span_id.hex() == client_span
    assert [s.parent_span_id for s in attempts] == [request.span_id] * 2
    assert attrs(request)["gen_ai.request.model"] == "openai/gpt-4o"
    assert attrs(request)["plano.attempts"] == 2
    assert request.status.code == request.status.STATUS_CODE_OK
    first, second = map(attrs, attempts)
    assert {k: first[k] for k in ("plano.attempt", "plano.target.model", "gen_ai.provider.name", "gen_ai.system",
                                   "gen_ai.request.model", "plano.outcome", "http.response.status_code", "plano.wait_ms")} \
        == {"plano.attempt": 1, "plano.target.model": "openai/gpt-4o", "gen_ai.provider.name": "openai",
            "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "plano.outcome": "429",
            "http.response.status_code": 429, "plano.wait_ms": 0}
    assert attempts[0].status.code == attempts[0].status.STATUS_CODE_ERROR
    assert "gen_ai.usage.input_tokens" not in first
    assert second["plano.target.model"] == "anthropic/claude-3-5-sonnet"
    assert second["gen_ai.provider.name"] == "anthropic"
    assert second["gen_ai.request.model"] == "claude-3-5-sonnet"
    assert second["plano.outcome"] == "200" and second["http.response.status_code"] == 200
    assert second["gen_ai.response.model"] == "claude-3-5-sonnet-20241022"
    assert (second["gen_ai.usage.input_tokens"], second["gen_ai.usage.output_tokens"]) == tokens
    assert (attrs(request)["gen_ai.usage.input_tokens"], attrs(request)["gen_ai.usage.output_tokens"]) == tokens
    for a, delay in ((first, PRIMARY_DELAY), (second, SECONDARY_DELAY)):
        assert delay * 1000 <= a["plano.ttfb_ms"] < delay * 1000 + 2_000, (a, delay)
    # The attempts run in order inside the request.
    assert request.start_time_unix_nano <= attempts[0].start_time_unix_nano
    assert attempts[0].end_time_unix_nano <= attempts[1].start_time_unix_nano
    assert attempts[1].end_time_unix_nano <= request.end_time_unix_nano
    # Each provider saw its own attempt's span as the parent.
    assert parent_of(primary.requests[0]) == (trace_id, attempts[0].span_id.hex())
    assert parent_of(secondary.requests[0]) == (trace_id, attempts[1].span_id.hex())


ANSWER = {"id": "x", "object": "chat.completion", "model": "claude-3-5-sonnet-20241022",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}


def test_a_failover_is_traced_with_the_clients_parent(gateway, providers, collector):
    primary = providers(dataclasses.replace(RATE_LIMITED, delay=PRIMARY_DELAY))
    secondary = providers(Reply(body=ANSWER, delay=SECONDARY_DELAY))
    gateway.up(traced(primary, secondary, collector))
    r = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                      headers={"traceparent": CLIENT_PARENT}, timeout=30)
    assert r.status_code == 200 and r.headers["x-plano-attempts"] == "2", r.text
    spans = wait_for_trace(collector, CLIENT_TRACE, 3)
    check_failover_trace(spans, primary, secondary, CLIENT_TRACE, CLIENT_SPAN, (12, 5))
    assert {service for service, _ in collector.spans} == {"plano-e2e"}


def test_a_streamed_failover_is_traced_the_same(gateway, providers, collector):
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "claude-3-5-sonnet-20241022",
             "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
    last = dict(chunk, choices=[], usage={"prompt_tokens": 9, "completion_tokens": 4})
    stream = Reply(stream=[f"data: {json.dumps(chunk)}\n\n", f"data: {json.dumps(last)}\n\n", "data: [DONE]\n\n"], gap=0.01,
                   delay=SECONDARY_DELAY)
    primary, secondary = providers(dataclasses.replace(RATE_LIMITED, delay=PRIMARY_DELAY)), providers(stream)
    gateway.up(traced(primary, secondary, collector))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    r = requests.post(CHAT, json=body, headers={"traceparent": CLIENT_PARENT}, timeout=30)
    assert r.status_code == 200 and "[DONE]" in r.text, r.text
    spans = wait_for_trace(collector, CLIENT_TRACE, 3)
    check_failover_trace(spans, primary, secondary, CLIENT_TRACE, CLIENT_SPAN, (9, 4))


def test_a_request_without_a_parent_starts_a_trace_and_sampling_zero_sends_none(gateway, providers, collector):
    primary, secondary = providers(Reply(body=ANSWER)), providers(Reply(body=ANSWER))
    gateway.up(traced(primary, secondary, collector))
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert requests.post(CHAT, json=body, timeout=30).status_code == 200
    trace_id, span_id = parent_of(primary.requests[0])
    [request, attempt] = wait_for_trace(collector, trace_id, 2)
    assert not request.parent_span_id and attempt.span_id.hex() == span_id
    assert attrs(attempt)["plano.outcome"] == "200"
    # A parent that is not sampled is followed (sampling 1.0 or not): no
    # span, and the provider gets the client's traceparent as it was sent.
    unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    assert requests.post(CHAT, json=body, headers={"traceparent": unsampled}, timeout=30).status_code == 200
    assert primary.requests[-1]["headers"]["traceparent"] == unsampled
    time.sleep(0.5)
    assert collector.trace(CLIENT_TRACE) == []

    gateway.up(traced(primary, secondary, collector, sampling="0"))
    before, sent = len(collector.spans), primary.calls
    for _ in range(5):
        assert requests.post(CHAT, json=body, timeout=30).status_code == 200
    time.sleep(0.5)
    assert len(collector.spans) == before
    # Not traced: the provider sees no trace of the gateway's.
    assert all("traceparent" not in r["headers"] for r in primary.requests[sent:])


def test_a_bad_tracing_section_names_its_field(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("""version: v0.3.0
listeners:
  - { type: model, name: model_listener, port: 12000 }
model_providers:
  - { model: openai/gpt-4o, base_url: "http://127.0.0.1:9", access_key: k }
tracing:
  endpoint: grpc://collector:4317
  sampling: 1.5
""")
    result = planoai("validate", str(config), check=False)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{config}:7:" in out and "tracing.endpoint" in out, out
    assert f"{config}:8:" in out and "tracing.sampling" in out, out


@pytest.fixture
def stuck_collector():
    """A collector that accepts connections and never answers (nor reads)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held = []

    def accept():
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in held:
        conn.close()


def drive(seconds, clients=24):
    """Requests from `clients` threads for `seconds`: each one's latency."""
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    took, lock, end = [], threading.Lock(), time.time() + seconds

    def client():
        session = requests.Session()
        while time.time() < end:
            start = time.time()
            r = session.post(CHAT, json=body, timeout=30)
            assert r.status_code == 200, r.text
            with lock:
                took.append(time.time() - start)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took


def export_lines():
    """The gateway's lines about exports, from Envoy's log (the root
    context's lines are not among `planoai logs`' own)."""
    log = planoai("logs", "--envoy", "-n", "100000").stdout
    return [line for line in log.splitlines() if "could not export" in line]


def test_a_collector_that_never_answers_is_said_a_bounded_few_times(gateway, providers, stuck_collector):
    # Four workers export up to ~800 times a second between them: at the load
    # this test drives, their exports under way reach the collector
    # cluster's limit (1024) and fail at once, besides those that time out.
    provider = providers(Reply(body=ANSWER))
    plain = HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: key-primary-0001
            default: true
    """
    workers = 4
    gateway.up(plain, args=("--workers", str(workers)))
    alone, loaded = drive(2, clients=1), drive(3)
    gateway.up(plain + f"""
        tracing:
          endpoint: http://127.0.0.1:{stuck_collector}
          sampling: 1.0
    """, args=("--workers", str(workers)))
    start = time.time()
    stuck_alone, stuck_loaded = drive(2, clients=1), drive(8)
    failed = stats("cluster.plano_otlp")
    failed = failed.get("cluster.plano_otlp.upstream_rq_timeout", 0) + failed.get("cluster.plano_otlp.upstream_rq_active_overflow", 0)
    assert failed > 100, stats("cluster.plano_otlp")
    time.sleep(0.5)  # Envoy writes its log in batches
    lines = export_lines()
    elapsed = time.time() - start
    p50 = {name: round(statistics.median(took) * 1000, 1) for name, took in
           (("alone", alone), ("stuck_alone", stuck_alone), ("loaded", loaded), ("stuck_loaded", stuck_loaded))}
    print(f"p50 ms {p50}; {len(loaded) / 3:.0f} vs {len(stuck_loaded) / 8:.0f} req/s; {failed} exports failed; "
          f"{len(lines)} lines in {elapsed:.1f} s")
    # Said, with the count, at most once per worker per 10 s window.
    assert 1 <= len(lines) <= workers * (int(elapsed // 10) + 1), lines[:20]
    assert all(re.search(r"could not export \d+ spans: .* \(\d+ export\(s\) failed since the last such line", line)
               for line in lines), lines
    # A request alone does not wait for the collector.
    assert p50["stuck_alone"] < p50["alone"] + 5, p50


def test_a_collector_that_never_answers_a_few_exports_is_said_too(gateway, providers, stuck_collector):
    # Too few exports to reach the cluster's limit: each one times out.
    provider = providers(Reply(body=ANSWER))
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            access_key: key-primary-0001
            default: true
        tracing:
          endpoint: http://127.0.0.1:{stuck_collector}
          sampling: 1.0
    """, args=("--workers", "1"))
    for _ in range(5):
        assert requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
                             timeout=30).status_code == 200
    # The exports' 5 s deadline passes (Envoy answers gRPC status 14).
    assert eventually(lambda: export_lines(), 10)
    time.sleep(1)
    [line] = export_lines()
    assert re.search(r"could not export \d+ spans: gRPC status \d+ \(\d+ export\(s\) failed since the last such line", line), line
