"""The chain a team builds the day Anthropic rate-limits them: Claude on
Anthropic, then Claude on Amazon Bedrock, then Claude on Google Vertex AI,
driven by the `anthropic` SDK's `messages.stream`.

The mocks are the ones each provider's own test file keeps (imported, not
copied): Anthropic's checks from test_messages, Bedrock's SigV4 check with
botocore's signer from test_bedrock, Vertex's token endpoint (google-auth
checks the JWT grant) and its path/body checks from test_vertex."""

import json
import time

from mock_provider import Provider, Reply
from test_bedrock import CREDENTIALS, MODEL as BEDROCK_MODEL, MODEL_ID, aws_error, bedrock, bedrock_entry
from test_gateway import HEADER
from test_messages import native
from test_vertex import claude, claude_stream, minted, refuse_unlike_vertex, tokens, vertex_entry  # noqa: F401  (fixtures)

VERTEX_MODEL = "vertex_ai/claude-sonnet-4@20250514"


def test_a_messages_stream_goes_anthropic_429_then_bedrock_throttled_then_claude_on_vertex_piece_by_piece(gateway, tokens, claude):
    endpoint, key_file, _ = tokens()
    gap = 0.4
    pieces = [f"c{i} " for i in range(6)]
    primary = native(Reply(status=429, headers={"retry-after": "30"},
                           body={"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}))
    # Bedrock throttles as it does before a stream starts: HTTP 429 with the
    # exception's name in `x-amzn-errortype`. The mock checks SigV4 first, so a
    # 403 (a bad signature) would show here instead of the 429.
    throttled = bedrock(aws_error(429, "ThrottlingException", "Too many requests, please wait before trying again."))
    vertex = Provider(Reply(stream=claude_stream(pieces), gap=gap), refuse=refuse_unlike_vertex(endpoint))
    try:
        gateway.up(HEADER + f"""
          - model: anthropic/claude-x
            base_url: http://127.0.0.1:{primary.port}
            access_key: key-native-0001
            format: anthropic
            default: true
            retry_policy:
              fallback_models: [{BEDROCK_MODEL}, {VERTEX_MODEL}]""" + bedrock_entry(throttled)
                   + vertex_entry(VERTEX_MODEL, vertex, key_file, "anthropic"), extra_env=CREDENTIALS)
        minted(endpoint)
        start = time.time()
        seen = []
        with claude.messages.stream(model="anthropic/claude-x", max_tokens=32, system="count",
                                    messages=[{"role": "user", "content": "go"}]) as s:
            for text in s.text_stream:
                seen.append((text, time.time() - start))
            final = s.get_final_message()
        assert [t for t, _ in seen] == pieces
        # Each delta arrived about when Vertex sent it (0.4 s apart), not all at the end.
        assert seen[-1][1] - seen[0][1] > 5 * gap * 0.6, seen
        # The first delta's time also holds the SDK's first parse of an event
        # (pydantic builds its models then: ~0.2 s here, while the gateway's
        # bytes came on time), so the spacing is checked from the second on.
        gaps = [b - a for (_, a), (_, b) in zip(seen, seen[1:])]
        assert min(gaps[1:]) > gap * 0.5, gaps
        assert final.stop_reason == "end_turn"
        # Each provider once, in the chain's order.
        assert (primary.calls, throttled.calls, vertex.calls) == (1, 1, 1)
        at = [primary.requests[0]["at"], throttled.requests[0]["at"], vertex.requests[0]["at"]]
        assert at == sorted(at), at
        # Bedrock got a signed converse-stream request (the mock checked the signature with botocore).
        bedrock_request = throttled.requests[0]
        assert bedrock_request["path"] == f"/model/{MODEL_ID.replace(':', '%3A')}/converse-stream"
        assert bedrock_request["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
        assert json.loads(bedrock_request["body"])["messages"] == [{"role": "user", "content": [{"text": "go"}]}]
        # Vertex got Claude's Messages body with its version and the token the gateway minted.
        assert vertex.requests[0]["path"].endswith("/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict")
        body = json.loads(vertex.requests[0]["body"])
        assert body["anthropic_version"] == "vertex-2023-10-16" and "model" not in body
        assert body["system"] == "count" and body["messages"] == [{"role": "user", "content": "go"}]
        assert vertex.requests[0]["headers"]["authorization"].startswith("Bearer ya29.e2e-")
        assert len(endpoint.grants) == 1
    finally:
        primary.stop()
        throttled.stop()
        vertex.stop()
