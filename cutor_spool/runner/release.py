"""Slots handed back after their claim's end, off its path.

A claim's last status is on disk before its sandbox is closed and its slot released (`/work`,
the checker's directory and `/run/cutor` unmounted, the clean marker written): none of that
changes its result, and on this path it came between the result and the commit, where a client
waits (three unmounts, about 0.3 ms; a Docker sandbox's containers far more). A normal end hands
the sandbox and its slot to this process's releaser thread, and the work thread commits and takes
its next claim at once.

Nothing of the slot is lost if the process dies before the release: its lock (a `flock`) goes
with the process, its marker still says "in use", and its next holder scans, unmounts and cleans
(slots.py). While a release is pending the slot is still locked, so no other claim can take it; a
claim that finds every slot busy waits for the pending releases once and tries again. An
exception ends the block the old way: closed and released at once, then raised.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from cutor_spool.runner.sandbox import Sandbox
from cutor_spool.runner.slots import Slot, SlotPool

log = logging.getLogger(__name__)


class Releaser:
    def __init__(self, slots: SlotPool) -> None:
        self.slots = slots
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slot-release")
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    def hand(self, sandbox: Sandbox, slot: Slot) -> None:
        """Closes `sandbox` and releases `slot` (clean if the close succeeded) in the background."""
        future = self._pool.submit(self._release, sandbox, slot)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _release(self, sandbox: Sandbox, slot: Slot) -> None:
        clean = False
        try:
            sandbox.close()
            clean = True
        except Exception:
            log.exception("slot uid %d: closing its sandbox failed; its next holder cleans it", slot.uid)
        finally:
            try:
                self.slots.release(slot, clean=clean)
            except Exception:
                log.exception("slot uid %d: release failed; its next holder cleans it", slot.uid)

    def wait(self) -> bool:
        """Waits for every release handed over so far; True if there was one."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.exception()  # _release logs its own failures
        return bool(pending)

    def close(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)
