"""A fault-injecting HTTP proxy on 127.0.0.1, between reprieve and S3.

Each request from the client is read whole (headers and Content-Length
body) and then, at the chosen rate, answered with an S3-style 500, dropped
(both connections closed without an answer), delayed, or (kind "flip", not
among the defaults) forwarded with one byte of its body inverted, as a
faulty link would; otherwise it is forwarded. Answers are relayed as raw
bytes. HTTP/1.1 clients do not pipeline, so a request boundary is a moment
when no answer is in flight, and injecting there is safe.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from contextlib import suppress

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected fault</Message></Error>"
)


class FaultProxy:
    def __init__(self, target_port: int, rate: float, seed: int, delay_s: float = 0.3) -> None:
        self.target_port = target_port
        self.rate = rate
        self.delay_s = delay_s
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.faults = {"error": 0, "drop": 0, "slow": 0, "flip": 0, "ok": 0}
        # When set, only requests whose request line contains this are faulted.
        self.only: bytes | None = None
        self.kinds: tuple[str, ...] = ("error", "drop", "slow")
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        with suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _fate(self) -> str:
        with self._rng_lock:
            roll = self._rng.random()
            kind = self._rng.choice(self.kinds)
        fate = kind if roll < self.rate else "ok"
        self.faults[fate] += 1
        return fate

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        try:
            while True:
                request = _read_request(client)
                if request is None:
                    return
                line = request.split(b"\r\n", 1)[0]
                fate = self._fate() if self.only is None or self.only in line else "ok"
                if fate == "error":
                    client.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                        + f"Content-Length: {len(ERROR_BODY)}\r\n".encode()
                        + b"Connection: close\r\n\r\n"
                        + ERROR_BODY
                    )
                    return
                if fate == "drop":
                    return
                if fate == "slow":
                    time.sleep(self.delay_s)
                if fate == "flip":
                    request = _flip(request)
                upstream.sendall(request)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _flip(request: bytes) -> bytes:
    """The request with the middle byte of its body (if any) inverted."""
    start = request.index(b"\r\n\r\n") + 4
    if start == len(request):
        return request
    at = start + (len(request) - start) // 2
    return request[:at] + bytes([request[at] ^ 0xFF]) + request[at + 1 :]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(1 << 16):
            sink.sendall(data)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _read_request(sock: socket.socket) -> bytes | None:
    """One whole request (headers and Content-Length body), or None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(1 << 16)
        if not data:
            return None
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    lines = head.split(b"\r\n")
    kept = lines[:1]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"expect" and b"100-continue" in value.lower():
            # Answer the client ourselves; the request goes upstream whole.
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            continue
        kept.append(line)
    head = b"\r\n".join(kept)
    while len(body) < length:
        data = sock.recv(min(1 << 20, length - len(body)))
        if not data:
            return None
        body += data
    return head + b"\r\n\r\n" + body
