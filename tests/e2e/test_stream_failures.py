"""A stream's own failures (issue 27): an error event before any output fails
the attempt and the request fails over; after output, a provider that cuts
the stream or ends it without its terminator gives the client a last error
event in its API's format, so SDKs raise instead of seeing a whole answer."""

import json
import time

import anthropic
import openai
import pytest
import requests

from conftest import GATEWAY, eventually, stats
from mock_provider import Reply
from test_gateway import HEADER

PRIMARY_TEXT = "primary-says"
FALLBACK_TEXT = "fallback-answer"


def chat_chunk(text, role=False):
    delta = {"role": "assistant", "content": text} if role else {"content": text}
    return "data: " + json.dumps({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}) + "\n\n"


def chat_stream(*texts):
    return [chat_chunk("", role=True)] + [chat_chunk(t) for t in texts] + ["data: [DONE]\n\n"]


def named(kind, **data):
    return f"event: {kind}\ndata: " + json.dumps({"type": kind, **data}) + "\n\n"


def responses_stream(*texts):
    resp = {"id": "resp_fb", "object": "response", "status": "in_progress", "output": []}
    return (
        [named("response.created", response=resp, sequence_number=0)]
        + [named("response.output_text.delta", delta=t, item_id="m1", output_index=0, content_index=0, sequence_number=i + 1) for i, t in enumerate(texts)]
        + [named("response.completed", response=dict(resp, status="completed"), sequence_number=len(texts) + 1)]
    )


def config(primary, fallback, policy="              default_strategy: same_provider"):
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
    """


def client():
    return openai.OpenAI(base_url=GATEWAY + "/v1", api_key="client-key", max_retries=0, timeout=30)


def broken_count():
    return stats().get("wasmcustom.plano.stream_broken", 0)


def test_a_chat_stream_whose_first_event_is_an_error_fails_over(gateway, providers):
    error = 'data: {"error": {"type": "server_error", "message": "primary-broke"}}\n\n'
    primary = providers(Reply(stream=[chat_chunk("", role=True), error], gap=0.01))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT, "!"), gap=0.01))
    gateway.up(config(primary, fallback))
    raw = client().chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-plano-attempts"] == "2"
    assert raw.headers["x-plano-model"] == "openai/gpt-4o-mini"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == FALLBACK_TEXT + "!"
    assert (primary.calls, fallback.calls) == (1, 1)
    assert eventually(lambda: "stream_error" in gateway.log())
    assert "primary-broke" not in gateway.log()


def test_a_responses_stream_failed_before_output_fails_over(gateway, providers):
    failed = named("response.failed", response={"id": "resp_p", "status": "failed", "error": {"code": "server_error", "message": "primary-broke"}}, sequence_number=1)
    primary = providers(Reply(stream=[named("response.created", response={"id": "resp_p", "status": "in_progress"}, sequence_number=0), failed], gap=0.01))
    fallback = providers(Reply(stream=responses_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    deltas = [e.delta for e in client().responses.create(model="openai/gpt-4o", input="hi", stream=True) if e.type == "response.output_text.delta"]
    assert deltas == [FALLBACK_TEXT]
    assert (primary.calls, fallback.calls) == (1, 1)


def test_an_error_event_with_no_retry_left_gives_the_exhausted_error(gateway, providers):
    error = 'data: {"error": {"type": "server_error", "message": "primary-broke"}}\n\n'
    primary = providers(Reply(stream=[error], gap=0.01))
    fallback = providers(Reply(stream=[error], gap=0.01))
    gateway.up(config(primary, fallback))
    resp = requests.post(GATEWAY + "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": [], "stream": True}, timeout=30)
    assert resp.status_code == 500
    body = resp.json()["error"]
    assert body["type"] == "retry_exhausted"
    assert [a["error_type"] for a in body["attempts"]] == ["stream_error", "stream_error"]
    assert [a["status"] for a in body["attempts"]] == [500, 500]


def test_a_provider_sending_the_gateways_internal_mark_is_served(gateway, providers):
    # The gateway marks its attempt listener's own replies (a timeout, no
    # connection) with a header; a provider that sends it on a good stream
    # must not have its answer taken for a failed connection.
    primary = providers(Reply(headers={"x-plano-local-reply": "1"}, stream=chat_stream(PRIMARY_TEXT, "!"), gap=0.01))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    raw = client().chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert raw.headers["x-plano-attempts"] == "1"
    assert raw.headers["x-plano-model"] == "openai/gpt-4o"
    assert "x-plano-local-reply" not in raw.headers
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == PRIMARY_TEXT + "!"
    assert (primary.calls, fallback.calls) == (1, 0)


@pytest.mark.parametrize("cut", [True, False], ids=["connection_cut", "no_terminator"])
def test_a_chat_stream_broken_after_two_chunks_ends_with_an_error_event(gateway, providers, cut):
    # Two chunks of output, then the provider drops the connection (or ends
    # the body cleanly but without `[DONE]`).
    primary = providers(Reply(stream=chat_stream("one", "two")[:-1], gap=0.05, cut=cut))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    before = broken_count()
    resp = requests.post(GATEWAY + "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": [], "stream": True}, stream=True, timeout=30)
    data = [line for line in resp.iter_lines() if line.startswith(b"data:")]
    assert [json.loads(d[5:])["choices"][0]["delta"]["content"] for d in data[1:3]] == ["one", "two"]
    assert len(data) == 4, data
    assert json.loads(data[3][5:])["error"]["type"] == "stream_broken"
    assert fallback.calls == 0
    got = []
    with pytest.raises(openai.APIError, match="ended before the answer was complete"):
        for c in client().chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True):
            got.extend(ch.delta.content for ch in c.choices if ch.delta.content)
    assert got == ["one", "two"]
    assert eventually(lambda: broken_count() == before + 2)
    assert eventually(lambda: "stream_broken" in gateway.log())


@pytest.mark.parametrize("cut", [True, False], ids=["connection_cut", "no_terminator"])
def test_a_responses_stream_broken_after_two_chunks_ends_with_an_error_event(gateway, providers, cut):
    primary = providers(Reply(stream=responses_stream("one", "two")[:-1], gap=0.05, cut=cut))
    fallback = providers(Reply(stream=responses_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    resp = requests.post(GATEWAY + "/v1/responses", json={"model": "openai/gpt-4o", "input": "hi", "stream": True}, stream=True, timeout=30)
    events = [line for line in resp.iter_lines() if line.startswith(b"event:")]
    assert events == [b"event: response.created", b"event: response.output_text.delta", b"event: response.output_text.delta", b"event: error"]
    got = []
    with pytest.raises(openai.APIError, match="ended before the answer was complete"):
        for e in client().responses.create(model="openai/gpt-4o", input="hi", stream=True):
            if e.type == "response.output_text.delta":
                got.append(e.delta)
    assert got == ["one", "two"]
    assert fallback.calls == 0


def test_the_hold_ends_at_64_kib_or_10_s_and_an_error_after_it_is_the_clients(gateway, providers):
    # Nothing but neutral bytes (a role chunk, then comments or silence), and
    # the error comes after the hold's bound: the held bytes went to the
    # client, so the error is the client's, not a failover. (Before the
    # bound the same error fails over: the first test above.)
    error = 'data: {"error": {"type": "server_error", "message": "primary-broke"}}\n\n'
    padding = [": " + "x" * 8190 + "\n\n"] * 9  # 72 KiB of SSE comments
    primary = providers(Reply(stream=[chat_chunk("", role=True)] + padding + [error], gap=0.05),
                        Reply(stream=[chat_chunk("", role=True), error], lead=10.5, gap=0.3))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    body = {"model": "openai/gpt-4o", "messages": [], "stream": True}
    for bound in ("64 KiB", "10 s"):
        start = time.time()
        resp = requests.post(GATEWAY + "/v1/chat/completions", json=body, timeout=30)
        assert resp.status_code == 200, (bound, resp.text[:300])
        data = [line for line in resp.text.splitlines() if line.startswith("data:")]
        assert "primary-broke" in data[-1] and FALLBACK_TEXT not in resp.text, (bound, data)
        assert fallback.calls == 0, bound
    assert time.time() - start > 10.5
    assert len(resp.text) < 1000 and len(primary.requests) == 2


def test_a_responses_stream_ending_incomplete_is_whole(gateway, providers):
    incomplete = named("response.incomplete", response={"id": "resp_fb", "object": "response", "status": "incomplete",
                                                        "incomplete_details": {"reason": "max_output_tokens"},
                                                        "output": []}, sequence_number=3)
    primary = providers(Reply(stream=responses_stream("one", "two")[:-1] + [incomplete], gap=0.01))
    fallback = providers(Reply(stream=responses_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    before = broken_count()
    resp = requests.post(GATEWAY + "/v1/responses", json={"model": "openai/gpt-4o", "input": "hi", "stream": True},
                         timeout=30)
    events = [line for line in resp.text.splitlines() if line.startswith("event:")]
    assert events == ["event: response.created", "event: response.output_text.delta",
                      "event: response.output_text.delta", "event: response.incomplete"], resp.text
    assert fallback.calls == 0
    assert broken_count() == before


def test_a_whole_stream_passes_unchanged(gateway, providers):
    primary = providers(Reply(stream=chat_stream("one", "two"), gap=0.01))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(config(primary, fallback))
    before = broken_count()
    resp = requests.post(GATEWAY + "/v1/chat/completions", json={"model": "openai/gpt-4o", "messages": [], "stream": True}, timeout=30)
    assert resp.content.decode() == "".join(chat_stream("one", "two"))
    assert broken_count() == before


# Anthropic's Messages API, native targets on both sides (`format: anthropic`).


def claude_events(*texts, stop=True):
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 0}}
    events = [named("message_start", message=msg), named("ping"),
              named("content_block_start", index=0, content_block={"type": "text", "text": ""})]
    events += [named("content_block_delta", index=0, delta={"type": "text_delta", "text": t}) for t in texts]
    if stop:
        events += [named("content_block_stop", index=0),
                   named("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": len(texts)}),
                   named("message_stop")]
    return events


def native_config(primary, fallback):
    return HEADER + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-native-0001
            format: anthropic
            default: true
            retry_policy:
              fallback_models: [anthropic/claude-y]
              default_strategy: same_provider
          - model: anthropic/claude-y
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-native-0002
            format: anthropic
    """


def claude():
    return anthropic.Anthropic(base_url=GATEWAY, api_key="client-key", max_retries=0)


def test_an_anthropic_stream_overloaded_after_message_start_fails_over(gateway, providers):
    overloaded = "event: error\ndata: " + json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "primary-overloaded"}}) + "\n\n"
    primary = providers(Reply(stream=claude_events()[:2] + [overloaded], gap=0.01))
    fallback = providers(Reply(stream=claude_events(FALLBACK_TEXT, "!"), gap=0.01))
    gateway.up(native_config(primary, fallback))
    with claude().messages.stream(model="anthropic/claude-x", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == FALLBACK_TEXT + "!"
    assert [b.text for b in final.content] == [FALLBACK_TEXT + "!"]
    assert final.stop_reason == "end_turn"
    assert (primary.calls, fallback.calls) == (1, 1)
    assert eventually(lambda: "stream_error" in gateway.log())


@pytest.mark.parametrize("cut", [True, False], ids=["connection_cut", "no_terminator"])
def test_an_anthropic_stream_broken_after_two_chunks_ends_with_an_error_event(gateway, providers, cut):
    primary = providers(Reply(stream=claude_events("one", "two", stop=False), gap=0.05, cut=cut))
    fallback = providers(Reply(stream=claude_events(FALLBACK_TEXT), gap=0.01))
    gateway.up(native_config(primary, fallback))
    body = {"model": "anthropic/claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    resp = requests.post(GATEWAY + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, stream=True, timeout=30)
    events = [line for line in resp.iter_lines() if line.startswith(b"event:")]
    assert events[-3:] == [b"event: content_block_delta", b"event: content_block_delta", b"event: error"]
    got = []
    with pytest.raises(anthropic.APIStatusError, match="ended before the answer was complete"):
        with claude().messages.stream(model="anthropic/claude-x", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as s:
            for t in s.text_stream:
                got.append(t)
    assert got == ["one", "two"]
    assert fallback.calls == 0


def mixed_config(primary, fallback):
    return HEADER + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-native-0001
            format: anthropic
            default: true
            retry_policy:
              fallback_models: [openai/gpt-4o-mini]
          - model: openai/gpt-4o-mini
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-0002
    """


def test_a_chat_stream_from_a_native_target_overloaded_before_output_fails_over(gateway, providers):
    # The chat request reaches the native target as Messages: its stream is
    # read as Anthropic events, before the translation back to chat.
    overloaded = "event: error\ndata: " + json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "primary-overloaded"}}) + "\n\n"
    primary = providers(Reply(stream=claude_events()[:2] + [overloaded], gap=0.01))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(mixed_config(primary, fallback))
    chunks = client().chat.completions.create(model="anthropic/claude-x", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FALLBACK_TEXT
    assert (primary.calls, fallback.calls) == (1, 1)


def test_a_whole_native_stream_reaches_a_chat_client_from_its_first_delta(gateway, providers):
    primary = providers(Reply(stream=claude_events("one", "two"), gap=0.3))
    fallback = providers(Reply(stream=chat_stream(FALLBACK_TEXT), gap=0.01))
    gateway.up(mixed_config(primary, fallback))
    before = broken_count()
    start = time.time()
    arrivals = []
    for c in client().chat.completions.create(model="anthropic/claude-x", messages=[{"role": "user", "content": "hi"}], stream=True):
        if c.choices and c.choices[0].delta.content:
            arrivals.append((c.choices[0].delta.content, time.time() - start))
    assert [t for t, _ in arrivals] == ["one", "two"]
    # Released at the first delta, not held to the stream's end (seven events 0.3 s apart).
    assert arrivals[0][1] < arrivals[1][1] - 0.15, arrivals
    assert (primary.calls, fallback.calls) == (1, 0)
    assert broken_count() == before
