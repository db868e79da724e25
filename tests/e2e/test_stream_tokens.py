"""Tokens of streamed chat answers: the gateway asks the provider for usage
when the client did not, counts it, and keeps the usage event out of that
client's stream; a client that asked gets it as the provider sent it."""

import json
import re

import openai
import requests

from conftest import ADMIN, eventually
from mock_provider import Reply
from test_gateway import RATE_LIMITED, two_providers

CHUNK = {"id": "c", "object": "chat.completion.chunk", "created": 1700000000, "model": "claude-3-5-sonnet",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}], "usage": None}
USAGE = dict(CHUNK, choices=[], usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13})


def stream():
    """What a provider sends when asked for usage: a usage-only event last."""
    events = [CHUNK, CHUNK, USAGE]
    return Reply(stream=[f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"], gap=0.01)


def tokens(model):
    """plano_model_input_tokens and _output_tokens of `model`, from the admin."""
    text = requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text
    out = []
    for name in ("plano_model_input_tokens", "plano_model_output_tokens"):
        values = [float(v) for v in re.findall(rf'^{name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.M)]
        out.append(sum(values))
    return tuple(out)


def client():
    return openai.OpenAI(base_url="http://127.0.0.1:12000/v1", api_key="unused", max_retries=0)


def test_a_stream_that_did_not_ask_is_counted_and_gets_no_usage_event(gateway, providers):
    primary, secondary = providers(RATE_LIMITED), providers(stream())
    gateway.up(two_providers(primary, secondary, policy="              default_strategy: different_provider"))
    chunks = list(client().chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["hi", "hi"], chunks
    assert all(c.usage is None for c in chunks)
    # Both attempts asked, once each (the failover replays the asked body).
    for mock in (primary, secondary):
        body = mock.requests[0]["body"]
        assert body.count(b"stream_options") == 1, body
        assert json.loads(body)["stream_options"] == {"include_usage": True}
    assert eventually(lambda: tokens("anthropic/claude-3-5-sonnet") == (9, 4), 10), tokens("anthropic/claude-3-5-sonnet")


def test_a_stream_that_asked_gets_its_usage(gateway, providers):
    primary, secondary = providers(stream()), providers(stream())
    gateway.up(two_providers(primary, secondary))
    chunks = list(client().chat.completions.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True}))
    assert [c.usage.prompt_tokens for c in chunks if c.usage] == [9]
    assert json.loads(primary.requests[0]["body"])["stream_options"] == {"include_usage": True}
    assert eventually(lambda: tokens("openai/gpt-4o") == (9, 4), 10), tokens("openai/gpt-4o")
    # A client that turned usage off is left so: not asked, nothing stripped, nothing counted.
    raw = requests.post("http://127.0.0.1:12000/v1/chat/completions", timeout=30, json={
        "model": "openai/gpt-4o", "messages": [], "stream": True, "stream_options": {"include_usage": False}})
    assert json.loads(primary.requests[1]["body"])["stream_options"] == {"include_usage": False}
    assert '"prompt_tokens": 9' in raw.text
