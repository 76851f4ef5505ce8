"""An exec's output: starting it over the engine's socket, and splitting the multiplexed stream.

The SDK's `exec_start(socket=True)` reads the HTTP upgrade response through a buffered reader and
hands back the socket underneath: output that arrived together with the response headers would
stay in that buffer and be lost. The upgrade is a few lines of HTTP, so it is done here, on a
socket of our own, keeping whatever follows the headers. Without a TTY the engine multiplexes
stdout and stderr into frames: an 8-byte header (stream: 1 stdout, 2 stderr, 3 the engine's own
error; three zero bytes; a big-endian 32-bit length) and the payload.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from cutor_spool.errors import SandboxError

HEADER = struct.Struct(">BxxxL")
STREAMS = {1: "stdout", 2: "stderr", 3: "engine"}
MAX_HEAD = 64 * 1024


def start_request(api_version: str, exec_id: str) -> bytes:
    body = json.dumps({"Detach": False, "Tty": False}).encode()
    head = (
        f"POST /v{api_version}/exec/{exec_id}/start HTTP/1.1\r\n"
        "Host: docker\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: Upgrade\r\n"
        "Upgrade: tcp\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


def start_exec(socket_path: str, api_version: str, exec_id: str, timeout: float) -> tuple[socket.socket, bytes]:
    """Starts an exec; returns the connected socket (non-blocking) and the stream bytes that came
    with the response headers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(start_request(api_version, exec_id))
        received = bytearray()
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                raise SandboxError(f"exec {exec_id[:12]}: the engine closed the connection before answering")
            received += chunk
            if len(received) > MAX_HEAD:
                raise SandboxError(f"exec {exec_id[:12]}: no end to the engine's response headers")
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if code not in (101, 200):  # 101: upgraded; 200: an engine that streams without upgrading
            raise SandboxError(f"exec {exec_id[:12]}: the engine answered {status_line!r}: {_error_text(sock, rest)}")
        sock.setblocking(False)
        return sock, rest
    except BaseException:
        sock.close()
        raise


def _error_text(sock: socket.socket, rest: bytes) -> str:
    body = bytearray(rest)
    try:
        while len(body) < MAX_HEAD:
            chunk = sock.recv(4096)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    text = body.decode("utf-8", "replace").strip()
    try:
        return str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        return text[:500]


@dataclass
class FrameReader:
    """Splits the multiplexed stream into (stream name, payload) pieces as bytes arrive; a frame's
    payload is passed on as soon as any of it is here (a flood need not be buffered whole)."""

    pending: bytearray = field(default_factory=bytearray)
    stream: str = ""
    left: int = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        self.pending += data
        while self.pending:
            if self.left == 0:
                if len(self.pending) < HEADER.size:
                    return
                kind, self.left = HEADER.unpack_from(self.pending)
                del self.pending[: HEADER.size]
                self.stream = STREAMS.get(kind, "engine")
                continue
            piece = bytes(self.pending[: self.left])
            del self.pending[: len(piece)]
            self.left -= len(piece)
            yield self.stream, piece
