"""Google Vertex AI as a target: Claude on Vertex (`:rawPredict`,
`:streamRawPredict`, the Messages body with `anthropic_version:
vertex-2023-10-16` and no `model`) and Gemini on Vertex
(`:generateContent`, `:streamGenerateContent?alt=sse`), each request with an
OAuth2 access token the gateway minted from a service account key.

The token endpoint is a loopback mock of Google's: it checks the JWT-bearer
grant with google-auth (the signature against the test key's public half,
the audience, the issuer, the scope) and issues short-lived tokens. The
Vertex mock accepts only a token it issued that has not expired."""

import json
import os
import re
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import anthropic
import openai
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt

from conftest import ADMIN, GATEWAY, eventually
from mock_provider import MockServer, Provider, Reply
from test_gateway import HEADER
from test_messages import message, native
from test_gemini import answer, google_error, text_stream

PROJECT = "proj-e2e"
REGION = "us-east5"
CLIENT_EMAIL = "plano-e2e@proj-e2e.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PATH = re.compile(rf"^/v1/projects/{PROJECT}/locations/{REGION}/publishers/(anthropic|google)/models/([\w.@-]+):"
                  r"(rawPredict|streamRawPredict|generateContent|streamGenerateContent\?alt=sse)$")


class TokenEndpoint:
    """Google's OAuth2 token endpoint for one service account: the grant is
    checked with google-auth; `mode` is "ok", or "refuse" (Google's 400
    invalid_grant), or "down" (the port closed)."""

    def __init__(self, public_pem, expires_in=3600):
        self.public_pem = public_pem
        self.expires_in = expires_in
        self.mode = "ok"
        self.grants = []  # (time, claims) of every good grant
        self.refused = []  # why a grant was bad
        self.issued = {}  # token -> expiry (epoch seconds)
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                status, body = endpoint.grant(self.path, self.headers, form)
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                # The metadata server's token for the instance's service account.
                status, body = endpoint.metadata(self.path, self.headers)
                out = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = MockServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.uri = f"http://127.0.0.1:{self.port}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def grant(self, path, headers, form):
        if self.mode == "refuse":
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        bad = None
        claims = None
        if path != "/token":
            bad = f"path {path}"
        elif headers.get("Content-Type") != "application/x-www-form-urlencoded":
            bad = f"content-type {headers.get('Content-Type')}"
        elif form.get("grant_type") != [GRANT]:
            bad = f"grant_type {form.get('grant_type')}"
        else:
            try:
                claims = jwt.decode(form["assertion"][0], certs=self.public_pem, audience=self.uri)
            except Exception as e:  # google-auth's own verdict on the signature and claims
                bad = f"jwt: {e}"
            if claims and (claims.get("iss") != CLIENT_EMAIL or claims.get("scope") != SCOPE
                           or claims["exp"] - claims["iat"] > 3600):
                bad = f"claims {claims}"
        if bad:
            self.refused.append(bad)
            return 400, {"error": "invalid_grant", "error_description": bad}
        token = "ya29.e2e-" + secrets.token_urlsafe(24)
        with self.lock:
            self.grants.append((time.time(), claims))
            self.issued[token] = time.time() + self.expires_in
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def metadata(self, path, headers):
        if path != "/computeMetadata/v1/instance/service-accounts/default/token":
            return 404, {"error": f"no {path}"}
        if headers.get("Metadata-Flavor") != "Google":
            self.refused.append("no Metadata-Flavor: Google")
            return 403, {"error": "Missing required header: Metadata-Flavor"}
        token = "ya29.metadata-" + secrets.token_urlsafe(24)
        with self.lock:
            self.grants.append((time.time(), {"metadata": True}))
            self.issued[token] = time.time() + self.expires_in
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}

    def valid(self, token):
        return self.issued.get(token, 0) > time.time()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def make_key(tmp_path, token_uri):
    """A service account key file for a key made here, as Google writes them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    path = tmp_path / "vertex-sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "0123abcd",
        "private_key": pem, "client_email": CLIENT_EMAIL, "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri,
    }))
    return path, pem, public


def refuse_unlike_vertex(tokens):
    def refuse(record):
        headers = record["headers"]
        bearer = headers.get("authorization", "")
        if not (bearer.startswith("Bearer ") and tokens.valid(bearer[len("Bearer "):])):
            return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                                "Expected OAuth 2 access token, login cookie or other valid authentication credential.")
        for header in ("x-api-key", "x-goog-api-key"):
            if header in headers:
                return f"{header} reached Vertex AI"
        m = PATH.match(record["path"])
        if not m:
            return google_error(404, "NOT_FOUND", f"no method at {record['path']}")
        publisher, _, method = m.groups()
        body = json.loads(record["body"])
        if publisher == "anthropic":
            if method not in ("rawPredict", "streamRawPredict"):
                return f"Claude has no {method}"
            if body.get("anthropic_version") != "vertex-2023-10-16":
                return f"anthropic_version: {body.get('anthropic_version')}"
            if "model" in body:
                return "model: Extra inputs are not permitted"
            if bool(body.get("stream")) != (method == "streamRawPredict"):
                return "stream does not match the method"
            if "max_tokens" not in body:
                return "max_tokens: Field required"
        else:
            if not method.startswith(("generateContent", "streamGenerateContent")):
                return f"Gemini has no {method}"
            if not body.get("contents"):
                return "contents is not specified"
        return None
    return refuse


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def claude_stream(pieces):
    out = [sse("message_start", {"type": "message_start", "message": {
        "id": "msg_vrtx_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4@20250514",
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 1}}}),
           sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})]
    out += [sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}})
            for p in pieces]
    out += [sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": len(pieces)}}),
            sse("message_stop", {"type": "message_stop"})]
    return out


def vertex_entry(model, mock, key_file, fmt, extra=""):
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            format: {fmt}
            vertex:
              project: {PROJECT}
              region: {REGION}
              credentials_file: {key_file}{extra}"""


def openai_entry(mock, model="openai/gpt-x", default=False):
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            access_key: key-openai-0002{chr(10) + '            default: true' if default else ''}"""


FALLBACK = Reply(body={"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-x",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the fallback"},
                                    "finish_reason": "stop"}]})


@pytest.fixture
def tokens(tmp_path):
    holder = {}

    def make(expires_in=3600):
        # The key's token_uri must name the endpoint: its port comes first.
        endpoint = TokenEndpoint(None, expires_in)
        path, pem, public = make_key(tmp_path, endpoint.uri)
        endpoint.public_pem = public
        holder["t"] = endpoint
        return endpoint, path, pem

    yield make
    if "t" in holder:
        holder["t"].stop()


@pytest.fixture
def claude():
    return anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)


@pytest.fixture
def gpt():
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="client-key", max_retries=0)


def minted(endpoint, n=1, seconds=10):
    deadline = time.time() + seconds
    while len(endpoint.grants) < n and time.time() < deadline:
        time.sleep(0.05)
    assert len(endpoint.grants) >= n, endpoint.refused
    time.sleep(0.1)  # the slot is written as the answer is read


def test_a_messages_stream_fails_over_from_a_429_at_anthropic_to_claude_on_vertex_piece_by_piece(gateway, tokens, claude):
    endpoint, key_file, _ = tokens()
    gap = 0.4
    pieces = [f"v{i} " for i in range(6)]
    primary = native(Reply(status=429, headers={"retry-after": "30"},
                           body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}))
    vertex = Provider(Reply(stream=claude_stream(pieces), gap=gap),
                      Reply(body=message("whole from vertex")), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-native-0001
            format: anthropic
            default: true
            retry_policy:
              fallback_models: [vertex_ai/claude-sonnet-4@20250514]""" + vertex_entry("vertex_ai/claude-sonnet-4@20250514", vertex, key_file, "anthropic"))
        minted(endpoint)
        start = time.time()
        seen = []
        with claude.messages.stream(model="anthropic/claude-x", max_tokens=6,
                                    messages=[{"role": "user", "content": "count"}]) as s:
            for text in s.text_stream:
                seen.append((text, time.time() - start))
            final = s.get_final_message()
        assert [t for t, _ in seen] == pieces
        # Each piece arrived about when Vertex sent it, not all at the end.
        assert seen[-1][1] - seen[0][1] > 5 * gap * 0.6, seen
        assert final.stop_reason == "end_turn"
        assert primary.calls == 1 and vertex.calls == 1
        assert vertex.requests[0]["path"].endswith("/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict")
        body = json.loads(vertex.requests[0]["body"])
        assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
        assert body["messages"] == [{"role": "user", "content": "count"}]
        # Not streamed: `:rawPredict`, straight to Vertex.
        msg = claude.messages.create(model="vertex_ai/claude-sonnet-4@20250514", max_tokens=8,
                                     messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "whole from vertex"
        assert vertex.requests[1]["path"].endswith(":rawPredict")
        # One token served both requests.
        assert len(endpoint.grants) == 1
    finally:
        primary.stop()
        vertex.stop()


def test_the_openai_sdk_chats_with_gemini_on_vertex_whole_and_streamed(gateway, tokens, gpt):
    endpoint, key_file, _ = tokens()
    gap = 0.3
    pieces = ["one ", "two ", "three "]
    vertex = Provider(Reply(body=answer([{"text": "hello from vertex gemini"}])),
                      Reply(stream=text_stream(pieces), gap=gap), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + vertex_entry("vertex_ai/gemini-2.5-flash", vertex, key_file, "gemini", "\n            default: true"))
        minted(endpoint)
        reply = gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash",
                                            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "hello from vertex gemini"
        assert vertex.requests[0]["path"] == f"/v1/projects/{PROJECT}/locations/{REGION}/publishers/google/models/gemini-2.5-flash:generateContent"
        assert json.loads(vertex.requests[0]["body"])["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        start = time.time()
        got = []
        for c in gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", stream=True,
                                             messages=[{"role": "user", "content": "count"}]):
            if c.choices and c.choices[0].delta.content:
                got.append((c.choices[0].delta.content, time.time() - start))
        assert [t for t, _ in got] == pieces
        assert got[-1][1] - got[0][1] > 2 * gap * 0.6, got
        assert vertex.requests[1]["path"].endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    finally:
        vertex.stop()


def test_vertex_resource_exhausted_with_retry_info_fails_over_and_blocks_it(gateway, tokens, gpt, providers):
    endpoint, key_file, _ = tokens()
    exhausted = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model.",
                             [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}])
    vertex = Provider(exhausted, refuse=refuse_unlike_vertex(endpoint))
    fallback = providers(FALLBACK)
    try:
        gateway.up(HEADER + vertex_entry("vertex_ai/gemini-2.5-flash", vertex, key_file, "gemini", """
            default: true
            retry_policy:
              fallback_models: [openai/gpt-x]""") + openai_entry(fallback))
        minted(endpoint)
        for _ in range(3):
            reply = gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "from the fallback"
        # RetryInfo's 30 s held it: tried once, then skipped.
        assert vertex.calls == 1 and fallback.calls == 3
    finally:
        vertex.stop()


@pytest.mark.parametrize("mode", ["down", "refuse"])
def test_a_token_endpoint_down_or_refusing_fails_over_without_a_hang(gateway, tokens, providers, mode):
    endpoint, key_file, _ = tokens()
    if mode == "down":
        endpoint.stop()
    else:
        endpoint.mode = "refuse"
    vertex = Provider(Reply(body=answer([{"text": "must not be reached"}])), refuse=refuse_unlike_vertex(endpoint))
    fallback = providers(FALLBACK)
    try:
        gateway.up(HEADER + vertex_entry("vertex_ai/gemini-2.5-flash", vertex, key_file, "gemini", """
            default: true
            retry_policy:
              fallback_models: [openai/gpt-x]""") + openai_entry(fallback))
        time.sleep(1.0)  # the minter has tried and failed by now
        for _ in range(2):
            start = time.time()
            resp = requests.post(f"{GATEWAY}/v1/chat/completions", timeout=10,
                                 json={"model": "vertex_ai/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
            took = time.time() - start
            assert resp.status_code == 200, resp.text
            assert resp.json()["choices"][0]["message"]["content"] == "from the fallback"
            assert took < 1.0, took
        assert vertex.calls == 0 and fallback.calls == 2
        why = "the token endpoint answered 400 (invalid_grant)" if mode == "refuse" else "the token endpoint answered 503"
        assert eventually(lambda: why in gateway.log()), gateway.log()[-3000:]
    finally:
        vertex.stop()


def test_a_token_is_minted_once_for_many_requests_and_again_before_it_expires(gateway, tokens, gpt):
    endpoint, key_file, _ = tokens(expires_in=4)
    vertex = Provider(Reply(body=answer([{"text": "ok"}])), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + vertex_entry("vertex_ai/gemini-2.5-flash", vertex, key_file, "gemini", "\n            default: true"))
        minted(endpoint)
        for _ in range(4):
            gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        assert len(endpoint.grants) == 1
        first = {r["headers"]["authorization"] for r in vertex.requests}
        assert len(first) == 1
        # 4 s tokens: the next is minted a second before the first expires.
        time.sleep(4.5)
        assert 2 <= len(endpoint.grants) <= 3, [t for t, _ in endpoint.grants]
        gaps = [b[0] - a[0] for a, b in zip(endpoint.grants, endpoint.grants[1:])]
        assert all(2.5 < g < 3.5 for g in gaps), gaps
        gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        assert vertex.requests[-1]["headers"]["authorization"] not in first
        assert vertex.calls == 5  # every request had a token the mock took
    finally:
        vertex.stop()


def test_no_key_or_token_in_config_dump_the_log_or_the_output(gateway, tokens, gpt):
    endpoint, key_file, pem = tokens()
    vertex = Provider(Reply(body=answer([{"text": "ok"}])), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + vertex_entry("vertex_ai/gemini-2.5-flash", vertex, key_file, "gemini", "\n            default: true"))
        minted(endpoint)
        gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        token = vertex.requests[0]["headers"]["authorization"].split()[1]
        key_body = "".join(pem.strip().splitlines()[1:-1])
        dump = requests.get(f"{ADMIN}/config_dump?include_eds", timeout=5).text
        assert "PLANO_GOOGLE_CREDENTIAL_0" in dump  # the variable's name, not its content
        places = {"config_dump": dump, "log": gateway.log(), "output": "".join(gateway.outputs)}
        for where, text in places.items():
            flat = text.replace("\\n", "").replace("\n", "")
            assert token not in text, where
            assert key_body[:64] not in flat and key_body[-64:] not in flat, where
            assert "PRIVATE KEY" not in text, where
    finally:
        vertex.stop()


def test_without_a_key_file_tokens_come_from_the_metadata_server(gateway, tokens, gpt):
    endpoint, _, _ = tokens()
    vertex = Provider(Reply(body=answer([{"text": "via workload identity"}])), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + f"""
          - model: vertex_ai/gemini-2.5-flash
            base_url: http://127.0.0.1:{vertex.port}
            format: gemini
            default: true
            vertex:
              project: {PROJECT}
              region: {REGION}""", extra_env={"GCE_METADATA_HOST": f"127.0.0.1:{endpoint.port}"})
        minted(endpoint)
        reply = gpt.chat.completions.create(model="vertex_ai/gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "via workload identity"
        assert vertex.requests[0]["headers"]["authorization"].startswith("Bearer ya29.metadata-")
        assert endpoint.grants[0][1] == {"metadata": True} and not endpoint.refused
    finally:
        vertex.stop()


def test_a_chat_retry_dispatched_to_claude_on_vertex_is_translated_and_carries_the_token(gateway, tokens, gpt, providers):
    endpoint, key_file, _ = tokens()
    primary = providers(Reply(status=503, body={"error": {"type": "server_error", "message": "down"}}))
    vertex = Provider(Reply(body=message("claude on vertex, after a retry")), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + openai_entry(primary, default=True) + """
            retry_policy:
              fallback_models: [vertex_ai/claude-sonnet-4@20250514]""" + vertex_entry("vertex_ai/claude-sonnet-4@20250514", vertex, key_file, "anthropic"))
        minted(endpoint)
        reply = gpt.chat.completions.create(model="openai/gpt-x", max_tokens=16,
                                            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "claude on vertex, after a retry"
        assert primary.calls == 1 and vertex.calls == 1
        assert vertex.requests[0]["path"].endswith("/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict")
        body = json.loads(vertex.requests[0]["body"])
        assert body["system"] == "be brief" and body["max_tokens"] == 16
        assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
        assert "anthropic-version" not in vertex.requests[0]["headers"]
    finally:
        vertex.stop()
