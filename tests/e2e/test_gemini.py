"""Google's Gemini API as a native target (`format: gemini`): chat
completions and Messages clients, whole and streamed, tools both ways, a
429 that states its wait only in the body, and the key kept out of sight.
The mock answers as the Gemini API does: it requires `x-goog-api-key`
(Google's 403 without one, its 400 `API_KEY_INVALID` for a wrong one), the
model and method in the path, and a body of the shape `generateContent` takes."""

import json
import re
import time

import anthropic
import openai
import pytest
import requests

from conftest import ADMIN, GATEWAY, planoai
from mock_provider import Provider, Reply
from test_gateway import HEADER

GEMINI_KEY = "AIzaSyTestGeminiKey0042abcdef"
WRONG_KEY = "AIzaSyWrongGeminiKey0099zyxwvu"
METHOD = re.compile(r"^/v1beta/models/([\w.-]+):(generateContent|streamGenerateContent\?alt=sse)$")
TOP_FIELDS = {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "safetySettings"}
CONFIG_FIELDS = {"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "seed",
                 "presencePenalty", "frequencyPenalty", "responseMimeType"}
PART_FIELDS = {"text", "inlineData", "functionCall", "functionResponse"}


def google_error(code, status, message, details=()):
    return Reply(status=code, body={"error": {"code": code, "message": message, "status": status, "details": list(details)}})


def invalid(message):
    return google_error(400, "INVALID_ARGUMENT", message)


def refuse_unlike_gemini(record):
    """Google's answer to a request the Gemini API would refuse, or None."""
    headers = record["headers"]
    key = headers.get("x-goog-api-key")
    if key is None:
        return google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.")
    if key != GEMINI_KEY:
        return google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
    if "authorization" in headers:
        return invalid("a Bearer header reached Google with an API key")
    if not METHOD.match(record["path"]):
        return google_error(404, "NOT_FOUND", f"no method at {record['path']}")
    body = json.loads(record["body"])
    for name in set(body) - TOP_FIELDS:
        return invalid(f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
    for name in set(body.get("generationConfig", {})) - CONFIG_FIELDS:
        return invalid(f'Invalid JSON payload received. Unknown name "{name}" at \'generation_config\': Cannot find field.')
    if not body.get("contents"):
        return invalid("* GenerateContentRequest.contents: contents is not specified")
    for turn in body["contents"]:
        if turn.get("role") not in ("user", "model") or not turn.get("parts"):
            return invalid(f"a content needs role user or model and parts: {turn}")
        for part in turn["parts"]:
            if len(set(part) & PART_FIELDS) != 1:
                return invalid(f"a part needs exactly one kind of data: {part}")
            if "functionResponse" in part and not (part["functionResponse"].get("name") and isinstance(part["functionResponse"].get("response"), dict)):
                return invalid("* GenerateContentRequest.contents.parts.function_response.name: Name cannot be empty.")
            if "functionCall" in part and not isinstance(part["functionCall"].get("args", {}), dict):
                return invalid("function_call.args must be an object")
    for tool in body.get("tools", []):
        if not all(f.get("name") for f in tool.get("functionDeclarations", [])):
            return invalid("* GenerateContentRequest.tools[0].function_declarations[0].name: Name cannot be empty.")
    if "systemInstruction" in body and not body["systemInstruction"].get("parts"):
        return invalid("systemInstruction needs parts")
    return None


def gemini(*replies):
    return Provider(*replies, refuse=refuse_unlike_gemini)


def answer(parts, finish="STOP", usage=(12, 5)):
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
            "usageMetadata": {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1], "totalTokenCount": sum(usage)},
            "modelVersion": "gemini-2.0-flash", "responseId": "resp-1"}


def chunk(parts, finish=None, usage=None):
    candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    data = {"candidates": [candidate], "modelVersion": "gemini-2.0-flash", "responseId": "resp-2"}
    if usage:
        data["usageMetadata"] = {"promptTokenCount": usage[0], "candidatesTokenCount": usage[1], "totalTokenCount": sum(usage)}
    return f"data: {json.dumps(data)}\r\n\r\n"


def text_stream(pieces, finish="STOP", usage=(5, 6)):
    return [chunk([{"text": p}]) for p in pieces[:-1]] + [chunk([{"text": pieces[-1]}], finish=finish, usage=usage)]


def gemini_entry(mock, model="gemini/gemini-2.0-flash", key=GEMINI_KEY, default=False):
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            access_key: {key}
            format: gemini{chr(10) + '            default: true' if default else ''}"""


def openai_entry(mock, model, fallbacks=None, attempts=2):
    policy = f"""
            retry_policy:
              fallback_models: [{', '.join(fallbacks)}]
              default_max_attempts: {attempts}""" if fallbacks else ""
    return f"""
          - model: {model}
            base_url: http://127.0.0.1:{mock.port}
            access_key: key-openai-0002
            default: true{policy}"""


def sent(mock, i=0):
    return json.loads(mock.requests[i]["body"])


@pytest.fixture
def claude():
    return anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)


@pytest.fixture
def gpt():
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="client-key", max_retries=0)


def test_an_openai_stream_fails_over_from_a_429_to_gemini_chunk_by_chunk(gateway, gpt):
    gap = 0.4
    pieces = [f"p{i} " for i in range(6)]
    primary = Provider(Reply(status=429, headers={"retry-after": "30"}, body={"error": {"type": "rate_limit_exceeded", "message": "slow"}}))
    fallback = gemini(Reply(stream=text_stream(pieces), gap=gap))
    try:
        gateway.up(HEADER + openai_entry(primary, "openai/gpt-x", ["gemini/gemini-2.0-flash"]) + gemini_entry(fallback))
        start = time.time()
        got = []
        for c in gpt.chat.completions.create(model="openai/gpt-x", stream=True, stream_options={"include_usage": True},
                                             messages=[{"role": "system", "content": "count"}, {"role": "user", "content": "go"}]):
            got.append((c, time.time() - start))
        texts = [(c.choices[0].delta.content, t) for c, t in got if c.choices and c.choices[0].delta.content]
        assert [t for t, _ in texts] == pieces
        # Each piece arrived about when Gemini sent it, not all at the end.
        assert texts[-1][1] - texts[0][1] > 5 * gap * 0.6, texts
        assert [c.choices[0].finish_reason for c, _ in got if c.choices and c.choices[0].finish_reason] == ["stop"]
        assert (got[-1][0].usage.prompt_tokens, got[-1][0].usage.completion_tokens) == (5, 6)
        assert primary.calls == 1 and fallback.calls == 1
        assert fallback.requests[0]["path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        body = sent(fallback)
        assert body["systemInstruction"] == {"parts": [{"text": "count"}]}
        assert body["contents"] == [{"role": "user", "parts": [{"text": "go"}]}]
    finally:
        primary.stop()
        fallback.stop()


def test_the_anthropic_sdk_is_served_by_gemini_whole_and_streamed(gateway, claude):
    gap = 0.4
    words = ["one ", "two ", "three ", "four "]
    mock = gemini(Reply(body=answer([{"text": "hello from gemini"}])),
                  Reply(stream=text_stream(words, finish="MAX_TOKENS", usage=(4, 4)), gap=gap))
    try:
        gateway.up(HEADER + gemini_entry(mock, default=True))
        msg = claude.messages.create(model="gemini/gemini-2.0-flash", max_tokens=64, system="be brief", extra_body={"top_k": 20},
                                     messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "hello from gemini"
        assert msg.stop_reason == "end_turn"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (12, 5)
        assert mock.requests[0]["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
        assert sent(mock)["generationConfig"] == {"maxOutputTokens": 64, "topK": 20}
        assert sent(mock)["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        start = time.time()
        seen = []
        with claude.messages.stream(model="gemini/gemini-2.0-flash", max_tokens=4,
                                    messages=[{"role": "user", "content": "count"}]) as s:
            for text in s.text_stream:
                seen.append((text, time.time() - start))
            final = s.get_final_message()
        assert [t for t, _ in seen] == words
        assert seen[-1][1] - seen[0][1] > 3 * gap * 0.6, seen
        assert final.stop_reason == "max_tokens"
        assert final.usage.output_tokens == 4
        assert mock.requests[1]["path"].endswith(":streamGenerateContent?alt=sse")
    finally:
        mock.stop()


def test_a_tool_round_trip_from_the_openai_sdk_through_gemini(gateway, gpt):
    call = {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}
    mock = gemini(Reply(body=answer([call])), Reply(body=answer([{"text": "sunny in Oslo"}])))
    tools = [{"type": "function", "function": {"name": "weather", "description": "the weather",
                                               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    try:
        gateway.up(HEADER + gemini_entry(mock, default=True))
        turns = [{"role": "user", "content": "weather in Oslo?"}]
        first = gpt.chat.completions.create(model="gemini/gemini-2.0-flash", tools=tools, tool_choice="required", messages=turns)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        tc = choice.message.tool_calls[0]
        assert (tc.function.name, json.loads(tc.function.arguments)) == ("weather", {"city": "Oslo"})
        assert tc.id  # Gemini sent none: the gateway made one
        assert sent(mock)["tools"] == [{"functionDeclarations": [{"name": "weather", "description": "the weather",
                                                                 "parametersJsonSchema": tools[0]["function"]["parameters"]}]}]
        assert sent(mock)["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
        turns += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": tc.id, "content": "sunny"}]
        final = gpt.chat.completions.create(model="gemini/gemini-2.0-flash", tools=tools, messages=turns)
        assert final.choices[0].message.content == "sunny in Oslo"
        contents = sent(mock, 1)["contents"]
        # The id Gemini never made is not sent back; the function's name is.
        assert contents[1] == {"role": "model", "parts": [call]}
        assert contents[2] == {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"output": "sunny"}}}]}
    finally:
        mock.stop()


def test_a_tool_round_trip_from_the_anthropic_sdk_through_gemini(gateway, claude):
    call = {"functionCall": {"id": "fc-7", "name": "weather", "args": {"city": "Oslo"}}}
    mock = gemini(Reply(body=answer([{"text": "Checking."}, call])), Reply(body=answer([{"text": "sunny in Oslo"}])))
    tools = [{"name": "weather", "description": "the weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    try:
        gateway.up(HEADER + gemini_entry(mock, default=True))
        turns = [{"role": "user", "content": "weather in Oslo?"}]
        first = claude.messages.create(model="gemini/gemini-2.0-flash", max_tokens=64, tools=tools, messages=turns)
        assert first.stop_reason == "tool_use"
        use = first.content[1]
        assert (use.type, use.id, use.name, use.input) == ("tool_use", "fc-7", "weather", {"city": "Oslo"})
        turns += [{"role": "assistant", "content": [b.model_dump() for b in first.content]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "fc-7", "content": "sunny"}]}]
        final = claude.messages.create(model="gemini/gemini-2.0-flash", max_tokens=64, tools=tools, messages=turns)
        assert final.content[0].text == "sunny in Oslo"
        contents = sent(mock, 1)["contents"]
        assert contents[1] == {"role": "model", "parts": [{"text": "Checking."}, call]}
        assert contents[2] == {"role": "user", "parts": [{"functionResponse": {"id": "fc-7", "name": "weather", "response": {"output": "sunny"}}}]}
    finally:
        mock.stop()


def test_geminis_429_blocks_it_for_the_retry_delay_its_body_states(gateway, gpt):
    exhausted = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                             [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}])
    primary = Provider(Reply(status=503, body={"error": {"type": "server_error", "message": "down"}}))
    limited = gemini(exhausted)
    last = Provider(Reply(body={"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-y",
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": "from the last"}, "finish_reason": "stop"}]}))
    try:
        gateway.up(HEADER + openai_entry(primary, "openai/gpt-x", ["gemini/gemini-2.0-flash", "mistral/gpt-y"], attempts=3)
                   + gemini_entry(limited) + f"""
          - model: mistral/gpt-y
            base_url: http://127.0.0.1:{last.port}
            access_key: key-openai-0003""")
        for _ in range(3):
            reply = gpt.chat.completions.create(model="openai/gpt-x", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content == "from the last"
        # No Retry-After header: the wait was read from RetryInfo, and held
        # (the last model's provider differs from the primary's, as the
        # default strategy, different_provider, wants once Gemini is skipped).
        assert limited.calls == 1, limited.requests
        assert (primary.calls, last.calls) == (3, 3)
    finally:
        primary.stop()
        limited.stop()
        last.stop()


def test_a_gemini_targets_first_429_blocks_it_for_the_retry_delay_its_body_states(gateway, gpt):
    # The first attempt's answer, streamed: its body is read before the retry.
    exhausted = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).",
                             [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}])
    limited = gemini(exhausted)
    last = Provider(Reply(stream=["data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-y",
                                                          "choices": [{"index": 0, "delta": {"content": "from the last"}, "finish_reason": "stop"}]}) + "\n\n",
                                  "data: [DONE]\n\n"]))
    try:
        gateway.up(HEADER + gemini_entry(limited, default=True) + f"""
            retry_policy:
              fallback_models: [mistral/gpt-y]
          - model: mistral/gpt-y
            base_url: http://127.0.0.1:{last.port}
            access_key: key-openai-0003""")
        for _ in range(3):
            pieces = gpt.chat.completions.create(model="gemini/gemini-2.0-flash", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}])
            assert "".join(c.choices[0].delta.content or "" for c in pieces if c.choices) == "from the last"
        assert (limited.calls, last.calls) == (1, 3), limited.requests
        status = planoai("status").stdout
        line = next((l for l in status.splitlines() if "model gemini/gemini-2.0-flash" in l), status)
        assert 20 <= int(re.search(r"for (\d+) more s", line).group(1)) <= 30, line
    finally:
        limited.stop()
        last.stop()


def test_a_wrong_gemini_key_is_refused_and_no_key_is_ever_shown(gateway, gpt):
    good = gemini(Reply(body=answer([{"text": "ok"}])))
    wrong = gemini()
    try:
        gateway.up(HEADER + gemini_entry(good, default=True) + gemini_entry(wrong, model="google/gemini-2.0-flash", key=WRONG_KEY))
        assert gpt.chat.completions.create(model="gemini/gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content == "ok"
        assert good.requests[0]["headers"]["x-goog-api-key"] == GEMINI_KEY
        with pytest.raises(openai.BadRequestError) as refused:
            gpt.chat.completions.create(model="google/gemini-2.0-flash", messages=[{"role": "user", "content": "hi"}])
        assert "API key not valid" in refused.value.body["message"]
        assert refused.value.body["type"] == "invalid_request_error"
        # What Gemini cannot carry is refused by name, before any call.
        with pytest.raises(openai.NotFoundError) as untranslatable:
            gpt.chat.completions.create(model="gemini/gemini-2.0-flash", logprobs=True, messages=[{"role": "user", "content": "hi"}])
        assert "`logprobs` has no Gemini API equivalent" in untranslatable.value.body["message"]
        assert good.calls == 1
        dump = requests.get(f"{ADMIN}/config_dump?include_eds", timeout=5).text
        shown = [dump, gateway.log(), *gateway.outputs]
        for key in (GEMINI_KEY, WRONG_KEY):
            assert not any(key in text for text in shown), key
    finally:
        good.stop()
        wrong.stop()


def test_a_gemini_stream_that_ends_without_its_finish_reason_ends_with_the_clients_error(gateway, gpt):
    mock = gemini(Reply(stream=[chunk([{"text": "a "}]), chunk([{"text": "b "}])], gap=0.1))
    try:
        gateway.up(HEADER + gemini_entry(mock, default=True))
        got = []
        with pytest.raises(openai.APIError) as broken:
            for c in gpt.chat.completions.create(model="gemini/gemini-2.0-flash", stream=True,
                                                 messages=[{"role": "user", "content": "go"}]):
                if c.choices and c.choices[0].delta.content:
                    got.append(c.choices[0].delta.content)
        # Gemini's stream has no terminator: without a finishReason it was cut.
        assert got == ["a ", "b "]
        assert "ended before the answer was complete" in str(broken.value)
    finally:
        mock.stop()
