"""One request to a warm server: HTTP/1.1 over its Unix socket (runner/invocations/warm.py).

The executor is the client, with the standard library's `http.client` over a Unix socket: one
connection per request (`Connection: close`; connecting to a Unix socket costs microseconds), the
request's method, path, query, headers and body as the gateway received them, the answer read into
a `Response`. The socket is reached through a descriptor opened once without following anything
(`/proc/self/fd/N`), so a server that replaces its socket by a symlink to a host socket is never
followed there (the executor is root).

Headers going in: the caller's, except `Authorization` (credentials are the gateway's business, as
for CGI) and the hop-by-hop ones (RFC 9110 7.6.1), which are the connection's; `Host` is the
caller's or `localhost`; `Content-Length` is the body's. Coming out: the status, its reason, the
headers in order without the hop-by-hop ones and `Content-Length` (the body is whole), the body
byte for byte; a body above the stage's output limit is a 502.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass

from cutor_spool.documents.deployment import InvocationRequest, Response
from cutor_spool.runner.invocations import cgi

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
DROPPED_IN = HOP_BY_HOP | {"authorization", "content-length", "host", "proxy-authorization"}
DROPPED_OUT = HOP_BY_HOP | {"content-length"}
_CHUNK = 1 << 16


class ServerFailed(Exception):
    """The server broke the exchange (closed, reset, malformed answer): a 502."""


class ServerTimedOut(Exception):
    """The server did not answer within the request's wall clock: a 504."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, address: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Exchange:
    """One request in flight; `abort` (from another thread, at the deadline) ends its waiting."""

    address: str
    timeout: float
    connection: _UnixConnection | None = None
    aborted: bool = False

    def abort(self) -> None:
        self.aborted = True
        conn = self.connection
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def send(self, request: InvocationRequest, body: bytes, max_body: int) -> Response:
        conn = _UnixConnection(self.address, self.timeout)
        self.connection = conn
        try:
            return self._send(conn, request, body, max_body)
        except TimeoutError as exc:
            raise ServerTimedOut("the server did not answer in time") from exc
        except (OSError, http.client.HTTPException) as exc:
            if self.aborted:
                raise ServerTimedOut("the server did not answer in time") from exc
            raise ServerFailed(f"the server broke the exchange: {type(exc).__name__}: {exc}"[:500]) from exc
        finally:
            conn.close()

    def _send(self, conn: _UnixConnection, request: InvocationRequest, body: bytes, max_body: int) -> Response:
        target = (request.path or "/") + (f"?{request.query}" if request.query else "")  # "": the bare /{cid}
        conn.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
        host = "localhost"
        for name, value in request.headers:
            lower = name.lower()
            if lower == "host":
                host = value
            if lower not in DROPPED_IN:
                conn.putheader(name, value.encode("utf-8", "surrogateescape"))
        conn.putheader("Host", host)
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body)
        answer = conn.getresponse()
        data = bytearray()
        while len(data) <= max_body:
            chunk = answer.read(_CHUNK)
            if not chunk:
                break
            data += chunk
        if len(data) > max_body:
            return cgi.bad_gateway(f"the server's answer is larger than the output limit of {max_body} bytes")
        if self.aborted:
            raise ServerTimedOut("the server did not answer in time")
        return response_of(answer, bytes(data))


def response_of(answer: http.client.HTTPResponse, body: bytes) -> Response:
    if not 100 <= answer.status <= 599:
        return cgi.bad_gateway(f"the server answered the status {answer.status}")
    headers = [(name, value) for name, value in answer.getheaders() if name.lower() not in DROPPED_OUT]
    reason = answer.reason or None
    return Response(status=answer.status, reason=reason, headers=headers, **cgi.body_fields(body))
