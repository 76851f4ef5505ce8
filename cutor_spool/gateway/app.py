"""The gateway's HTTP interface (Starlette): the routes, the deployment's description, the access
log and the metrics around every request (docs/gateway.md).

    GET  /healthz              200 while the spool is there (503 when it is not: a lost mount)
    GET  /metrics              Prometheus text: requests by status, in flight, latency, bytes
    GET  /{cid}                the deployment described from its spec: never its sealed env
    ANY  /{cid}/{path}         an invocation: PATH_INFO /{path}, the query as QUERY_STRING
    ANY  /{cid}                (but GET) an invocation with PATH_INFO /
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cutor_spool.deployments.cid import parse_cid
from cutor_spool.deployments.errors import DeploymentError, InvalidCid, UnknownCid
from cutor_spool.deployments.requests import read_build_record
from cutor_spool.deployments.spec import load_deployment
from cutor_spool.errors import CutorError
from cutor_spool.gateway.answers import REQUEST_ID, RETRY_AFTER, Answer, Refusal, error_answer
from cutor_spool.gateway.flow import Gateway
from cutor_spool.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)
access = logging.getLogger("cutor_spool.gateway.access")


def http_response(answer: Answer) -> Response:
    response = Response(answer.body, status_code=answer.status)
    for name, value in answer.headers:
        response.raw_headers.append((name.lower().encode("latin-1"), value.encode("utf-8")))
    if answer.entry_id is not None:
        response.raw_headers.append((REQUEST_ID.lower().encode(), answer.entry_id.encode()))
    return response


def describe(gateway: Gateway, cid: str) -> dict[str, Any]:
    """What anyone may know of a deployment: its spec without the sealed env (only whether there
    is one), whether it verifies, and its build's state. Blocking."""
    deployment = load_deployment(gateway.store, cid)  # raises for a spec that does not verify
    spec = deployment.spec
    manifest = {k: v for k, v in spec.manifest.items() if k != "env"}
    record = read_build_record(gateway.paths, cid)
    build = None if record is None else {"state": record.state.value, "work": record.work, "reason": record.reason}
    return {
        "cid": cid,
        "owner": spec.owner,
        "bundle": spec.bundle,
        "manifest": manifest,
        "sealed_env": spec.sealed_env is not None,
        "server_key": spec.server_key,
        "terms": spec.terms.cid,
        "created": spec.created,
        "build": build,
        "invoke": f"/{cid}/",
    }


class AnyMethod:
    """An ASGI endpoint for every method (Starlette routes a plain function to GET only)."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.app.dispatch(request)
        await response(scope, receive, send)


class GatewayApp:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.metrics = GatewayMetrics()
        endpoint = AnyMethod(self)
        self.starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/metrics", self.prometheus, methods=["GET"]),
                Route("/{cid}", endpoint),
                Route("/{cid}/{path:path}", endpoint),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self.gateway.waiter.start()
        try:
            yield
        finally:
            self.gateway.waiter.stop()

    async def healthz(self, request: Request) -> Response:
        ok = await to_thread.run_sync(self.gateway.paths.exists)
        self.metrics.observe("healthz", 200 if ok else 503, 0.0, 0, 0)
        if not ok:
            return JSONResponse({"ok": False, "error": "the spool is not there"}, 503)
        return JSONResponse({"ok": True, "waiting": self.gateway.waiter.waiting})

    async def prometheus(self, request: Request) -> Response:
        self.metrics.observe("metrics", 200, 0.0, 0, 0)
        doors = self.gateway.direct
        direct = (doors.served, doors.fell_back) if doors is not None else (0, 0)
        text = self.metrics.text(self.gateway.waiter.waiting, direct)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def dispatch(self, request: Request) -> Response:
        cid = request.path_params["cid"]
        rest = request.path_params.get("path")
        route = "describe" if rest is None and request.method in ("GET", "HEAD") else "invoke"
        started = time.monotonic()
        request.state.bytes_in = 0
        if route == "invoke":
            self.metrics.in_flight += 1
        try:
            if route == "describe":
                answer = await self._describe(cid)
            else:
                answer = await self.gateway.handle(request, cid, path_info(request, cid))
        except Refusal as refusal:
            answer = refusal.answer()
        except ClientDisconnect:  # gone while sending its body: its staged entry is removed
            answer = error_answer(400, "the client went away before its body was read")
        except Exception:  # the system's fault (a spool that failed us): never a 500 for the client
            log.exception("%s /%s: the gateway failed", request.method, cid)
            answer = error_answer(503, "the gateway cannot serve this now", None, [("Retry-After", RETRY_AFTER)])
        finally:
            if route == "invoke":
                self.metrics.in_flight -= 1
        elapsed = time.monotonic() - started
        bytes_in = int(getattr(request.state, "bytes_in", 0))
        self.metrics.observe(route, answer.status, elapsed, bytes_in, len(answer.body))
        client = request.client.host if request.client else "-"
        access.info(
            '%s "%s /%s%s" %d id=%s in=%d out=%d %.0fms',
            client,
            request.method,
            cid,
            "/…" if rest else "",
            answer.status,
            answer.entry_id or "-",
            bytes_in,
            len(answer.body),
            elapsed * 1000,
        )
        return http_response(answer)

    async def _describe(self, cid: str) -> Answer:
        try:
            parse_cid(cid)
        except InvalidCid as exc:
            raise Refusal(400, str(exc)) from None
        try:
            document = await to_thread.run_sync(describe, self.gateway, cid)
        except UnknownCid:
            raise Refusal(404, f"unknown CID {cid}: no such deployment in this spool") from None
        except (DeploymentError, CutorError) as exc:
            raise Refusal(502, f"the deployment does not verify: {exc}") from None
        body = JSONResponse(document).body
        return Answer(200, [("Content-Type", "application/json")], bytes(body))


def path_info(request: Request, cid: str) -> str:
    """PATH_INFO as the client sent it: what follows `/{cid}` in the raw path, not decoded (""
    for the bare `/{cid}`), so that a payer's signature over "@path" (`/{cid}` + PATH_INFO,
    deployments/payers.py) verifies on the executor byte for byte."""
    raw = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    if not raw.startswith(f"/{cid}"):  # the CID itself percent-encoded: the decoded rest, as routed
        rest = request.path_params.get("path")
        return "" if rest is None else f"/{rest}"
    rest = raw[len(cid) + 1 :]
    return rest if rest.startswith("/") else ""
