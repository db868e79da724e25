"""Client keys, the README's promises beyond test_client_keys.py: the key
check comes before any body check, the `${VAR}` form, the short-key warning's
boundary, and the open-listener warning on every `up`."""

import requests

from conftest import CHAT, GATEWAY
from mock_provider import Reply

KEY = "ci-key-0b9e6d2f4a7c1e35"
BRACED = "nb-key-7c4e1a9d2b6f0e83"


def config(port, keys, extra=""):
    entries = "\n".join(f"              - {{ name: {name}, key: {key} }}" for name, key in keys)
    return f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            max_request_body_bytes: 1000000{extra}
            client_keys:
{entries}
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{port}
            access_key: key-primary-0001
    """


def test_the_key_check_comes_before_any_body_check(gateway, providers):
    provider = providers(Reply())
    gateway.up(config(provider.port, [("ci", KEY)]))
    bodies = {
        "oversized": b'{"model": "openai/gpt-4o", "messages": [], "pad": "' + b"x" * 2_000_000 + b'"}',
        "not JSON": b"{not json",
        "no model": b'{"messages": []}',
        "unknown model": b'{"model": "nobody/nothing", "messages": []}',
    }
    for what, body in bodies.items():
        resp = requests.post(CHAT, data=body, headers={"content-type": "application/json"}, timeout=30)
        assert resp.status_code == 401, (what, resp.status_code, resp.text[:200])
        assert resp.json()["error"]["type"] == "invalid_api_key", what
    # With the key, the same bodies get their own errors.
    with_key = {"content-type": "application/json", "Authorization": f"Bearer {KEY}"}
    resp = requests.post(CHAT, data=bodies["oversized"], headers=with_key, timeout=30)
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "request_too_large"
    resp = requests.post(CHAT, data=bodies["not JSON"], headers=with_key, timeout=30)
    assert resp.status_code == 400
    assert provider.calls == 0


def test_a_key_in_braces_is_read_from_the_environment(gateway, providers):
    provider = providers(Reply())
    # Quoted, as the README shows it: in a `{ ... }` entry YAML reads an
    # unquoted `${` as the start of another mapping.
    gateway.up(config(provider.port, [("notebook", '"${PLANO_NOTEBOOK_KEY}"')]),
               extra_env={"PLANO_NOTEBOOK_KEY": BRACED})
    assert requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []},
                         headers={"Authorization": f"Bearer {BRACED}"}, timeout=10).status_code == 200
    refused = requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []},
                            headers={"Authorization": "Bearer ${PLANO_NOTEBOOK_KEY}"}, timeout=10)
    assert refused.status_code == 401
    assert provider.calls == 1


def test_keys_shorter_than_16_characters_get_a_warning(gateway, providers):
    provider = providers(Reply())
    result = gateway.up(config(provider.port, [("short", "k" * 15), ("enough", "e" * 16)]))
    assert result.stderr.count("can be guessed") == 1, result.stderr
    assert "is 15 characters long" in result.stderr, result.stderr
    assert "field: listeners[0].client_keys[0].key" in result.stderr
    assert "client_keys[1]" not in result.stderr
    assert "openssl rand -hex 24" in result.stderr
    # Short or not, both keys work.
    for key in ("k" * 15, "e" * 16):
        assert requests.post(CHAT, json={"model": "openai/gpt-4o", "messages": []},
                             headers={"x-api-key": key}, timeout=10).status_code == 200


def test_an_open_listener_warns_on_every_up_a_live_reapply_included(gateway, providers):
    provider = providers(Reply())
    open_config = f"""
        version: v0.3.0
        listeners:
          - type: model
            name: model_listener
            port: 12000
            address: 0.0.0.0
            allow_unauthenticated: true
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:{provider.port}
            timeout_ms: %d
    """
    first = gateway.up(open_config % 30000)
    assert "without client keys" in first.stderr, first.stderr
    again = gateway.up(open_config % 20000)
    assert "applied to the running gateway" in again.stdout, again.stdout
    assert "warning" in again.stderr and "without client keys" in again.stderr, again.stderr
    assert requests.get(GATEWAY + "/v1/models", timeout=5).status_code == 200
