"""Raw-socket clients for the push hardening tests: exactly the bytes a hostile local client sends.

Every connection goes to 127.0.0.1 only, with a timeout, and is closed by the caller's ``with``.
"""
from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RawReply:
    status: int
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def raw_request(port: int, head: bytes, body: bytes = b"", *, timeout_s: float = 10.0) -> RawReply:
    """Send ``head`` (request line + headers, without the blank line) and ``body``; read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(head + b"\r\nConnection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head_part, _, payload = data.partition(b"\r\n\r\n")
    return RawReply(int(head_part.split(b" ", 2)[1]), payload)


def post(port: int, path: bytes, body: bytes, token: str, content_type: bytes = b"application/json") -> RawReply:
    head = (b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Type: " + content_type)
    return raw_request(port, head, body)


def wait_closed(conn: socket.socket, deadline: float) -> tuple[float, bytes]:
    """Read until the peer closes (-> the time it closed, what it sent) or ``deadline`` passes (-> inf)."""
    got = b""
    while time.monotonic() < deadline:
        conn.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic(), got
        if not chunk:
            return time.monotonic(), got
        got += chunk
    return float("inf"), got
