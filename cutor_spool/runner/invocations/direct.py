"""The direct door: a gateway on the same host sends a warm deployment's request straight to this
executor's WarmPool, with no spool entry (docs/gateway.md "The direct path").

The executor that keeps a warm pool listens on a Unix socket in a root-only directory of its
state directory (the directory 0700, the socket 0600, root's: connect(2) needs write permission
on the socket, and the door also refuses a peer whose SO_PEERCRED uid is not 0), and names it in
`invocations/doors/<worker id>.json` (direct_wire.py) for the gateways of its host to find. Each
connection is served by a thread of its own, frame after frame.

A request is served only by a live instance of its deployment (a cold start takes the spool
path: the door answers `fallback`, and so it does when the instance stays busy for `BUSY_WAIT`).
Once the instance is the request's: its payer is checked as on the spool path (payment.py's
`payer_of`: a signature verified over the body, its nonce recorded for the request's id, an
exclusive create: a replay is refused, 401), its worst case reserved in the account's block
(blocks.py: 402 with nothing run when the account cannot cover it), then one exchange with the
instance, and its real cost (the fee plus the rate for the exchange's wall time, as a warm
request on the spool path) spent in the block.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cutor_spool.atomic import write_json
from cutor_spool.deployments.errors import DeploymentError
from cutor_spool.deployments.spec import Deployment, load_deployment
from cutor_spool.documents.deployment import InvocationRequest
from cutor_spool.errors import CutorError
from cutor_spool.ledger import InsufficientFunds, Ledger, cost_of, format_amount
from cutor_spool.runner.invocations.blocks import BlockBook
from cutor_spool.runner.invocations.context import Refused, Services
from cutor_spool.runner.invocations.direct_wire import HEAD, MAX_HEADER, doors_dir, frame, header_of, here
from cutor_spool.runner.invocations.payment import most_cost, payer_of
from cutor_spool.runner.invocations.warm import WarmPool
from cutor_spool.runner.invocations.warm_instance import Instance

log = logging.getLogger(__name__)

BUSY_WAIT = 1.0  # seconds a request waits for its busy instance before it takes the spool path
REFUSED_STATUS = {"signature": 401, "payer": 402, "request": 400, "body": 413}
_TICK = 0.1
PUBLISH_RETRY = 5.0  # seconds between tries to name the door in a spool that refused it
_SOCKET_MAX = 100  # sun_path is 108 bytes


class DirectDoor:
    def __init__(self, services: Services, pool: WarmPool, *, worker_id: str, state_dir: Path) -> None:
        self.services, self.pool, self.worker_id = services, pool, worker_id
        self.config = services.config
        settings = self.config.deployments
        self.book = BlockBook(Ledger(services.paths.root), worker_id, margin=settings.hold_margin)
        self.record = doors_dir(services.paths) / f"{worker_id}.json"
        self.directory = state_dir / "door"
        if len(os.fsencode(self.directory / f"door-{os.getpid()}.sock")) > _SOCKET_MAX:
            self.directory = Path(tempfile.mkdtemp(prefix="cutor-door-"))  # 0700
        self.address = str(self.directory / f"door-{os.getpid()}.sock")
        self._deployments: OrderedDict[str, Deployment] = OrderedDict()
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._published = False  # its record is in invocations/doors/
        self._retry_at = 0.0  # when to try naming it again (monotonic)

    # -- its life ------------------------------------------------------------------------------
    def start(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        _remove_dead_sockets(self.directory)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.address)  # made 0600: never a moment when others could connect
        finally:
            os.umask(old)
        os.chmod(self.address, 0o600)
        listener.listen(256)
        self._listener = listener
        for target, name in ((self._accept, "direct-door"), (self._sweep, "direct-blocks")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._published = self._publish()
        log.info("direct door open on %s", self.address)

    def _publish(self) -> bool:
        """Names the door in the spool for the gateways of this host. A spool that cannot take it
        (a full disk, a lost mount) does not stop the executor: requests take the spool path, as
        with no door, and the sweeper tries again."""
        try:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            _forget_dead(self.record.parent)
            write_json(self.record, {**here(), "socket": self.address, "pid": os.getpid()})
        except (OSError, CutorError) as exc:
            if self._retry_at == 0.0:  # once, not at every try
                log.warning("the direct door cannot be named in the spool yet (%s): gateways use the spool path", exc)
            self._retry_at = time.monotonic() + PUBLISH_RETRY
            return False
        if self._retry_at:
            log.info("the direct door is named in the spool now")
        return True

    def close(self) -> None:
        """No new requests; those in flight end; every block settled. Before the pool closes."""
        with contextlib.suppress(FileNotFoundError):
            self.record.unlink()
        self._closing.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)  # the answer in flight still goes out
        for thread in self._threads:
            thread.join(30)
        self.book.sweep(everything=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)

    def _sweep(self) -> None:
        while not self._closing.is_set():
            self.book.wake.wait(_TICK)
            if not self._published and time.monotonic() >= self._retry_at:
                self._published = self._publish()
            try:
                self.book.sweep()
            except Exception:  # a failed settle is logged by the book; this thread goes on
                log.exception("the direct door's blocks")

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid != 0:  # the socket's mode says so already; this says it again
                conn.close()
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="direct-conn", daemon=True)
            with self._lock:
                self._connections.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                size = reader.read(HEAD.size)
                if len(size) < HEAD.size:
                    return
                (length,) = HEAD.unpack(size)
                if length > MAX_HEADER:
                    return
                header = header_of(reader.read(length))
                body = reader.read(header["length"])
                if len(body) != header["length"]:
                    return
                conn.sendall(self.handle(header, body))
        except (OSError, ValueError) as exc:
            log.debug("a direct connection ended: %s", exc)
        except Exception:  # a bad frame (a missing field), or the system failed the request: the
            log.exception("a direct request failed")  # gateway sees the connection close: 503
        finally:
            with self._lock:
                self._connections.discard(conn)
            reader.close()
            conn.close()

    # -- a request -----------------------------------------------------------------------------
    def handle(self, header: dict[str, Any], body: bytes) -> bytes:
        if self._closing.is_set():
            return frame({"kind": "fallback", "message": "the executor is stopping"})
        entry = str(header["id"])
        request = InvocationRequest(
            deployment=header["cid"],
            method=header["method"],
            path=header["path"],
            query=header["query"],
            headers=[(str(n), str(v)) for n, v in header["headers"]],
        )
        paid: list[tuple[Any, int]] = []

        def pay(inst: Instance) -> None:
            deployment = self._deployment(request.deployment)
            account = payer_of(self.services.nonces, entry, request, deployment, body)
            wall = inst.limits.wall_time
            most = most_cost(self.config, wall)
            paid.append((self.book.reserve(account, most, wall), most))

        try:
            got = self.pool.exchange_live(request.deployment, request, body, pay, wait=BUSY_WAIT)
        except Refused as exc:
            where = exc.problems[0].where if exc.problems else ""
            return frame({"kind": "refused", "status": REFUSED_STATUS.get(where, 502), "message": str(exc)})
        except InsufficientFunds as exc:
            message = (
                f"insufficient funds: {exc.account} has {format_amount(exc.available)} credits available, "
                f"the invocation may cost {format_amount(exc.needed)}"
            )
            return frame({"kind": "refused", "status": 402, "message": message})
        except DeploymentError as exc:
            return frame({"kind": "refused", "status": 502, "message": f"the deployment cannot be used: {exc}"})
        except BaseException:
            for block, most in paid:
                self.book.cancel(block, most)
            raise
        if got is None:
            return frame({"kind": "fallback", "message": "no live instance took it"})
        response, record, _ = got
        block, most = paid[0]
        settings = self.config.deployments
        self.book.spend(block, most, entry, cost_of(settings.fee, settings.rate, record["wall_time"]))
        document = response.model_dump(mode="json", exclude={"body", "body_base64"})
        body_out = response.body.encode() if response.body is not None else _b64(response.body_base64)
        return frame({"kind": "answer", "response": document}, body_out)

    def _deployment(self, cid: str) -> Deployment:
        with self._lock:
            found = self._deployments.get(cid)
        if found is None:
            maximum = self.config.limits.resolved_maximum()
            found = load_deployment(self.services.store, cid, maximum=maximum)
            with self._lock:
                self._deployments[cid] = found
                while len(self._deployments) > 64:
                    self._deployments.popitem(last=False)
        return found


def _remove_dead_sockets(directory: Path) -> None:
    """`door-<pid>.sock` of executors that died without closing their door (SIGKILL)."""
    for path in directory.glob("door-*.sock"):
        try:
            os.kill(int(path.name[5:-5]), 0)
        except ProcessLookupError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        except (ValueError, OSError):
            continue


def _forget_dead(doors: Path) -> None:
    """Removes the records of this host's doors whose executor died (SIGKILL, a crash: nobody
    removed them) or that are from an earlier boot. Gateways skip them anyway (connect fails)."""
    me = here()
    for path in doors.glob("*.json"):
        try:
            record = json.loads(path.read_bytes())
            if not isinstance(record, dict) or record.get("host") != me["host"]:
                continue
            if record.get("boot_id") == me["boot_id"]:
                os.kill(int(record["pid"]), 0)
                continue
        except ProcessLookupError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _b64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""
