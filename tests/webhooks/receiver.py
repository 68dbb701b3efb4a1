"""A real webhook receiver on loopback: an HTTP server in a thread that records every request
and answers as the test scripts it (a status, a pause, a redirect)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """What the receiver answers: one entry per request in turn, then `default` for the rest.

    An entry is a status code, or ("hold", status): wait until `release` is set, then answer.
    """

    answers: list[int | tuple[str, int]] = field(default_factory=list)
    default: int = 200
    location: str = ""
    release: threading.Event = field(default_factory=threading.Event)


class Receiver:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.script = Script()
        self.received: list[Received] = []
        self.times: list[float] = []  # time.monotonic() of each request's arrival
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.host = host
        self.port = self.server.server_address[1]

    def url(self, path: str = "/hook", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def wait_for(self, count: int, timeout_s: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self._lock:
            return list(self.received)

    def _answer(self, received: Received) -> int:
        with self._lock:
            self.received.append(received)
            self.times.append(time.monotonic())
            answer = self.script.answers.pop(0) if self.script.answers else self.script.default
        if isinstance(answer, tuple):
            self.script.release.wait(30)
            return answer[1]
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {key.lower(): value for key, value in self.headers.items()}
                status = receiver._answer(Received(self.path, headers, body))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", receiver.script.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        return Handler


@contextmanager
def receiver_on(host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    receiver = Receiver(host, tls)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.script.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()
