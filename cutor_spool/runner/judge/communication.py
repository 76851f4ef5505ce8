"""One communication test (CMS's communication tasks): the problem's manager and N copies of the
submission, each in a sandbox of its own, wired by FIFOs the manager opens by name.

The FIFOs live in the manager's /work (its slot's checker directory, which no submission sees):
`/work/from_user_<i>` (process i's stdout) and `/work/to_user_<i>` (its stdin), passed to the
manager as argv pairs after the input: `INPUT from_user_0 to_user_0 from_user_1 to_user_1 ...`.
The executor opens each process's ends before it starts (a process sees only its stdin and stdout)
and keeps a reader of each `from_user` until the manager has ended, so that a process never
writes into a FIFO nobody has opened yet; when the manager ends, the processes still running are
stopped (CMS does the same). The verdict is the interactor's (interaction.verdict).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.judge.interaction import supervise_all
from cutor_spool.runner.sandbox import Sandbox, StageProcess
from cutor_spool.runner.stage import StageOutput, StageSpec


def fifo_names(count: int) -> list[str]:
    return [name for i in range(count) for name in (f"from_user_{i}", f"to_user_{i}")]


@dataclass
class Fifos:
    """Process i's stdin and stdout ends, and the readers held until the manager has ended."""

    stdins: list[int]
    stdouts: list[int]
    held: list[int]

    @classmethod
    def make(cls, aux: Path, count: int, uid: int, gid: int) -> Fifos:
        fifos = cls([], [], [])
        try:
            for i in range(count):
                for name in (f"from_user_{i}", f"to_user_{i}"):
                    path = aux / name
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    os.mkfifo(path, stat.S_IRUSR | stat.S_IWUSR)
                    os.chown(path, uid, gid, follow_symlinks=False)
                flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                held = os.open(aux / f"from_user_{i}", os.O_RDONLY | flags)
                fifos.held.append(held)
                fifos.stdouts.append(_blocking(os.open(aux / f"from_user_{i}", os.O_WRONLY | flags)))
                fifos.stdins.append(_blocking(os.open(aux / f"to_user_{i}", os.O_RDONLY | flags)))
        except BaseException:
            fifos.close()
            raise
        return fifos

    def close_ends(self) -> None:
        for fd in (*self.stdins, *self.stdouts):
            os.close(fd)
        self.stdins, self.stdouts = [], []

    def close(self) -> None:
        self.close_ends()
        for fd in self.held:
            os.close(fd)
        self.held = []


def _blocking(fd: int) -> int:
    os.set_blocking(fd, True)
    return fd


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
    fifos = Fifos.make(slot.aux, len(boxes), slot.uid, slot.gid)
    started: list[StageProcess] = []
    try:
        for i, (sub_box, sub_spec) in enumerate(zip(boxes, specs, strict=True)):
            started.append(sub_box.spawn(sub_spec, cancel, stdin=fifos.stdins[i], stdout=fifos.stdouts[i]))
            _close_pipe(started[-1])
        fifos.close_ends()
        started.append(box.spawn(spec, cancel, stdout=None))
    except BaseException:
        fifos.close()
        for stage in started:
            stage.kill()
            stage.wait()
        raise
    stopped: set[int] = set()

    def stop_the_rest() -> None:
        started[-1].wait()
        for i, stage in enumerate(started[:-1]):
            if stage.cpu_seconds() is not None:
                stopped.add(i)
                stage.kill()
        fifos.close()

    threading.Thread(target=stop_the_rest, name="manager-ended", daemon=True).start()
    outputs, idle = supervise_all(tuple(started), idleness)
    return Session(tuple(outputs[:-1]), outputs[-1], idle, frozenset(stopped))


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
