"""A scriptable OpenAI-compatible mock provider on loopback.

Each server answers from a script of responses (the last one repeats) and
records every request it got. Run as a program for `make demo-mocks`.
"""

import argparse
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OK_BODY = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "mock",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
}


class MockServer(ThreadingHTTPServer):
    """http.server for every mock provider. Its listen backlog is Python's 5
    unless raised: a fresh gateway's workers open their connections to a
    provider in a burst, the kernel drops the connections past the backlog,
    and each waits a second for its SYN's retransmit, which a connect
    timeout of a second or less (`timeout_ms`) turns into Envoy's reset
    before headers ("connection termination")."""

    request_queue_size = 1024
    daemon_threads = True


@dataclass
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: object = None  # dict or list -> JSON, str/bytes as is, None -> OK_BODY with the port
    delay: float = 0.0  # seconds before the status line
    stream: list = None  # SSE chunks (str) or binary ones (bytes), sent with `gap` seconds between them
    gap: object = 0.05  # or a list: the seconds after each chunk
    close: bool = False  # close the connection without answering
    garbage: bytes = None  # send these bytes instead of an HTTP response, then close
    truncate: bool = False  # announce the body's length, send a tenth of it, pause, close
    http10: bool = False  # stream as plain http.server does: HTTP/1.0, Transfer-Encoding, unframed
    cut: bool = False  # after the stream's chunks, drop the connection without ending the body
    lead: object = 0.0  # seconds between a stream's headers and its first chunk, or a function drawing them


class Provider:
    def __init__(self, *replies, refuse=None, host="127.0.0.1"):
        # `refuse(record)` names what is wrong with a request (a 400), or
        # gives the Reply a provider answers it with, or None.
        self.refuse = refuse
        self.script = list(replies) or [Reply()]
        self.requests = []
        self.lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                record = {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "at": time.time()}
                with provider.lock:
                    provider.requests.append(record)
                    reply = provider.script[min(len(provider.requests), len(provider.script)) - 1]
                wrong = provider.refuse and provider.refuse(record)
                if isinstance(wrong, Reply):
                    reply = wrong
                elif wrong:
                    reply = Reply(status=400, body={"type": "error", "error": {"type": "invalid_request_error", "message": wrong}})
                time.sleep(reply.delay)
                if reply.close or reply.garbage is not None:
                    if reply.garbage:
                        self.wfile.write(reply.garbage)
                        self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if reply.http10:
                    # The faulty framing (RFC 9112 §6.1): the body is read to close.
                    self.protocol_version = "HTTP/1.0"
                    self.close_connection = True
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if reply.stream is not None:
                    if "Content-Type" not in reply.headers:
                        self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    lead = reply.lead() if callable(reply.lead) else reply.lead
                    if not self.open_for(lead, record):
                        return
                    for i, chunk in enumerate(reply.stream):
                        data = chunk if isinstance(chunk, bytes) else chunk.encode()
                        try:
                            self.wfile.write(data if reply.http10 else b"%x\r\n%s\r\n" % (len(data), data))
                            self.wfile.flush()
                        except ConnectionError:
                            # The gateway dropped the attempt (a hedge won).
                            record["closed_at"] = time.time()
                            self.close_connection = True
                            return
                        time.sleep(reply.gap[i] if isinstance(reply.gap, list) else reply.gap)
                    if reply.cut:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    if not reply.http10:
                        try:
                            self.wfile.write(b"0\r\n\r\n")
                        except ConnectionError:
                            record["closed_at"] = time.time()
                    return
                out = reply.body
                if out is None:
                    out = dict(OK_BODY, served_by=provider.port)
                if isinstance(out, (dict, list)):
                    out = json.dumps(out)
                if isinstance(out, str):
                    out = out.encode()
                if "Content-Type" not in reply.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if reply.truncate:
                    self.wfile.write(out[: len(out) // 10])
                    self.wfile.flush()
                    time.sleep(0.3)  # the bytes flow before the reset
                    self.close_connection = True
                    self.connection.shutdown(2)
                    record["reset_at"] = time.time()
                    return
                self.wfile.write(out)

            def open_for(self, seconds, record):
                """Waits `seconds`; False (and `closed_at` recorded) when the
                gateway closes the connection meanwhile."""
                deadline = time.time() + seconds
                while (left := deadline - time.time()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if readable and self.peer_closed():
                        record["closed_at"] = time.time()
                        self.close_connection = True
                        return False
                return True

            def peer_closed(self):
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except ConnectionError:
                    return True

            def log_message(self, *args):
                pass

        server = MockServer
        if ":" in host:

            class server(MockServer):
                address_family = socket.AF_INET6

        self.server = server((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def calls(self):
        return len(self.requests)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--retry-after", default=None)
    args = parser.parse_args()
    headers = {"Retry-After": args.retry_after} if args.retry_after else {}
    body = None if args.status == 200 else {"error": {"type": "mock", "message": f"mock {args.status}"}}
    p = Provider(Reply(status=args.status, headers=headers, body=body))
    p.server.server_close()
    p.server = MockServer(("127.0.0.1", args.port), p.server.RequestHandlerClass)
    p.port = args.port
    print(f"mock provider on 127.0.0.1:{args.port} answering {args.status}", flush=True)
    p.server.serve_forever()


if __name__ == "__main__":
    main()
