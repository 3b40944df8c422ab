"""A webhook receiver for tests, on loopback, and the check of Scribe's webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A webhook receiver on loopback: records every call; ``/flaky`` answers 500 twice then 200,
    ``/reject`` answers ``reject_status`` (400), anything else 200."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.reject_status = 400
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    seen = sum(1 for call in receiver.calls if call["path"] == self.path)
                    receiver.calls.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    if self.path == "/flaky":
                        status = 500 if seen < 2 else 200
                    elif self.path == "/reject":
                        status = receiver.reject_status
                    else:
                        status = 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def on(self, path: str) -> list[dict]:
        with self.lock:
            return [call for call in self.calls if call["path"] == path]

    def wait_for(self, path: str, count: int, timeout_s: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            calls = self.on(path)
            if len(calls) >= count:
                return calls
            time.sleep(0.2)
        raise TimeoutError(f"{path}: {len(self.on(path))} calls, expected {count}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signatures(call: dict) -> list[str]:
    header = call["headers"]["x-scribe-signature"]
    return [part.strip().removeprefix("v1=") for part in header.split(",")]


def signed_by(call: dict, secret: str) -> bool:
    expected = hmac.new(
        secret.encode(), call["headers"]["x-scribe-timestamp"].encode() + b"." + call["body"], hashlib.sha256
    ).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures(call))
