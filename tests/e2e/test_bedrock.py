"""Amazon Bedrock as a target (`format: bedrock`, the Converse API): chat
completions and Messages clients, whole and streamed in AWS's binary event
stream, tools both ways, SigV4 signed by Envoy or a Bedrock API key.

The mock answers as Bedrock does. For SigV4 it recomputes the signature with
botocore's own signer (`SigV4Auth`, on an `AWSRequest` of the headers the
request says it signed and the body it carried) and answers a wrong one with
Bedrock's 403 `InvalidSignatureException`; it checks the body's hash against
`x-amz-content-sha256`, the credential scope (region, `bedrock`) and the
time. It requires the model in the path and a body of the shape Converse
takes. Its streams are frames made by the encoder here, which botocore's own
event-stream parser reads back (`test_the_frame_encoder_is_read_by_botocores_parser`)."""

import binascii
import datetime
import hashlib
import json
import re
import struct
import time

import anthropic
import openai
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.compat import HTTPHeaders
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from conftest import ADMIN, GATEWAY, planoai, stats
from mock_provider import Provider, Reply
from test_gateway import HEADER

ACCESS_KEY = "AKIAPLANOTEST0000042"
SECRET_KEY = "bedrockTestSecret/k3y+0042abcdefghijklmnopq"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEPlanoTestSessionToken0042"
WRONG_SECRET = "bedrockWrongSecret/k3y+0099zyxwvutsrqponmlk"
API_KEY = "ABSKQmVkcm9ja0FQSUtleS1wbGFuby10ZXN0LTAwNDI="
REGION = "us-east-1"
MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
MODEL = f"bedrock/{MODEL_ID}"
PATH = re.compile(r"^/model/([A-Za-z0-9._~%-]+)/(converse|converse-stream)$")
TOP_FIELDS = {"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
              "additionalModelRequestFields", "additionalModelResponseFieldPaths", "performanceConfig"}
CONFIG_FIELDS = {"maxTokens", "temperature", "topP", "stopSequences"}
BLOCK_FIELDS = {"text", "image", "toolUse", "toolResult", "document"}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN}


# --- AWS's event stream, as Bedrock frames it ---------------------------------

def frame(headers, payload):
    """One event-stream message: prelude (total, headers length, CRC32),
    string headers, payload, CRC32 of all before it."""
    encoded = b""
    for name, value in headers.items():
        n, v = name.encode(), value.encode()
        encoded += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    total = 16 + len(encoded) + len(payload)
    prelude = struct.pack(">II", total, len(encoded))
    message = prelude + struct.pack(">I", binascii.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def event(kind, payload):
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"}, payload)


def exception(kind, message):
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 {"message": message})


def text_frames(pieces, stop="end_turn", usage=(5, 6)):
    return ([event("messageStart", {"role": "assistant"})]
            + [event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces]
            + [event("contentBlockStop", {"contentBlockIndex": 0}),
               event("messageStop", {"stopReason": stop}),
               event("metadata", {"usage": {"inputTokens": usage[0], "outputTokens": usage[1], "totalTokens": sum(usage)},
                                  "metrics": {"latencyMs": 100}})])


def bad_crc(data):
    return data[:-1] + bytes([data[-1] ^ 0x55])


STREAM = {"Content-Type": "application/vnd.amazon.eventstream"}


def test_the_frame_encoder_is_read_by_botocores_parser():
    frames = text_frames(["Hel", "lo"]) + [exception("throttlingException", "slow")]
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(frames))
    read = list(buffer)
    assert [m.headers.get(":event-type") or m.headers[":exception-type"] for m in read] == [
        "messageStart", "contentBlockDelta", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
        "throttlingException"]
    assert json.loads(read[1].payload) == {"contentBlockIndex": 0, "delta": {"text": "Hel"}}
    assert read[-1].headers[":message-type"] == "exception"
    broken = EventStreamBuffer()
    broken.add_data(bad_crc(frames[0]))
    with pytest.raises(Exception, match="Checksum mismatch"):
        list(broken)


# --- the mock: Bedrock's checks --------------------------------------------------

def aws_error(status, kind, message):
    return Reply(status=status, headers={"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
                                         "x-amzn-requestid": "req-1"},
                 body={"message": message})


class AsSigned(SigV4Auth):
    """botocore's signer over exactly the headers the request lists in
    `SignedHeaders`, as AWS checks it: botocore's own client never signs
    `user-agent`, which another signer (Envoy's) may."""

    def headers_to_sign(self, request):
        signed = HTTPHeaders()
        for name, value in request.headers.items():
            signed[name.lower()] = value
        return signed


def check_sigv4(record):
    """Bedrock's answer to a request whose SigV4 signature is not right, or None."""
    headers = record["headers"]
    auth = headers.get("authorization", "")
    m = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?"
                     r"SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})", auth)
    if not m:
        return aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    key_id, day, region, service, signed, signature = m.groups()
    if (key_id, region, service) != (ACCESS_KEY, REGION, "bedrock"):
        return aws_error(403, "InvalidSignatureException", f"Credential should be scoped to a valid region and service: {m.group(0)}")
    if headers.get("x-amz-security-token") != SESSION_TOKEN or "x-amz-security-token" not in signed.split(";"):
        return aws_error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
    amz_date = headers.get("x-amz-date", "")
    at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if abs((datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()) > 300 or amz_date[:8] != day:
        return aws_error(403, "InvalidSignatureException", "Signature expired")
    # The payload is signed: its hash must be the body's, as sent.
    if headers.get("x-amz-content-sha256") != hashlib.sha256(record["body"]).hexdigest():
        return aws_error(403, "InvalidSignatureException", "The request body does not match its signed hash.")
    request = AWSRequest(method="POST", url=f"http://{headers['host']}{record['path']}", data=record["body"],
                         headers={name: headers[name] for name in signed.split(";")})
    signer = AsSigned(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    request.context["timestamp"] = amz_date
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if expected != signature:
        return aws_error(403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided.")
    return None


def check_converse(record):
    """Bedrock's 400 for a body Converse would refuse, or None."""
    if not PATH.match(record["path"]):
        return aws_error(404, "UnknownOperationException", f"no operation at {record['path']}")
    body = json.loads(record["body"])
    invalid = lambda m: aws_error(400, "ValidationException", m)
    for name in set(body) - TOP_FIELDS:
        return invalid(f"Malformed input request: extraneous key [{name}] is not permitted")
    for name in set(body.get("inferenceConfig", {})) - CONFIG_FIELDS:
        return invalid(f"Malformed input request: extraneous key [inferenceConfig.{name}] is not permitted")
    turns = body.get("messages") or []
    if not turns or turns[0]["role"] != "user":
        return invalid("A conversation must start with a user message.")
    used = set()
    for i, turn in enumerate(turns):
        if turn["role"] not in ("user", "assistant") or (i and turns[i - 1]["role"] == turn["role"]):
            return invalid("A conversation must alternate between user and assistant roles.")
        for block in turn.get("content") or [None]:
            if not isinstance(block, dict) or len(set(block) & BLOCK_FIELDS) != 1:
                return invalid(f"a content block needs exactly one member: {block}")
            if "toolUse" in block:
                used.add(block["toolUse"]["toolUseId"])
                if not isinstance(block["toolUse"].get("input"), dict):
                    return invalid("toolUse.input must be an object")
            if "toolResult" in block and block["toolResult"]["toolUseId"] not in used:
                return invalid("The toolResult blocks must match the toolUse ids of the previous turn.")
    if used and "toolConfig" not in body:
        return invalid("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    for tool in body.get("toolConfig", {}).get("tools", []):
        if not tool["toolSpec"].get("name") or "json" not in tool["toolSpec"].get("inputSchema", {}):
            return invalid("a toolSpec needs a name and inputSchema.json")
    return None


def bedrock_sigv4(record):
    return check_sigv4(record) or check_converse(record)


def bedrock_key(record):
    if record["headers"].get("authorization") != f"Bearer {API_KEY}":
        return aws_error(403, "AccessDeniedException", "Authentication failed: Please make sure your API Key is valid.")
    return check_converse(record)


def bedrock(*replies, key=False):
    return Provider(*replies, refuse=bedrock_key if key else bedrock_sigv4)


def answer(blocks, stop="end_turn", usage=(12, 5)):
    return {"output": {"message": {"role": "assistant", "content": blocks}}, "stopReason": stop,
            "usage": {"inputTokens": usage[0], "outputTokens": usage[1], "totalTokens": sum(usage)},
            "metrics": {"latencyMs": 210}}


def bedrock_entry(mock, model=MODEL, key=None, default=False, policy=""):
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            format: bedrock
            region: {REGION}{chr(10) + '            access_key: ' + key if key else ''}{chr(10) + '            default: true' if default else ''}{policy}"""


def openai_entry(mock, model, fallbacks=None, default=True):
    policy = f"""
            retry_policy:
              fallback_models: [{', '.join(fallbacks)}]
              default_max_attempts: 2""" if fallbacks else ""
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            access_key: key-openai-0002{chr(10) + '            default: true' if default else ''}{policy}"""


CHAT_OK = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-y",
           "choices": [{"index": 0, "message": {"role": "assistant", "content": "from openai"}, "finish_reason": "stop"}]}


def sent(mock, i=0):
    return json.loads(mock.requests[i]["body"])


@pytest.fixture
def claude():
    return anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)


@pytest.fixture
def gpt():
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="client-key", max_retries=0)


def assert_nothing_secret_shown(gateway):
    dump = requests.get(f"{ADMIN}/config_dump?include_eds", timeout=5).text
    shown = [dump, gateway.log(), *gateway.outputs]
    for secret in (SECRET_KEY, WRONG_SECRET, SESSION_TOKEN, API_KEY):
        assert not any(secret in text for text in shown), secret[:6]


# --- the cases ----------------------------------------------------------------------

def test_an_openai_stream_fails_over_from_a_429_to_bedrocks_event_stream_frame_by_frame(gateway, gpt):
    gap = 0.4
    pieces = [f"p{i} " for i in range(6)]
    primary = Provider(Reply(status=429, headers={"retry-after": "30"}, body={"error": {"type": "rate_limit_exceeded", "message": "slow"}}))
    frames = text_frames(pieces)
    # Each text frame is sent `gap` after the one before.
    fallback = bedrock(Reply(stream=frames, headers=STREAM, gap=[0.0] + [gap] * 6 + [0.0] * 3))
    try:
        gateway.up(HEADER + openai_entry(primary, "openai/gpt-x", [MODEL]) + bedrock_entry(fallback), extra_env=CREDENTIALS)
        start = time.time()
        got = []
        for c in gpt.chat.completions.create(model="openai/gpt-x", stream=True, stream_options={"include_usage": True},
                                             max_tokens=99, temperature=0.3, stop=["END"],
                                             messages=[{"role": "system", "content": "count"}, {"role": "user", "content": "go"}]):
            got.append((c, time.time() - start))
        texts = [(c.choices[0].delta.content, t) for c, t in got if c.choices and c.choices[0].delta.content]
        assert [t for t, _ in texts] == pieces
        # Each piece arrived about when Bedrock sent it, not all at the end.
        assert texts[-1][1] - texts[0][1] > 5 * gap * 0.6, texts
        gaps = [b - a for (_, a), (_, b) in zip(texts, texts[1:])]
        assert min(gaps) > gap * 0.5, gaps
        assert [c.choices[0].finish_reason for c, _ in got if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert (got[-1][0].usage.prompt_tokens, got[-1][0].usage.completion_tokens) == (5, 6)
        assert primary.calls == 1 and fallback.calls == 1
        # The model id is one path segment, `:` encoded as AWS's SDKs send it.
        assert fallback.requests[0]["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream"
        body = sent(fallback)
        assert body["system"] == [{"text": "count"}]
        assert body["messages"] == [{"role": "user", "content": [{"text": "go"}]}]
        assert body["inferenceConfig"] == {"maxTokens": 99, "temperature": 0.3, "stopSequences": ["END"]}
        # Signed by Envoy (the mock checked it with botocore), the client's key gone.
        assert fallback.requests[0]["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + ACCESS_KEY)
        assert_nothing_secret_shown(gateway)
    finally:
        primary.stop()
        fallback.stop()


def test_bedrocks_exceptions_fail_over_with_their_kinds(gateway, gpt):
    throttled = bedrock(aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again."))
    # Bedrock's quota exception is a 400: a failure only where a rule lists 400.
    spent = bedrock(aws_error(400, "ServiceQuotaExceededException", "Your account has exceeded its quota."))
    last = Provider(Reply(body=CHAT_OK))
    try:
        gateway.up(HEADER + bedrock_entry(throttled, default=True, policy=f"""
            retry_policy:
              fallback_models: [openai/gpt-y]""") + bedrock_entry(spent, model="bedrock/meta.llama3-1-70b-instruct-v1:0", policy=f"""
            retry_policy:
              fallback_models: [openai/gpt-y]
              on_status_codes:
                - codes: [400]
                  strategy: different_provider
                  max_attempts: 1""") + openai_entry(last, "openai/gpt-y", default=False), extra_env=CREDENTIALS)
        reply = gpt.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "from openai"
        assert (throttled.calls, last.calls) == (1, 1)
        assert throttled.requests[0]["path"].endswith("/converse")
        # The spent quota named in `x-amzn-errortype` blocks the model.
        reply = gpt.chat.completions.create(model="bedrock/meta.llama3-1-70b-instruct-v1:0", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "from openai"
        assert (spent.calls, last.calls) == (1, 2)
        counted = stats()
        assert counted.get("wasmcustom.plano.blocks.quota_spent") == 1, counted
        line = next(l for l in planoai("status").stdout.splitlines() if "llama3-1-70b" in l)
        assert "quota spent until" in line, line
    finally:
        throttled.stop()
        spent.stop()
        last.stop()


def test_a_wrong_secret_key_is_refused_then_fails_over_never_hangs_and_nothing_secret_is_shown(gateway, gpt):
    refused = bedrock(Reply(body=answer([{"text": "never"}])))
    last = Provider(Reply(body=CHAT_OK))
    try:
        gateway.up(HEADER + bedrock_entry(refused, default=True, policy=f"""
            retry_policy:
              fallback_models: [openai/gpt-y]
              on_status_codes:
                - codes: [403]
                  strategy: different_provider
                  max_attempts: 1""") + openai_entry(last, "openai/gpt-y", default=False),
                   extra_env=dict(CREDENTIALS, AWS_SECRET_ACCESS_KEY=WRONG_SECRET))
        start = time.time()
        reply = gpt.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], timeout=20)
        assert reply.choices[0].message.content == "from openai"
        assert time.time() - start < 5
        assert (refused.calls, last.calls) == (1, 1)
        # Bedrock refused the signature made with the wrong secret.
        assert refused.requests[0]["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")
        # No policy for 403 on the other way round: the client gets Bedrock's refusal in its own shape.
        assert_nothing_secret_shown(gateway)
    finally:
        refused.stop()
        last.stop()


def test_a_bad_crc_or_a_cut_frame_ends_the_stream_with_the_clients_error_event(gateway, gpt):
    frames = text_frames(["a ", "b ", "c "])
    mock = bedrock(Reply(stream=frames[:3] + [bad_crc(frames[3])] + frames[4:], headers=STREAM, gap=0.1),
                   Reply(stream=frames[:3] + [frames[3][:20]], headers=STREAM, gap=0.1, cut=True),
                   Reply(stream=frames[:2] + [exception("modelStreamErrorException", "the model broke")], headers=STREAM, gap=0.1))
    try:
        gateway.up(HEADER + bedrock_entry(mock, default=True), extra_env=CREDENTIALS)
        for why in ("wrong message CRC", "ended inside an event-stream frame", "the model broke"):
            got = []
            with pytest.raises(openai.APIError) as broken:
                for c in gpt.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": "go"}],
                                                     timeout=20):
                    if c.choices and c.choices[0].delta.content:
                        got.append(c.choices[0].delta.content)
            assert got == ["a ", "b "][: len(got)] and got, got
            assert why in str(broken.value), str(broken.value)
        assert mock.calls == 3
    finally:
        mock.stop()


def test_a_broken_frame_before_any_output_fails_over(gateway, gpt):
    frames = text_frames(["never"])
    # The provider goes on for 6 s after the broken frame: the gateway does not wait for it.
    broken = bedrock(Reply(stream=[frames[0], bad_crc(frames[1])] + frames[2:], headers=STREAM, gap=[0.0, 6.0, 0.0, 0.0, 0.0]))
    last = Provider(Reply(stream=["data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-y",
                                                          "choices": [{"index": 0, "delta": {"content": "from openai"}, "finish_reason": "stop"}]}) + "\n\n",
                                  "data: [DONE]\n\n"]))
    try:
        gateway.up(HEADER + bedrock_entry(broken, default=True, policy=f"""
            retry_policy:
              fallback_models: [openai/gpt-y]""") + openai_entry(last, "openai/gpt-y", default=False), extra_env=CREDENTIALS)
        start = time.time()
        pieces = gpt.chat.completions.create(model=MODEL, stream=True, messages=[{"role": "user", "content": "hi"}], timeout=20)
        assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "from openai"
        assert time.time() - start < 3
        assert (broken.calls, last.calls) == (1, 1)
    finally:
        broken.stop()
        last.stop()


def test_a_throttling_exception_frame_before_any_output_fails_over_for_a_messages_client(gateway, claude):
    throttled = bedrock(Reply(stream=[event("messageStart", {"role": "assistant"}),
                                      exception("throttlingException", "Too many tokens, please wait before trying again.")],
                              headers=STREAM, gap=[0.0, 6.0]))
    last = bedrock(Reply(stream=text_frames(["served ", "by the other"]), headers=STREAM))
    # Another provider name: the default strategy fails over to a different provider.
    other = "aws/anthropic.claude-3-haiku-20240307-v1:0"
    try:
        gateway.up(HEADER + bedrock_entry(throttled, default=True, policy=f"""
            retry_policy:
              fallback_models: [{other}]""") + bedrock_entry(last, model=other), extra_env=CREDENTIALS)
        start = time.time()
        with claude.messages.stream(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
            text = "".join(s.text_stream)
        assert text == "served by the other"
        # The exception frame failed the attempt: its stream's end was not waited for.
        assert time.time() - start < 3
        assert (throttled.calls, last.calls) == (1, 1)
        assert last.requests[0]["path"] == "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
    finally:
        throttled.stop()
        last.stop()


def test_a_tool_round_trip_from_the_openai_sdk_through_bedrock_streamed(gateway, gpt):
    call = [event("messageStart", {"role": "assistant"}),
            event("contentBlockStart", {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "tooluse_7", "name": "weather"}}}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "{\"city\":"}}}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": "\"Oslo\"}"}}}),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event("messageStop", {"stopReason": "tool_use"}),
            event("metadata", {"usage": {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}, "metrics": {"latencyMs": 1}})]
    mock = bedrock(Reply(stream=call, headers=STREAM), Reply(body=answer([{"text": "sunny in Oslo"}])))
    tools = [{"type": "function", "function": {"name": "weather", "description": "the weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    try:
        gateway.up(HEADER + bedrock_entry(mock, default=True), extra_env=CREDENTIALS)
        turns = [{"role": "user", "content": "weather in Oslo?"}]
        calls = {}
        finish = None
        for c in gpt.chat.completions.create(model=MODEL, tools=tools, tool_choice="required", messages=turns, stream=True):
            for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                slot["id"] = tc.id or slot["id"]
                slot["name"] = (tc.function.name if tc.function else None) or slot["name"]
                slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
            if c.choices and c.choices[0].finish_reason:
                finish = c.choices[0].finish_reason
        assert finish == "tool_calls"
        assert calls == {0: {"id": "tooluse_7", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
        assert sent(mock)["toolConfig"] == {"tools": [{"toolSpec": {"name": "weather", "description": "the weather",
                                                                    "inputSchema": {"json": tools[0]["function"]["parameters"]}}}],
                                            "toolChoice": {"any": {}}}
        turns += [{"role": "assistant", "content": None, "tool_calls": [
                      {"id": "tooluse_7", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                  {"role": "tool", "tool_call_id": "tooluse_7", "content": "sunny"}]
        final = gpt.chat.completions.create(model=MODEL, tools=tools, messages=turns)
        assert final.choices[0].message.content == "sunny in Oslo"
        assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (12, 5)
        msgs = sent(mock, 1)["messages"]
        assert msgs[1] == {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_7", "name": "weather", "input": {"city": "Oslo"}}}]}
        assert msgs[2] == {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_7", "content": [{"text": "sunny"}]}}]}
    finally:
        mock.stop()


def test_a_tool_round_trip_from_the_anthropic_sdk_through_bedrock_with_an_api_key(gateway, claude):
    use = {"toolUse": {"toolUseId": "tooluse_9", "name": "weather", "input": {"city": "Oslo"}}}
    mock = bedrock(Reply(body=answer([{"text": "Checking."}, use], stop="tool_use")),
                   Reply(stream=text_frames(["sunny ", "in Oslo"], usage=(20, 3)), headers=STREAM), key=True)
    tools = [{"name": "weather", "description": "the weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    try:
        gateway.up(HEADER + bedrock_entry(mock, key=API_KEY, default=True))
        turns = [{"role": "user", "content": "weather in Oslo?"}]
        first = claude.messages.create(model=MODEL, max_tokens=64, tools=tools, messages=turns)
        assert first.stop_reason == "tool_use"
        block = first.content[1]
        assert (block.type, block.id, block.name, block.input) == ("tool_use", "tooluse_9", "weather", {"city": "Oslo"})
        assert first.model == MODEL_ID
        # A Bedrock API key goes as a bearer token, and nothing is signed.
        assert mock.requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
        assert "x-amz-date" not in mock.requests[0]["headers"]
        turns += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tooluse_9", "content": "sunny"}]}]
        with claude.messages.stream(model=MODEL, max_tokens=64, tools=tools, messages=turns) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == "sunny in Oslo"
        assert (final.stop_reason, final.usage.output_tokens) == ("end_turn", 3)
        msgs = sent(mock, 1)["messages"]
        assert msgs[1] == {"role": "assistant", "content": [{"text": "Checking."}, use]}
        assert msgs[2] == {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_9", "content": [{"text": "sunny"}]}}]}
        assert_nothing_secret_shown(gateway)
    finally:
        mock.stop()
