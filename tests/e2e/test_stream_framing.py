"""How the gateway reads a provider's stream: in one pass, whatever its size
and its line ends. A long fast chat stream whose usage the gateway asked for
costs about what it costs when the client asked; a stream framed with bare
`\\r` (valid server-sent events) is translated like any other."""

import json
import time

import requests

from conftest import CHAT
from mock_provider import Provider, Reply
from test_gateway import two_providers
from test_messages import chat_chunk, claude, config, event, gpt, native  # noqa: F401 (fixtures)

PIECE = "x" * 64


def long_stream(size):
    """A chat stream of about `size` bytes in 64 KiB writes, its usage event last."""
    one = chat_chunk({"content": PIECE})
    count = size // len(one)
    body = chat_chunk({"role": "assistant", "content": ""}) + one * count
    body += chat_chunk({}, finish="stop") + chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": count})
    body += "data: [DONE]\n\n"
    writes = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    return Reply(stream=writes, gap=0), count


def timed_stream(**extra):
    start = time.time()
    resp = requests.post(CHAT, timeout=120, stream=True, json={
        "model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}], **extra})
    body = b"".join(resp.iter_content(65536))
    return resp.status_code, body, time.time() - start


def test_a_4_mb_stream_costs_about_the_same_whoever_asked_for_usage(gateway, providers):
    reply, count = long_stream(4 * 1024 * 1024)
    provider = providers(reply)
    gateway.up(two_providers(provider, providers(Reply())))
    # Warm: the first stream of a worker pays for its buffers.
    timed_stream(stream_options={"include_usage": True})
    status, asked_body, asked = timed_stream(stream_options={"include_usage": True})
    assert status == 200
    status, body, stripped = timed_stream()
    assert status == 200
    # The gateway asked on the client's behalf: the usage event is taken
    # out, and every other byte passes.
    assert json.loads(provider.requests[-1]["body"])["stream_options"] == {"include_usage": True}
    assert b'"prompt_tokens"' in asked_body and b'"prompt_tokens"' not in body
    assert body.count(PIECE.encode()) == count
    assert len(asked_body) - len(body) < 300
    # One pass over the stream: linear, like the stream the client asked usage of.
    assert stripped < 3 * asked + 0.5, (stripped, asked)


def cr_framed(events):
    """Events with every line ended by a bare `\\r`."""
    return [e.replace("\n", "\r") for e in events]


def test_a_stream_framed_with_bare_cr_is_translated_both_ways(gateway, claude, gpt):
    words = ["one ", "two "]
    messages_stream = [event("message_start", {"message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 4, "output_tokens": 1}}}),
                       event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    messages_stream += [event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words]
    messages_stream += [event("content_block_stop", {"index": 0}),
                        event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                        event("message_stop", {})]
    chat_stream = [chat_chunk({"role": "assistant", "content": ""})] + [chat_chunk({"content": w}) for w in words]
    chat_stream += [chat_chunk({}, finish="stop"), chat_chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 2}), "data: [DONE]\n\n"]
    primary = native(Reply(stream=cr_framed(messages_stream), gap=0.01))
    fallback = Provider(Reply(stream=cr_framed(chat_stream), gap=0.01))
    try:
        gateway.up(config(primary, fallback, policy="default_max_attempts: 1"))
        # A chat client, a native target: Anthropic's events become chat chunks.
        chunks = list(gpt.chat.completions.create(model="anthropic/claude-x", stream=True,
                                                  messages=[{"role": "user", "content": "count"}]))
        assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == words
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
        # A Messages client, a chat target: chat chunks become Anthropic's events.
        with claude.messages.stream(model="openai/gpt-x", max_tokens=8,
                                    messages=[{"role": "user", "content": "count"}]) as s:
            texts = list(s.text_stream)
            final = s.get_final_message()
        assert texts == words
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 2
        assert primary.calls == 1 and fallback.calls == 1
    finally:
        primary.stop()
        fallback.stop()
