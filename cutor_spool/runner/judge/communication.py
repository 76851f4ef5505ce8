"""One communication test (CMS's communication tasks): the problem's manager and N copies of the
submission, each in a sandbox of its own, wired by FIFOs the manager opens by name.

The FIFOs live in the manager's /work (its slot's checker directory, which no submission sees):
`/work/from_user_<i>` (process i's stdout) and `/work/to_user_<i>` (its stdin), passed to the
manager as argv pairs after the input: `INPUT from_user_0 to_user_0 from_user_1 to_user_1 ...`.
The manager starts first; the executor opens each process's two ends as the manager opens theirs
(a FIFO's open waits for the other side, so nothing is written before both are there, and an end
closes when its process or the manager ends), then starts the processes, each with only its
stdin and stdout. A manager that ends, or sits idle, before it opened them all is judged without
them. When the manager ends, the processes still running are stopped (CMS does the same).
The verdict is made as an interactive test's (interaction.verdict).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.judge.interaction import PERIOD, supervise_all
from cutor_spool.runner.sandbox import Sandbox, StageProcess
from cutor_spool.runner.stage import StageOutput, StageSpec


def fifo_names(count: int) -> list[str]:
    return [name for i in range(count) for name in (f"from_user_{i}", f"to_user_{i}")]


class Rendezvous:
    """Process i's two ends, each opened as the manager opens the other end (a FIFO's open blocks
    until both sides are there), one thread per FIFO, so the manager may open them in any order."""

    def __init__(self, aux: Path, count: int, uid: int, gid: int) -> None:
        self.paths: list[tuple[Path, int]] = []
        for i in range(count):
            for name, mode in ((f"to_user_{i}", os.O_RDONLY), (f"from_user_{i}", os.O_WRONLY)):
                path = aux / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                os.mkfifo(path, stat.S_IRUSR | stat.S_IWUSR)
                os.chown(path, uid, gid, follow_symlinks=False)
                self.paths.append((path, mode))
        self.fds: dict[int, int] = {}
        self.done = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._open, args=(n,), name="fifo-open", daemon=True)
            for n in range(len(self.paths))
        ]
        for thread in self.threads:
            thread.start()

    def _open(self, n: int) -> None:
        path, mode = self.paths[n]
        with contextlib.suppress(OSError):
            self.fds[n] = os.open(path, mode | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.done.release()

    def wait(self, manager: StageProcess, idleness: float) -> list[tuple[int, int]] | None:
        """(stdin, stdout) per process once the manager has opened all its FIFOs; None when it
        ended, or was idle for `idleness`, first (it is then stopped)."""
        opened, last, since = 0, None, time.monotonic()
        while opened < len(self.paths):
            if self.done.acquire(timeout=PERIOD):
                opened += 1
                continue
            cpu = manager.cpu_seconds()
            if cpu is None or time.monotonic() - since >= idleness:
                manager.kill()
                self._abandon()
                return None
            if cpu != last:
                last, since = cpu, time.monotonic()
        return [(self.fds[2 * i], self.fds[2 * i + 1]) for i in range(len(self.paths) // 2)]

    def _abandon(self) -> None:
        """Unblocks the opens still waiting (by opening their other end) and closes everything."""
        for n, (path, mode) in enumerate(self.paths):
            if n not in self.fds:
                other = os.O_WRONLY if mode == os.O_RDONLY else os.O_RDONLY
                with contextlib.suppress(OSError):
                    os.close(os.open(path, other | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC))
        for thread in self.threads:
            thread.join()
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


@dataclass(frozen=True)
class Session:
    """A test's outputs: the processes' in order, the manager's, whether the idleness watch stopped
    them, and which processes were stopped because the manager had ended."""

    processes: tuple[StageOutput, ...]
    manager: StageOutput
    idle: bool
    stopped: frozenset[int]


def communicate(
    boxes: Sequence[Sandbox],
    specs: Sequence[StageSpec],
    manager: tuple[Sandbox, StageSpec],
    cancel: threading.Event,
    idleness: float,
) -> Session:
    """Runs process i (boxes[i], specs[i]) against the manager, whose /work must hold no FIFOs yet."""
    box, spec = manager
    slot = box.slot
    fifos = Rendezvous(slot.aux, len(boxes), slot.uid, slot.gid)
    started = [box.spawn(spec, cancel, stdout=None)]  # the manager first: it opens the FIFOs
    ends = fifos.wait(started[0], idleness)
    if ends is None:  # it ended, or hung, before it opened them all: no process ran
        return Session((), started[0].wait(), False, frozenset())
    try:
        for (stdin, stdout), sub_box, sub_spec in zip(ends, boxes, specs, strict=True):
            started.append(sub_box.spawn(sub_spec, cancel, stdin=stdin, stdout=stdout))
    except BaseException:
        for stage in started:
            stage.kill()
            stage.wait()
        raise
    finally:
        fifos.close()
    stopped: set[int] = set()

    def stop_the_rest() -> None:
        started[0].wait()
        for i, stage in enumerate(started[1:]):
            if stage.cpu_seconds() is not None:
                stopped.add(i)
                stage.kill()

    threading.Thread(target=stop_the_rest, name="manager-ended", daemon=True).start()
    outputs, idle = supervise_all(tuple(started), idleness)
    return Session(tuple(outputs[1:]), outputs[0], idle, frozenset(stopped))


def _close_pipe(stage: StageProcess) -> None:
    """A stage spawned with stdout=PIPE whose output nobody reads: we close our end."""
    if stage.stdout is not None:
        os.close(stage.stdout)
        stage.stdout = None


def copy_work(source: Sandbox, target: Sandbox, limits: Limits, cancel: threading.Event) -> None:
    """The compiled /work of `source` into `target`'s, by a tar from one sandbox to the other (the
    executor never reads a /work a job has used)."""
    pack = source.spawn(StageSpec("copy_work", ("tar", "-C", "/work", "-cf", "-", "."), limits), cancel)
    assert pack.stdout is not None
    try:
        unpack = target.spawn(
            StageSpec("copy_work", ("tar", "-C", "/work", "--no-same-owner", "-xf", "-"), limits),
            cancel,
            stdin=pack.stdout,
        )
    finally:
        os.close(pack.stdout)
    _close_pipe(unpack)
    packed, unpacked = pack.wait(), unpack.wait()
    if not (packed.ok and unpacked.ok):
        why = (packed.stderr + unpacked.stderr).decode("utf-8", "replace").strip()[:500]
        raise SandboxError(f"the compiled /work could not be copied to another sandbox: {why}")
