"""A running stage's output so far, for `cutor-spool tail` and the live page.

While the compile or run stage of a submission runs, `result/live/<stage>.out` holds the last
`LIVE_CAP` bytes of its output (stdout and stderr interleaved, as kept), and `<stage>.json` says how
many bytes the stage has written in all (`bytes`), so that a follower prints only what is new. They
are rewritten at most every `INTERVAL` seconds by a thread of their own, never by the supervisor's
loop, so a stage that writes fast is not slowed by it; both go when the stage ends (its whole
output is then in `<stage>.json` of the result). Judged tests and checkers have none: a test is
over in milliseconds, and a thread per test would cost more than it shows.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

from cutor_spool.atomic import make_dir, write_bytes, write_json
from cutor_spool.errors import CutorError

LIVE_DIR = "live"
LIVE_CAP = 64 * 1024
INTERVAL = 0.5
LIVE_STAGES = frozenset({"compile", "run"})


class LiveOutput:
    def __init__(self, result: Path, anchor: Path, stage: str, *, interval: float = INTERVAL) -> None:
        self.dir = result / LIVE_DIR
        self.anchor = anchor
        self.stage = stage
        self.interval = interval
        self._tail = bytearray()
        self._total = 0
        self._written = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"live-{stage}", daemon=True)

    def start(self) -> LiveOutput:
        make_dir(self.dir, beneath=self.anchor)
        self._thread.start()
        return self

    def feed(self, data: bytes) -> None:
        """Called from the supervisor's loop with each piece kept: a copy into memory, nothing else."""
        with self._lock:
            self._total += len(data)
            self._tail += data
            if len(self._tail) > 2 * LIVE_CAP:
                del self._tail[: len(self._tail) - LIVE_CAP]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        with self._lock:
            if self._total == self._written:
                return
            tail, total = bytes(self._tail[-LIVE_CAP:]), self._total
        try:
            write_bytes(self.dir / f"{self.stage}.out", tail, fsync=False, beneath=self.anchor)
            meta = {"stage": self.stage, "bytes": total, "tail": tail.decode("utf-8", "replace"), "at": time.time()}
            write_json(self.dir / f"{self.stage}.json", meta, fsync=False, beneath=self.anchor)
            self._written = total
        except CutorError:  # the claim is gone or the disk full: the stage itself goes on
            self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for name in (f"{self.stage}.out", f"{self.stage}.json"):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()
