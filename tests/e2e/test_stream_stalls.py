"""A stream that stalls after output (the provider sent its headers and two
chunks, then nothing, its connection open) ends with the gateway's last
error event `stall_timeout_ms` after the provider's last byte, in the
client's stream format, rather than being cut inside the chunked body at the
client listener's 5-minute stream idle timeout."""

import json
import time

import requests

from conftest import CHAT, GATEWAY
from mock_provider import Provider, Reply
from test_gateway import HEADER
from test_messages import NATIVE_KEY, chat_chunk, event, native

STALL_MS = 1500
# The mock stays silent far longer than the bound, its connection open.
SILENT_S = 60


def stalled(events):
    """The events, then a silence of SILENT_S seconds before the body's end."""
    return Reply(stream=events, gap=[0.05] * (len(events) - 1) + [SILENT_S])


def stall_config(provider, model, extra=""):
    return HEADER + f"""
          - model: {model}
            base_url: http://127.0.0.1:{provider.port}
            access_key: {NATIVE_KEY}
            default: true
            timeout_ms: 1000
            stall_timeout_ms: {STALL_MS}
            {extra}
            retry_policy:
              default_max_attempts: 1
    """


def test_a_chat_stream_that_stalls_after_output_ends_with_an_error_event(gateway):
    provider = Provider(stalled([chat_chunk({"role": "assistant", "content": ""}),
                                 chat_chunk({"content": "one"}), chat_chunk({"content": "two"})]))
    try:
        gateway.up(stall_config(provider, "openai/gpt-4o"))
        resp = requests.post(CHAT, stream=True, timeout=(5, 10), json={
            "model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200
        start = time.time()
        data = []
        for line in resp.iter_lines():
            if line.startswith(b"data:"):
                data.append(json.loads(line[5:]))
                if len(data) == 3:
                    two_at = time.time()
        ended = time.time()
        assert [d["choices"][0]["delta"].get("content") for d in data[1:3]] == ["one", "two"]
        assert len(data) == 4, data
        assert data[3]["error"]["type"] == "stream_broken"
        # The stall bound, counted from the provider's last byte.
        waited = ended - two_at
        assert STALL_MS / 1000 - 0.3 < waited < STALL_MS / 1000 + 2, waited
        assert ended - start < 5
    finally:
        provider.stop()


def test_a_messages_stream_that_stalls_after_output_ends_with_an_error_event(gateway):
    events = [event("message_start", {"message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 4, "output_tokens": 1}}}),
              event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
              event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "one "}}),
              event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "two "}})]
    provider = native(stalled(events))
    try:
        gateway.up(stall_config(provider, "anthropic/claude-x", extra="format: anthropic"))
        resp = requests.post(f"{GATEWAY}/v1/messages", stream=True, timeout=(5, 10),
                             headers={"x-api-key": "client-key", "anthropic-version": "2023-06-01"},
                             json={"model": "anthropic/claude-x", "max_tokens": 16, "stream": True,
                                   "messages": [{"role": "user", "content": "count"}]})
        assert resp.status_code == 200
        names, texts = [], []
        for line in resp.iter_lines():
            if line.startswith(b"event:"):
                names.append(line[6:].strip().decode())
                if names[-1] == "content_block_delta" and len(texts) == 1:
                    two_at = time.time()
            elif line.startswith(b"data:"):
                d = json.loads(line[5:])
                if d.get("type") == "content_block_delta":
                    texts.append(d["delta"]["text"])
                last = d
        ended = time.time()
        assert texts == ["one ", "two "]
        assert names[-1] == "error", names
        assert last["type"] == "error" and last["error"]["type"]
        waited = ended - two_at
        assert STALL_MS / 1000 - 0.3 < waited < STALL_MS / 1000 + 2, waited
    finally:
        provider.stop()
