"""TLS and authentication to etcd (issue 28): a real etcd serving only TLS,
asking every client for a certificate (`--client-cert-auth`) and with its
auth on, so a client's certificate names its etcd user. Two gateways with
a certificate of the user `root` share a block; one whose certificate names
no user is refused and works alone. The certificates are made here."""

import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time

import pytest
import requests

from conftest import planoai
from test_replica_counts import CountingReplica, Provider

ETCD_PORT = 22389
PEER_PORT = 22390
URL = f"https://127.0.0.1:{ETCD_PORT}"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(d):
    """A CA, etcd's certificate for 127.0.0.1, and client certificates
    for the etcd users `root` and `nobody` (who does not exist)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=plano-test-ca", cwd=d)
    for name, cn, ext in [("server", "etcd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth"),
                          ("root", "root", "extendedKeyUsage=clientAuth"),
                          ("nobody", "nobody", "extendedKeyUsage=clientAuth")]:
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "1", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture
def tls_etcd():
    with tempfile.TemporaryDirectory(prefix="plano-etcd-tls-") as d:
        certificates(d)
        data = tempfile.mkdtemp(prefix="plano-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else d)
        proc = subprocess.Popen(
            ["etcd", "--data-dir", data, "--listen-client-urls", URL, "--advertise-client-urls", URL,
             "--cert-file", f"{d}/server.pem", "--key-file", f"{d}/server.key",
             "--trusted-ca-file", f"{d}/ca.pem", "--client-cert-auth",
             "--listen-peer-urls", f"http://127.0.0.1:{PEER_PORT}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{PEER_PORT}",
             "--initial-cluster", f"default=http://127.0.0.1:{PEER_PORT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            as_root = {"cert": (f"{d}/root.pem", f"{d}/root.key"), "verify": f"{d}/ca.pem", "timeout": 2}
            deadline = time.time() + 15
            while True:
                try:
                    if requests.get(URL + "/health", **as_root).json().get("health") == "true":
                        break
                except (requests.RequestException, ValueError):
                    pass
                assert time.time() < deadline, "etcd did not become healthy"
                time.sleep(0.1)
            # etcd's auth on, with `root` the one user.
            for path, body in [("/v3/auth/role/add", {"name": "root"}),
                               ("/v3/auth/user/add", {"name": "root", "password": "not-used-with-certificates"}),
                               ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
                               ("/v3/auth/enable", {})]:
                resp = requests.post(URL + path, json=body, **as_root)
                assert resp.status_code == 200, (path, resp.text)
            yield d
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            shutil.rmtree(data, ignore_errors=True)


def shared_state(d, user):
    return textwrap.dedent(f"""
        shared_state:
          etcd_endpoints: [{URL}]
          key_prefix: /plano-tls/
          tls: {{ ca_file: {d}/ca.pem, cert_file: {d}/{user}.pem, key_file: {d}/{user}.key }}
        """)


def test_gateways_share_blocks_over_tls_as_the_etcd_user_their_certificate_names(tls_etcd):
    d = tls_etcd
    limited = Provider(status=429, headers=[("Retry-After", "30")])
    ok = Provider()
    policy = "retry_after_handling: { scope: model, apply_to: global }"
    with tempfile.TemporaryDirectory(prefix="plano-tls-") as workdir:
        a, b, stranger = [CountingReplica(name, n, workdir, limited, ok, policy, shared_state(d, user))
                          for name, n, user in [("A", 6, "root"), ("B", 7, "root"), ("N", 8, "nobody")]]
        try:
            for r in (a, b, stranger):
                r.start()
            deadline = time.time() + 10
            while time.time() < deadline and not (a.stat("up") == 1 and b.stat("up") == 1):
                time.sleep(0.05)
            assert (a.stat("up"), b.stat("up")) == (1, 1)
            assert a.chat("m0", "A").headers["x-plano-model"] == "anthropic/claude"
            deadline = time.time() + 5
            while time.time() < deadline and not b.blocked("m0"):
                time.sleep(0.02)
            assert b.blocked("m0"), "the block did not reach B over TLS"
            # etcd refuses a certificate that names no user: that gateway
            # works alone, its requests unharmed.
            assert stranger.stat("up") == 0 and not stranger.blocked("m0")
            assert stranger.chat("m0", "N").status_code == 200
            # Envoy's admin names the files (the private key's not even
            # that: Envoy redacts it), never holds them.
            dump = requests.get(f"http://127.0.0.1:{a.admin}/config_dump", timeout=5).text
            assert "etcd_ca.key" in dump and "etcd_cert.key" in dump
            assert "BEGIN" not in dump
        finally:
            for r in (a, b, stranger):
                r.stop()
            limited.stop()
            ok.stop()


def test_an_unreadable_tls_file_is_an_error_at_its_line(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(textwrap.dedent("""\
        version: v0.3.0
        listeners:
          - { type: model, name: model_listener, port: 12000 }
        model_providers:
          - model: openai/gpt-4o
            base_url: http://127.0.0.1:9
            access_key: k
        shared_state:
          etcd_endpoints: [https://127.0.0.1:2379]
          tls:
            ca_file: missing-ca.pem
        """))
    result = planoai("validate", str(config), check=False)
    assert result.returncode == 1
    assert "gateway.yaml:11:" in result.stdout + result.stderr
    assert "shared_state.tls.ca_file" in result.stdout + result.stderr
