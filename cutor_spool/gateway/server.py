"""Running the gateway: one process, one asyncio loop, uvicorn (h11) on one listening socket.

uvicorn handles SIGTERM and SIGINT: it stops accepting, lets the requests in flight finish for
`graceful` seconds, then closes. A request cut off by a stop loses nothing: its invocation is in
the spool and ends there; the client retries with the same Idempotency-Key and gets its answer
from another gateway.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from cutor_spool.gateway.app import GatewayApp

log = logging.getLogger(__name__)


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT; raises ValueError."""
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not host:
        raise ValueError(f"{value!r}: expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:8080)")
    number = int(port)
    if number > 65535:
        raise ValueError(f"{value!r}: the port is above 65535")
    return host.removeprefix("[").removesuffix("]"), number


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP. With
    # Nagle on, every answer after the first on a keep-alive connection (headers and body in two
    # writes) waited for the client's delayed ACK: 40 ms each (benchmarks/request_flow.py).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, but a stop asked for by SIGTERM or SIGINT ends with exit 0 once graceful
        (uvicorn raises the signal again after its shutdown: a death by SIGTERM)."""
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(app: GatewayApp, sock: socket.socket, *, graceful: int) -> None:
    config = uvicorn.Config(
        app.starlette,
        log_config=None,  # the CLI's logging; our own access log (no query strings, no bodies)
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful,
        timeout_keep_alive=30,
        limit_concurrency=None,
        http="h11",
        loop="asyncio",
    )
    server = _Server(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    log.warning("cutor-spool gateway: listening on http://%s:%d", shown, port)
    server.run(sockets=[sock])
