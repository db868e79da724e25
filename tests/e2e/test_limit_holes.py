"""Client key limits that were bypassed or miscounted (issue 38): the
estimate takes the largest answer cap a client set; a native Anthropic
stream counts its prompt (`message_start`) and its answer
(`message_delta`); the stored-response endpoints are charged; and a
limited key never sees its provider account's rate-limit headers. Real
planoai, real Envoy, loopback mocks."""

import json
import re

import requests

from conftest import ADMIN, GATEWAY, eventually, stats
from mock_provider import Reply
from test_endpoints import response_body
from test_quotas import APP_KEY, BATCH_KEY, config, post, stream_used, used


def remaining_tokens(resp):
    return int(resp.headers["x-ratelimit-remaining-tokens"])


def test_the_estimate_takes_the_largest_cap_and_zero_is_no_cap(gateway, providers):
    mock = providers(used(10, 5))
    limit = "                limits: { tokens_per_minute: 1000 }"
    gateway.up(config(mock.port, batch_extra=limit, app_extra=limit))
    # The standing on an answer is the key's after its charge: ~20 tokens
    # of body, and the 500 a provider honouring max_completion_tokens may
    # write (not the 1 of max_tokens).
    resp = post(BATCH_KEY, max_tokens=1, max_completion_tokens=500)
    assert resp.status_code == 200
    assert remaining_tokens(resp) <= 1000 - 500, dict(resp.headers)
    # `max_tokens: 0` sets no cap: the default 1024 out, past the whole
    # limit, is charged as the limit: nothing is left until it settles.
    resp = post(APP_KEY, max_tokens=0)
    assert resp.status_code == 200 and remaining_tokens(resp) == 0, dict(resp.headers)


def event(name, **data):
    return f"event: {name}\ndata: {json.dumps(dict(type=name, **data))}\n\n"


def anthropic_stream(prompt, answer):
    """A native Messages stream: the prompt's tokens at its start, the
    answer's at its end, as Anthropic reports them."""
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
           "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}
    return Reply(stream=[
        event("message_start", message=msg),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "hi"}),
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None}, usage={"output_tokens": answer}),
        event("message_stop"),
    ], gap=0.01)


NATIVE = """
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{port}
            access_key: key-native-0001
            format: anthropic
"""


def input_tokens(model):
    text = requests.get(f"{ADMIN}/stats/prometheus", timeout=5).text
    found = re.findall(rf'^plano_model_input_tokens{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$', text, re.M)
    return sum(float(v) for v in found)


def test_a_native_anthropic_stream_counts_its_prompt_and_its_answer(gateway, providers):
    openai_mock = providers(used(10, 5))
    native = providers(anthropic_stream(300, 50))
    gateway.up(config(openai_mock.port, batch_extra="                limits: { tokens_per_minute: 100000 }",
                      more=NATIVE.format(port=native.port)))
    body = {"model": "anthropic/claude-x", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    resp = requests.post(f"{GATEWAY}/v1/messages", json=body, timeout=30,
                         headers={"x-api-key": BATCH_KEY, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 200 and "message_stop" in resp.text, resp.text
    # The key's minute, the model's input tokens: 300 in, 50 out.
    assert eventually(lambda: stats().get("wasmcustom.plano.client.batch.minute_tokens") == 350, 5), stats()
    assert eventually(lambda: input_tokens("anthropic/claude-x") == 300, 5), input_tokens("anthropic/claude-x")
    # A chat stream served by the native target (translated) counts both too.
    chat = {"model": "anthropic/claude-x", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    resp = requests.post(f"{GATEWAY}/v1/chat/completions", json=chat, timeout=30,
                         headers={"Authorization": f"Bearer {BATCH_KEY}"})
    assert resp.status_code == 200 and "[DONE]" in resp.text, resp.text
    assert eventually(lambda: stats().get("wasmcustom.plano.client.batch.minute_tokens") == 700, 5), stats()
    assert eventually(lambda: input_tokens("anthropic/claude-x") == 600, 5), input_tokens("anthropic/claude-x")


def test_a_responses_stream_counts_the_usage_of_its_completed_event(gateway, providers):
    # The Responses stream has no such gap: `response.created` says no
    # usage, `response.completed` all of it.
    created = dict(response_body("resp_1"), status="in_progress", output=[], usage=None)
    done = dict(response_body("resp_1", "hi"), usage={"input_tokens": 120, "output_tokens": 30, "total_tokens": 150})
    mock = providers(Reply(stream=[
        event("response.created", sequence_number=0, response=created),
        event("response.output_text.delta", sequence_number=1, item_id="msg_1", output_index=0,
              content_index=0, delta="hi", logprobs=[]),
        event("response.completed", sequence_number=2, response=done),
    ], gap=0.01))
    gateway.up(config(mock.port, batch_extra="                limits: { tokens_per_minute: 100000 }"))
    resp = requests.post(f"{GATEWAY}/v1/responses", json={"model": "openai/gpt-4o", "input": "hi", "stream": True},
                         headers={"Authorization": f"Bearer {BATCH_KEY}"}, timeout=30)
    assert resp.status_code == 200 and "response.completed" in resp.text, resp.text
    assert eventually(lambda: stats().get("wasmcustom.plano.client.batch.minute_tokens") == 150, 5), stats()


def test_the_stored_response_endpoints_are_charged_to_the_key(gateway, providers):
    mock = providers(used(10, 5))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 3 }"))
    auth = {"Authorization": f"Bearer {BATCH_KEY}"}
    calls = [
        lambda: requests.get(f"{GATEWAY}/v1/responses/resp_unknown1", headers=auth, timeout=10),
        lambda: requests.get(f"{GATEWAY}/v1/responses/resp_unknown1/input_items", headers=auth, timeout=10),
        lambda: requests.post(f"{GATEWAY}/v1/responses/resp_unknown1/cancel", headers=auth, timeout=10),
        lambda: requests.delete(f"{GATEWAY}/v1/responses/resp_unknown1", headers=auth, timeout=10),
    ]
    statuses = [call().status_code for call in calls]
    # Three a minute: the fourth is the gateway's 429, before any lookup.
    assert statuses == [404, 404, 404, 429], statuses
    assert post(BATCH_KEY).status_code == 429


PROVIDER_QUOTA = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-limit-tokens": "2000000",
    "x-ratelimit-remaining-tokens": "1999990",
    "x-ratelimit-reset-tokens": "1ms",
    "anthropic-ratelimit-requests-remaining": "4000",
    "anthropic-ratelimit-tokens-remaining": "400000",
    "ratelimit-remaining": "77",
}


def test_a_limited_key_never_sees_the_provider_accounts_rate_limit_headers(gateway, providers):
    streamed = stream_used(10, 5)
    streamed.headers = PROVIDER_QUOTA
    mock = providers(used(10, 5, headers=PROVIDER_QUOTA), streamed, used(10, 5, headers=PROVIDER_QUOTA))
    gateway.up(config(mock.port, batch_extra="                limits: { requests_per_minute: 60 }"))
    for stream in (False, True):
        resp = post(BATCH_KEY, stream=stream)
        assert resp.status_code == 200
        quota = {k.lower(): v for k, v in resp.headers.items() if "ratelimit" in k.lower()}
        # The key's own requests limit, nothing of the account's.
        assert quota["x-ratelimit-limit-requests"] == "60", quota
        assert set(quota) == {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                              "x-ratelimit-reset-requests"}, quota
    # A key without limits gets the provider's headers as they came.
    resp = post(APP_KEY)
    assert resp.headers["anthropic-ratelimit-requests-remaining"] == "4000"
    assert resp.headers["x-ratelimit-remaining-tokens"] == "1999990"
