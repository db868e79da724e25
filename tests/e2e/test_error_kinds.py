"""Each provider's failed answers understood: the mocks answer with the
providers' documented error bodies, and the gateway reads from them a wait
(Google's `RetryInfo`, OpenAI's "try again in 20s"), a spent quota, an
overload or a prompt too long for the model."""

import re
import time

import requests

from conftest import CHAT, chat, planoai, stats
from mock_provider import Reply
from test_gateway import HEADER


def retry_info(delay, quota_id="GenerateRequestsPerMinutePerProjectPerModel-FreeTier"):
    """Gemini's 429 (AIP-193): no `Retry-After`, the wait in `details`."""
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "message": "You exceeded your current quota, please check your plan and billing details.",
                      "details": [
                          {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                           "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                           "quotaId": quota_id, "quotaValue": "15"}]},
                          {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}


def openai_limited(wait):
    return {"error": {"message": f"Rate limit reached for gpt-4o in organization org-abc on requests per min (RPM): "
                                  f"Limit 3, Used 3, Requested 1. Please try again in {wait}. Visit "
                                  "https://platform.openai.com/account/rate-limits to learn more.",
                      "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


INSUFFICIENT_QUOTA = {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                                "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
CONTEXT_LENGTH = {"error": {"message": "This model's maximum context length is 8192 tokens. However, your messages "
                                       "resulted in 9000 tokens. Please reduce the length of the messages.",
                            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}


def primary_and_fallback(primary, fallback, policy="default_strategy: different_provider", primary_model="gemini/gemini-2.0-flash"):
    return HEADER + f"""
          - model: {primary_model}
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-primary-001
            default: true
            retry_policy:
              {policy}
          - model: mistral/mistral-small
            base_url: http://127.0.0.1:{fallback.port}
            access_key: key-fallback-02
    """


def stream(model):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    r = requests.post(CHAT, json=body, timeout=30)
    r.content  # the whole stream
    return r


def status_line(what):
    """The line of `planoai status` about `what`, or the whole output."""
    out = planoai("status").stdout
    return next((line for line in out.splitlines() if what in line), out)


def test_a_wait_in_a_gemini_body_blocks_the_model_for_it(gateway, providers):
    gemini = providers(Reply(status=429, body=retry_info("30s")))
    fallback = providers(Reply())
    gateway.up(primary_and_fallback(gemini, fallback))
    answers = [chat(model="gemini/gemini-2.0-flash") for _ in range(3)] + [stream("gemini/gemini-2.0-flash") for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 6
    assert {r.headers["x-plano-model"] for r in answers} == {"mistral/mistral-small"}
    # One call to the limited model: the body's 30 s block kept the rest away.
    assert gemini.calls == 1, gemini.calls
    assert answers[0].headers["x-plano-attempts"] == "2"
    line = status_line("model gemini/gemini-2.0-flash")
    secs = int(re.search(r"for (\d+) more s", line).group(1))
    assert 20 <= secs <= 30, line


def test_a_wait_in_an_openai_body_blocks_the_model_for_it_when_streamed(gateway, providers):
    limited = providers(Reply(status=429, body=openai_limited("20s")))
    fallback = providers(Reply())
    gateway.up(primary_and_fallback(limited, fallback, primary_model="openai/gpt-4o"))
    # Streamed first: the attempt filter reads the failed answer's body.
    answers = [stream("openai/gpt-4o") for _ in range(3)] + [chat() for _ in range(3)]
    assert [r.status_code for r in answers] == [200] * 6
    assert limited.calls == 1, limited.calls
    line = status_line("model openai/gpt-4o ")
    secs = int(re.search(r"for (\d+) more s", line).group(1))
    assert 10 <= secs <= 20, line


def test_a_header_wins_over_the_body(gateway, providers):
    primary = providers(Reply(status=429, headers={"Retry-After": "1"}, body=openai_limited("30s")), Reply())
    fallback = providers(Reply())
    gateway.up(primary_and_fallback(primary, fallback, primary_model="openai/gpt-4o"))
    assert chat().headers["x-plano-model"] == "mistral/mistral-small"
    assert chat().headers["x-plano-model"] == "mistral/mistral-small"
    time.sleep(1.5)
    # The header's 1 s, not the body's 30 s: the model serves again.
    r = chat()
    assert r.status_code == 200 and r.headers["x-plano-model"] == "openai/gpt-4o", r.headers
    assert primary.calls == 2


def test_a_spent_quota_on_one_key_is_called_once_and_the_other_key_serves(gateway, providers):
    spent = providers(Reply(status=429, body=INSUFFICIENT_QUOTA))
    other = providers(Reply())
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            default: true
            deployments:
              - {{ name: spent, base_url: "http://127.0.0.1:{spent.port}", access_key: key-spent-0001 }}
              - {{ name: other, base_url: "http://127.0.0.1:{other.port}", access_key: key-other-0002 }}
            retry_policy:
              # A rule that waits on the same model: a spent key is never waited on.
              default_strategy: same_model
    """)
    answers = []
    for _ in range(40):
        answers.append(chat())
        if spent.calls:
            break
    assert spent.calls == 1, "the spent key was never chosen"
    hit = answers[-1]
    assert hit.status_code == 200 and hit.headers["x-plano-attempts"] == "2"
    assert hit.headers["x-plano-deployment"] == "other"
    started = time.time()
    answers = [chat() for _ in range(20)]
    assert time.time() - started < 5
    assert {r.status_code for r in answers} == {200}
    assert spent.calls == 1
    line = status_line("deployment openai/gpt-4o[spent]")
    assert "quota spent until" in line, line
    secs = int(re.search(r"for (\d+) more s", line).group(1))
    assert 3500 <= secs <= 3600, line
    assert stats().get("wasmcustom.plano.blocks.quota_spent") == 1, stats()


def test_a_per_day_quota_blocks_until_its_reset(gateway, providers):
    per_day = retry_info("3s", quota_id="GenerateRequestsPerDayPerProjectPerModel-FreeTier")
    gemini = providers(Reply(status=429, body=[per_day]), Reply())
    fallback = providers(Reply())
    gateway.up(primary_and_fallback(gemini, fallback, "default_strategy: same_model"))
    # A spent quota is not waited on, though the rule is same_model.
    started = time.time()
    first = chat(model="gemini/gemini-2.0-flash")
    assert first.status_code == 200 and first.headers["x-plano-model"] == "mistral/mistral-small"
    assert time.time() - started < 2
    assert "quota spent until" in status_line("model gemini/gemini-2.0-flash")
    assert chat(model="gemini/gemini-2.0-flash").headers["x-plano-model"] == "mistral/mistral-small"
    assert gemini.calls == 1
    time.sleep(max(0, started + 3.5 - time.time()))
    # Its stated reset passed: the model serves again.
    r = chat(model="gemini/gemini-2.0-flash")
    assert r.headers["x-plano-model"] == "gemini/gemini-2.0-flash", r.headers
    assert gemini.calls == 2


def test_a_prompt_too_long_goes_to_the_larger_window_in_one_hop(gateway, providers):
    small = providers(Reply(status=400, body=CONTEXT_LENGTH))
    other = providers(Reply())
    larger = providers(Reply())
    alone = providers(Reply(status=400, body={"type": "error", "error": {
        "type": "invalid_request_error", "message": "prompt is too long: 208310 tokens > 200000 maximum"}}))
    gateway.up(HEADER + f"""
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{small.port}
            default: true
            retry_policy:
              fallback_models: [mistral/large]
              # A rule that would retry a 400 on the same model: never for this one.
              on_status_codes: [{{codes: [400], strategy: same_model, max_attempts: 3}}]
              context_window_fallbacks: [openai/gpt-4.1]
          - model: mistral/large
            base_url: http://127.0.0.1:{other.port}
          - model: openai/gpt-4.1
            base_url: http://127.0.0.1:{larger.port}
          - model: anthropic/claude-small
            base_url: http://127.0.0.1:{alone.port}
            retry_policy:
              default_strategy: different_provider
    """)
    r = chat()
    assert r.status_code == 200, r.text
    assert r.headers["x-plano-model"] == "openai/gpt-4.1"
    assert r.headers["x-plano-attempts"] == "2"
    assert (small.calls, other.calls, larger.calls) == (1, 0, 1)
    # Without a larger window named, the provider's 400 is the client's.
    r = chat(model="anthropic/claude-small")
    assert r.status_code == 400 and "prompt is too long" in r.text
    assert (alone.calls, other.calls) == (1, 0)


def test_529_and_an_overloaded_body_are_retried_as_503_is(gateway, providers):
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    not_ready = Reply(status=429, headers={"x-amzn-errortype": "ModelNotReadyException:http://internal.amazon.com/coral/com.amazon.bedrock/"},
                      body={"message": "Model is not ready to serve inference requests. Retry your request."})
    primary = providers(Reply(status=529, body=overloaded), not_ready, Reply())
    fallback = providers(Reply())
    # Only 503 is retried, on the same model; any other failure ends at once.
    policy = "default_max_attempts: 0\n              on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 2}]"
    gateway.up(primary_and_fallback(primary, fallback, policy, primary_model="anthropic/claude"))
    r = chat(model="anthropic/claude")
    assert r.status_code == 200, r.text
    assert r.headers["x-plano-model"] == "anthropic/claude"
    assert r.headers["x-plano-attempts"] == "3"
    assert (primary.calls, fallback.calls) == (3, 0)


def test_a_streamed_failure_cut_while_it_is_read_is_retried(gateway, providers):
    # A 500 whose body stops a tenth of the way and whose connection closes.
    cut = providers(Reply(status=500, truncate=True, body={"error": {"message": "x" * 10000}}))
    fallback = providers(Reply())
    gateway.up(primary_and_fallback(cut, fallback, primary_model="openai/gpt-4o"))
    r = stream("openai/gpt-4o")
    assert r.status_code == 200, r.text
    assert r.headers["x-plano-model"] == "mistral/mistral-small"
    assert (cut.calls, fallback.calls) == (1, 1)
