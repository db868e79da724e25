"""The OpenAI APIs besides chat completions, through failovers: the Responses
API (streamed and not, with its state rule), embeddings (never to another
model), Azure-style targets (`api-key`, `retry-after-ms`), and endpoints no
target serves. The client is the OpenAI Python SDK; each mock checks the
path, key header and body its API requires and answers 400 otherwise."""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler

import openai
import pytest
import requests

from conftest import ADMIN, GATEWAY, planoai
from mock_provider import MockServer, Reply
from test_gateway import HEADER

REQUIRED = {  # path suffix -> body fields the API requires
    "/chat/completions": ["model", "messages"],
    "/responses": ["model", "input"],
    "/embeddings": ["model", "input"],
}


class ApiMock:
    """A provider for one API at `path`, wanting `key` in `key_header`.
    Answers from `script` (the last reply repeats); `script` may be replaced
    while it runs. Records every request."""

    def __init__(self, path, key, script, key_header="authorization", model=None):
        self.path, self.key, self.key_header, self.model = path, key, key_header, model
        self.script = list(script)
        self.requests = []
        self.problems = []
        self.lock = threading.Lock()
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/cancel"):
                    return self.stored(lambda rid: dict(response_body(rid.removesuffix("/cancel")), status="cancelled"))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with mock.lock:
                    mock.requests.append({"path": self.path, "headers": headers, "body": body, "method": "POST",
                                          "at": time.time()})
                    reply = mock.script[min(len(mock.requests), len(mock.script)) - 1]
                problem = mock.check(self.path, headers, body)
                if problem:
                    mock.problems.append(problem)
                    reply = Reply(status=400, body={"error": {"type": "mock_check", "message": problem}})
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.stream is not None:
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in reply.stream:
                        data = chunk.encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                        time.sleep(reply.gap)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                out = json.dumps(reply.body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def stored(self, answer):
                """GET or DELETE of a stored response: `answer(id)` if the
                path and key are right."""
                headers = {k.lower(): v for k, v in self.headers.items()}
                with mock.lock:
                    mock.requests.append({"path": self.path, "headers": headers, "method": self.command,
                                          "at": time.time()})
                rid = self.path.removeprefix(mock.path + "/")
                ok = self.path.startswith(mock.path + "/") and headers.get(mock.key_header) == f"Bearer {mock.key}"
                out = json.dumps(answer(rid) if ok else {"error": {"message": "bad stored request"}}).encode()
                if not ok:
                    mock.problems.append(f"{self.command} {self.path}")
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                self.stored(lambda rid: {"object": "list", "data": [], "first_id": None, "last_id": None,
                                         "has_more": False} if rid.endswith("/input_items") else response_body(rid))

            def do_DELETE(self):
                self.stored(lambda rid: {"id": rid, "object": "response.deleted", "deleted": True})

            def log_message(self, *args):
                pass

        self.server = MockServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, path, headers, body):
        if path != self.path:
            return f"wrong path {path}, wanted {self.path}"
        want = f"Bearer {self.key}" if self.key_header == "authorization" else self.key
        if headers.get(self.key_header) != want:
            return f"no key in {self.key_header}"
        if self.key_header != "authorization" and "authorization" in headers:
            return "an authorization header beside the key"
        try:
            doc = json.loads(body)
        except ValueError:
            return "body is not JSON"
        suffix = next(s for s in REQUIRED if path.split("?")[0].endswith(s))
        missing = [f for f in REQUIRED[suffix] if f not in doc]
        if missing:
            return f"body lacks {missing}"
        if self.model and doc["model"] != self.model:
            return f"model {doc['model']!r}, wanted {self.model!r}"
        return None

    @property
    def calls(self):
        return len(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mocks():
    started = []

    def make(*args, **kwargs):
        m = ApiMock(*args, **kwargs)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


def client():
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="client-key", max_retries=0)


def response_body(rid, text="hello"):
    return {
        "id": rid, "object": "response", "created_at": 1700000000, "model": "mock", "status": "completed",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
    }


def response_events(rid, pieces):
    """A Responses stream: named events, as OpenAI sends them."""
    def event(kind, **data):
        return f"event: {kind}\ndata: {json.dumps(dict(type=kind, **data))}\n\n"
    created = dict(response_body(rid), status="in_progress", output=[])
    return (
        [event("response.created", sequence_number=0, response=created)]
        + [event("response.output_text.delta", sequence_number=i + 1, item_id="msg_1", output_index=0,
                 content_index=0, delta=p, logprobs=[]) for i, p in enumerate(pieces)]
        + [event("response.completed", sequence_number=len(pieces) + 1, response=response_body(rid, "".join(pieces)))]
    )


LIMITED = Reply(status=429, headers={"Retry-After": "30"}, body={"error": {"message": "limited"}})
DOWN = Reply(status=503, body={"error": {"message": "down"}})


def two_models(primary, fallback, policy="default_strategy: same_provider", extra=""):
    return HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-primary-0001
            default: true
            retry_policy:
              fallback_models: [openai/gpt-4o-mini]
              {policy}
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
{extra}
    """


def test_responses_stream_through_a_429_failover_as_the_fallback_sends_it(gateway, mocks):
    pieces = ["a", "b", "c", "d", "e", "f"]
    primary = mocks("/v1/responses", "key-primary-0001", [LIMITED])
    fallback = mocks("/v1/responses", "key-fallback-0002", [Reply(stream=response_events("resp_fb", pieces), gap=0.4)],
                     model="gpt-4o-mini")
    gateway.up(two_models(primary, fallback))
    start = time.time()
    events = [(e.type, getattr(e, "delta", None), time.time() - start)
              for e in client().responses.create(model="openai/gpt-4o", input="hi", stream=True)]
    assert [t for t, _, _ in events] == (
        ["response.created"] + ["response.output_text.delta"] * 6 + ["response.completed"]), events
    assert [d for t, d, _ in events if d is not None] == pieces
    # Delta i leaves the fallback 0.4 s x (i + 1) after its headers: each
    # arrives within half a second of that, not all at the end.
    sent_at = fallback.requests[0]["at"] - start
    deltas = [at for t, _, at in events if t == "response.output_text.delta"]
    for i, at in enumerate(deltas):
        assert at <= sent_at + 0.4 * (i + 1) + 0.5, (i, deltas, sent_at)
    assert deltas[-1] - deltas[0] >= 1.6, deltas
    assert (primary.calls, fallback.calls, fallback.problems) == (1, 1, [])
    # Byte for byte as the provider sent them, event names included (the
    # primary is blocked now: this one goes to the fallback at once).
    raw = requests.post(f"{GATEWAY}/v1/responses", json={"model": "openai/gpt-4o", "input": "hi", "stream": True},
                        timeout=30)
    assert raw.status_code == 200 and raw.headers["x-plano-model"] == "openai/gpt-4o-mini"
    assert raw.text == "".join(response_events("resp_fb", pieces))


def test_responses_not_streamed_through_a_503_failover(gateway, mocks):
    primary = mocks("/v1/responses", "key-primary-0001", [DOWN])
    fallback = mocks("/v1/responses", "key-fallback-0002", [Reply(body=response_body("resp_ok", "from the fallback"))],
                     model="gpt-4o-mini")
    gateway.up(two_models(primary, fallback))
    raw = client().responses.with_raw_response.create(model="openai/gpt-4o", input="hi")
    assert raw.headers["x-plano-attempts"] == "2"
    assert raw.headers["x-plano-model"] == "openai/gpt-4o-mini"
    assert raw.parse().output_text == "from the fallback"
    assert (primary.calls, fallback.calls, primary.problems + fallback.problems) == (1, 1, [])


def test_a_follow_up_goes_only_to_the_deployment_that_made_its_response(gateway, mocks):
    east = mocks("/v1/responses", "key-east-00001", [Reply(body=response_body("resp_east"))])
    west = mocks("/v1/responses", "key-west-00002", [Reply(body=response_body("resp_west"))])
    other = mocks("/v1/responses", "key-other-0003", [Reply(body=response_body("resp_other"))])
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            default: true
            deployments:
              - {{ name: east, base_url: "http://127.0.0.1:{east.port}", access_key: key-east-00001 }}
              - {{ name: west, base_url: "http://127.0.0.1:{west.port}", access_key: key-west-00002 }}
            retry_policy:
              fallback_models: [openai/gpt-4o-mini]
              default_strategy: different_provider
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{other.port}
            access_key: key-other-0003
    """)
    c = client()
    first = c.responses.create(model="openai/gpt-4o", input="hi")
    maker, others = (east, [west, other]) if first.id == "resp_east" else (west, [east, other])
    for _ in range(8):
        assert c.responses.create(model="openai/gpt-4o", input="and?", previous_response_id=first.id).id == first.id
    assert sum(m.calls for m in others) == 0
    # The stored response's own endpoints go there too.
    assert c.responses.retrieve(first.id).id == first.id
    assert c.responses.input_items.list(first.id).data == []
    assert c.responses.cancel(first.id).status == "cancelled"
    c.responses.delete(first.id)  # the SDK returns None whatever the answer: the maker's record says
    stored = f"/v1/responses/{first.id}"
    assert [(r["method"], r["path"]) for r in maker.requests[-4:]] \
        == [("GET", stored), ("GET", f"{stored}/input_items"), ("POST", f"{stored}/cancel"), ("DELETE", stored)]
    assert maker.problems == []
    with pytest.raises(openai.NotFoundError) as caught:
        c.responses.retrieve("resp_never_seen")
    assert caught.value.body["type"] == "response_not_found"
    assert sum(m.calls for m in others) == 0
    # The maker is limited: the follow-up stops there, nowhere else holds its state.
    maker.script = [LIMITED]
    with pytest.raises(openai.RateLimitError) as caught:
        c.responses.create(model="openai/gpt-4o", input="and?", previous_response_id=first.id)
    error = caught.value.body
    assert error["type"] == "retry_exhausted", error
    skipped = [a for a in error["attempts"] if "skipped" in a]
    assert len(skipped) == 2 and all("state of previous_response_id" in a["skipped"] for a in skipped), error
    assert sum(m.calls for m in others) == 0
    # A stream's id is remembered as well.
    maker.script = [Reply(stream=response_events("resp_streamed", ["x"]), gap=0.01)]
    list(c.responses.create(model="openai/gpt-4o", input="hi", stream=True,
                            previous_response_id=first.id))
    maker.script = [Reply(body=response_body("resp_next"))]
    for _ in range(4):
        c.responses.create(model="openai/gpt-4o", input="more", previous_response_id="resp_streamed")
    assert sum(m.calls for m in others) == 0
    assert maker.problems == []


def test_a_conversation_stays_on_its_model_and_a_follow_up_to_a_gone_deployment_is_a_400(gateway, mocks):
    own = mocks("/v1/responses", "key-primary-0001", [LIMITED])
    other = mocks("/v1/responses", "key-fallback-0002", [Reply(body=response_body("resp_other"))])
    gateway.up(two_models(own, other, policy="default_strategy: different_provider"))
    c = client()
    # A stored conversation is some account's state the gateway cannot
    # know: the request stays on its own model's deployments.
    with pytest.raises(openai.RateLimitError) as caught:
        c.responses.create(model="openai/gpt-4o", input="and?", extra_body={"conversation": "conv_1"})
    error = caught.value.body
    assert error["type"] == "retry_exhausted", error
    assert [a["model"] for a in error["attempts"] if "skipped" in a] == ["openai/gpt-4o-mini"], error
    assert (own.calls, other.calls) == (1, 0)
    # Without one it fails over (the primary is blocked now: straight there).
    made = c.responses.create(model="openai/gpt-4o", input="hi")
    assert made.id == "resp_other" and other.calls == 1
    # The deployment that made it leaves the config (the same account under
    # another model's name: its keys unchanged, the gateway is not restarted
    # and remembers the id): nowhere holds its state.
    out = gateway.up(two_models(own, other, policy="default_strategy: different_provider")
                     .replace("openai/gpt-4o-mini", "openai/gpt-4.1-mini"))
    assert "applied to the running gateway" in out.stdout, out.stdout
    # On a new connection: on the one opened before the reload, this
    # request once got a 502 "openai/gpt-4o-mini could not be reached" (the
    # old listener's config, its cluster gone), left to the reload's issue.
    c = client()
    with pytest.raises(openai.BadRequestError) as caught:
        c.responses.create(model="openai/gpt-4o", input="and?", previous_response_id=made.id)
    assert caught.value.body["type"] == "previous_response_not_served", caught.value.body
    assert (own.calls, other.calls) == (1, 1)


def test_embeddings_rotate_within_the_pool_and_never_reach_another_model(gateway, mocks):
    vector = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}],
              "model": "text-embedding-3-small", "usage": {"prompt_tokens": 1, "total_tokens": 1}}
    east = mocks("/v1/embeddings", "key-east-00001", [LIMITED], model="text-embedding-3-small")
    west = mocks("/v1/embeddings", "key-west-00002", [Reply(body=vector)], model="text-embedding-3-small")
    other = mocks("/v1/embeddings", "key-other-0003", [Reply(body=vector)])
    config = HEADER + f"""
          - model: openai/text-embedding-3-small
            default: true
            deployments:
              - {{ name: east, base_url: "http://127.0.0.1:{east.port}", access_key: key-east-00001 }}
              - {{ name: west, base_url: "http://127.0.0.1:{west.port}", access_key: key-west-00002 }}
            retry_policy:
              fallback_models: [openai/text-embedding-3-large]
              default_strategy: same_provider
          - model: openai/text-embedding-3-large
            base_url: http://127.0.0.1:{other.port}
            access_key: key-other-0003
    """
    gateway.up(config)
    c = client()
    for _ in range(10):
        got = c.embeddings.create(model="openai/text-embedding-3-small", input="hi")
        assert got.data[0].embedding == [0.25, 0.5]
    # The limited key was tried at most once, then skipped while its Retry-After lasts.
    assert east.calls <= 1 and west.calls == 10
    assert other.calls == 0
    # Every key limited (east still blocked): the rule would fail over, and
    # stops instead.
    west.script = [LIMITED]
    east_calls = east.calls
    with pytest.raises(openai.RateLimitError) as caught:
        c.embeddings.create(model="openai/text-embedding-3-small", input="hi")
    error = caught.value.body
    assert [a.get("deployment") for a in error["attempts"] if "status" in a] == ["west"], error
    assert east.calls == east_calls
    skipped, = [a for a in error["attempts"] if "skipped" in a]
    assert skipped["model"] == "openai/text-embedding-3-large"
    assert "vectors are not comparable" in skipped["skipped"]
    assert other.calls == 0
    assert east.problems + west.problems == []


def test_validate_warns_of_an_embeddings_model_that_would_fail_over(gateway, plano_home):
    path = os.path.join(plano_home, "embeddings.yaml")
    with open(path, "w") as f:
        f.write(HEADER.replace("\n        ", "\n") + """
  - model: openai/text-embedding-3-small
    base_url: http://127.0.0.1:9
    default: true
    retry_policy: { fallback_models: [openai/text-embedding-3-large] }
  - model: openai/text-embedding-3-large
    base_url: http://127.0.0.1:9
""")
    out = planoai("validate", path)
    assert "never fail over to another model" in out.stdout + out.stderr, out


def test_an_azure_target_gets_its_key_as_api_key_and_its_retry_after_ms_blocks_it(gateway, mocks):
    v1 = mocks("/openai/v1/chat/completions", "azure-key-v1-0001",
               [Reply(status=429, headers={"retry-after-ms": "30000"}, body={"error": {"message": "limited"}})],
               key_header="api-key", model="gpt-4o")
    deployment = mocks("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", "azure-key-dep-0002",
                       [Reply(body={"id": "chatcmpl-az", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                                    "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": "from azure"}}]})],
                       key_header="api-key")
    gateway.up(HEADER + f"""
          - model: azure/gpt-4o
            base_url: http://127.0.0.1:{v1.port}/openai/v1
            key_header: api-key
            access_key: azure-key-v1-0001
            default: true
            retry_policy: {{ fallback_models: [azure/gpt4o-eu], default_strategy: same_provider }}
          - model: azure/gpt4o-eu
            base_url: "http://127.0.0.1:{deployment.port}/openai/deployments/gpt4o?api-version=2024-10-21"
            key_header: api-key
            access_key: azure-key-dep-0002
    """)
    c = client()
    for _ in range(3):
        got = c.chat.completions.create(model="azure/gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert got.choices[0].message.content == "from azure"
    # retry-after-ms blocked the v1 target: one 429, then straight to the other.
    assert (v1.calls, deployment.calls) == (1, 3)
    assert v1.problems + deployment.problems == []
    # x-ms-retry-after-ms blocks the other: the error says how long.
    deployment.script = [Reply(status=429, headers={"x-ms-retry-after-ms": "20000"}, body={"error": {"message": "l"}})]
    with pytest.raises(openai.RateLimitError) as caught:
        c.chat.completions.create(model="azure/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert 15 <= int(caught.value.response.headers["retry-after"]) <= 20, caught.value.response.headers
    assert (v1.calls, deployment.calls) == (1, 4)
    dump = requests.get(f"{ADMIN}/config_dump?include_eds", timeout=5).text
    assert "azure-key" not in dump and "azure-key" not in gateway.log()


def test_an_endpoint_no_target_serves_gets_a_4xx_and_reaches_no_provider(gateway, mocks):
    primary = mocks("/v1/chat/completions", "key-primary-0001", [Reply(body={})])
    fallback = mocks("/v1/chat/completions", "key-fallback-0002", [Reply(body={})])
    gateway.up(two_models(primary, fallback, extra="            endpoints: [chat_completions]").replace(
        "            retry_policy:", "            endpoints: [chat_completions]\n            retry_policy:", 1))
    with pytest.raises(openai.NotFoundError) as caught:
        client().embeddings.create(model="openai/gpt-4o", input="hi")
    assert caught.value.body["type"] == "endpoint_not_served"
    assert "does not serve /v1/embeddings" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError) as caught:
        client().completions.create(model="openai/gpt-4o", prompt="hi")
    assert "POST /v1/responses" in caught.value.body["message"]
    assert (primary.calls, fallback.calls) == (0, 0)


def test_azure_remaining_counts_block_before_any_429(gateway, mocks):
    ok = {"id": "chatcmpl-az", "object": "chat.completion", "created": 1, "model": "gpt-4o",
          "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]}
    # Azure reports what remains and no reset.
    low = mocks("/openai/v1/chat/completions", "azure-key-low-0001",
                [Reply(headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-remaining-tokens": "900"}, body=ok)],
                key_header="api-key")
    other = mocks("/openai/v1/chat/completions", "azure-key-oth-0002", [Reply(body=ok)], key_header="api-key")
    gateway.up(HEADER + f"""
          - model: azure/gpt-4o
            base_url: http://127.0.0.1:{low.port}/openai/v1
            key_header: api-key
            access_key: azure-key-low-0001
            default: true
            retry_policy:
              fallback_models: [azure/gpt-4o-b]
              default_strategy: same_provider
              rate_limit_headers: {{ min_remaining_requests: 0 }}
          - model: azure/gpt-4o-b
            base_url: http://127.0.0.1:{other.port}/openai/v1
            key_header: api-key
            access_key: azure-key-oth-0002
    """)
    c = client()
    for _ in range(3):
        c.chat.completions.create(model="azure/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    # The first answer said none remain: the next ones went elsewhere at once.
    assert (low.calls, other.calls) == (1, 2)
    assert low.problems + other.problems == []
