"""`result/` inside a submission: status.json at every transition, events.jsonl, one JSON per stage.

The state machine (DESIGN section 4, the seeds' status flow and the judge diagram of seed 003):

    queued -> claimed -> [installing_dependencies -> dependencies_installed]
           -> [compiling -> compiled] -> running | testing -> done | invalid | error

`status.json` is rewritten atomically at each transition, with a timestamp per state reached;
`events.jsonl` is append-only (transitions and messages, every attempt's). The states that
mark a step's start are held back (`defer`): `claimed`, `compiling`, `running`, and the judge's
`testing` of each test. Their status.json and event line go to disk with the next write, or at
the next tick of the process's background writer (live.py, every `live.TICK`), so a reader lags
at most that much behind a slow step, while a fast one costs no file of its own: a trivial run
writes its status.json once, at its end, and the judge one status.json and one append fewer per
judged test, on a path where every new file costs
(docs/benchmarks.md, "The files of a submission"). All writes go through paths that contain the
claim's token, so a worker that lost its lease cannot write into the next claim (see
`atomic.py`), and every one is opened below active/ without following a symlink: the claim made
`result/` itself, in an entry its client can no longer change (`watcher/custody.py`).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cutor_spool.atomic import (
    TEMPORARY_PREFIX,
    append_lines,
    clear_unless_regular,
    make_dir,
    write_bytes,
    write_json,
    write_json_in_two,
)
from cutor_spool.documents.dependencies import DependenciesDocument
from cutor_spool.documents.states import RESULT_DIR, TERMINAL, Outcome, State
from cutor_spool.documents.status import StageSummary, StatusDocument
from cutor_spool.errors import CutorError, LeaseLost, SpoolIOError
from cutor_spool.nofollow import opened_dir, relative
from cutor_spool.runner.live import BACKGROUND
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.watcher.claim import Claim, iso
from cutor_spool.watcher.maintenance import Active
from cutor_spool.watcher.queue import WorkerIdentity

STAGE_OUTCOME = {
    StageStatus.OK: Outcome.OK,
    StageStatus.RUNTIME_ERROR: Outcome.RUNTIME_ERROR,
    StageStatus.SIGNALED: Outcome.RUNTIME_ERROR,
    StageStatus.SECURITY_VIOLATION: Outcome.RUNTIME_ERROR,  # the stage's own status says which
    StageStatus.TIME_LIMIT: Outcome.TIME_LIMIT,
    StageStatus.WALL_TIME_LIMIT: Outcome.TIME_LIMIT,
    StageStatus.MEMORY_LIMIT: Outcome.MEMORY_LIMIT,
    StageStatus.OUTPUT_LIMIT: Outcome.OUTPUT_LIMIT,
}


def stage_summary(output: StageOutput) -> StageSummary:
    return StageSummary(
        status=output.status,
        exit_code=output.exit_code,
        cpu_time=round(output.cpu_time, 6),
        wall_time=round(output.wall_time, 6),
        memory=output.memory,
    )


class Reporter:
    """Writes one claim's results. `active` is the worker's record of the claim, which its
    heartbeat shows: the reporter keeps its state, and with CPU pinning its slot's CPU, current."""

    def __init__(
        self,
        claim: Claim,
        worker: WorkerIdentity,
        *,
        backend: str = "",
        active: Active | None = None,
    ) -> None:
        self.claim = claim
        self.dir = claim.path / RESULT_DIR
        self.anchor = claim.anchor
        self._active = active
        self._pending: list[dict[str, Any]] = []  # event lines held back (see `transition`)
        self._held = False  # a status or event lines held back, to be written
        self._lazy: dict[str, Any] = {}  # status fields given and not yet validated (see `status`)
        self._later: list[Future[None]] = []  # result files being written by _WRITER (see `stage`)
        self._finals: list[Future[None]] = []  # the terminal status.json being made durable
        self._unsynced: list[Path] = []  # result files written since the last fsync
        self._made: set[Path] = set()  # directories of stage results (tests/) made
        self._lock = threading.Lock()  # the work thread's writes against the background writer's
        self.before_final: Callable[[State], None] | None = None  # runner/invocations/payment.py
        queued_at = claim.queued_at
        self._doc = StatusDocument(
            id=claim.entry_id,
            state=State.QUEUED,
            outcome=None,
            attempts=claim.attempt,
            worker=worker.worker_id,
            host=worker.host,
            backend=backend,
            states={State.QUEUED.value: iso(queued_at)} if queued_at else {},
            stages={},
            submitter=claim.submitter,
        )

    @property
    def status(self) -> StatusDocument:
        """The status as it stands. Fields given since the last read are validated into the
        document here, once: a judge's held-back `testing` of each test only notes its fields."""
        if self._lazy:
            fields, self._lazy = self._lazy, {}
            # model_validate, not model_copy: the fields are checked against the document (a
            # writer never emits an undeclared field), and the ones given are marked given.
            self._doc = StatusDocument.model_validate({**self._doc.model_dump(exclude_unset=True), **fields})
        return self._doc

    def _current(self, field: str) -> Any:
        """A field's current value, without validating the fields given since (see `status`)."""
        return self._lazy[field] if field in self._lazy else getattr(self._doc, field)

    def slot_taken(self, uid: int, cpu: int | None) -> None:
        """The claim's slot: its uid (`sandbox_uid`) and, with CPU pinning, its CPU
        (`sandbox_cpu`) in status.json from its next write on, and the CPU in the heartbeat."""
        self.note(sandbox_uid=uid, **({"sandbox_cpu": cpu} if cpu is not None else {}))
        if self._active is not None:
            self._active.cpu = cpu

    def helper_slot(self, role: str, uid: int, cpu: int | None, *, taken: bool = True) -> None:
        """A slot the submission uses besides its own, by role (`interactor`): in status.json's
        `helper_sandboxes` from its next write on, and while it is held, its CPU in the heartbeat."""
        if taken:
            helpers = {**(self._current("helper_sandboxes") or {}), role: {"uid": uid, "cpu": cpu}}
            self.note(helper_sandboxes=helpers)
        if self._active is not None and cpu is not None:
            if taken:
                self._active.helper_cpus.append(cpu)
            elif cpu in self._active.helper_cpus:
                self._active.helper_cpus.remove(cpu)

    def note(self, **fields: Any) -> None:
        """Adds fields to status.json from its next write on (`sandbox_uid`, say)."""
        self._update(fields)

    def _update(self, fields: dict[str, Any]) -> None:
        self._lazy.update(fields)

    def start(self) -> None:
        """A fresh attempt: stage results of an earlier, unfinished attempt are removed, and so
        is whatever a client planted under the names written here, and the temporary files of
        writes a lost claim left unfinished (`write_json_in_two`). Nothing in result/ is
        trusted: not a status (a forged "accepted" must never be taken for the spool's), not a
        symlink (a root worker would write or delete through it)."""
        with opened_dir(self.anchor, relative(self.dir, self.anchor)) as result:
            for entry in os.scandir(result):
                if entry.name in ("events.jsonl", "status.json"):
                    clear_unless_regular(self.dir / entry.name, beneath=self.anchor)  # every attempt's events
                elif (
                    entry.name in {"tests", "junit.xml"}
                    or entry.name.endswith(".json")
                    or entry.name.startswith(TEMPORARY_PREFIX)  # a lost claim's unfinished write
                ):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.name, dir_fd=result)  # does not follow symlinks inside
                    else:
                        os.unlink(entry.name, dir_fd=result)  # a symlink is unlinked, never followed
        self.transition(State.CLAIMED, message=f"attempt {self.claim.attempt}")

    def event(self, kind: str, *, defer: bool = False, **fields: Any) -> None:
        """Appends an event line; `defer` holds it back like a deferred state (see `transition`)."""
        record = {"at": iso(time.time()), "event": kind, "attempt": self.claim.attempt, **fields}
        with self._lock:
            if defer:
                self._hold(record)
            else:
                self._append(record)

    def _hold(self, record: dict[str, Any]) -> None:
        self._pending.append(record)
        if not self._held:
            self._held = True
            BACKGROUND.add(self)

    def _append(self, record: dict[str, Any] | None) -> None:
        lines, self._pending = [*self._pending, *([record] if record else [])], []
        if lines:
            append_lines(self.dir / "events.jsonl", lines, beneath=self.anchor)

    def transition(self, state: State, *, message: str | None = None, defer: bool = False, **fields: Any) -> None:
        """Moves to `state`. `defer` (always for `claimed`) holds its writes back: see the module's
        docstring; a terminal state is never held back."""
        now = time.time()
        given = {k: v for k, v in fields.items() if v is not None}
        extra = {k: v for k, v in given.items() if k in ("success", "outcome", "test", "verdict", "reason")}
        record = {"at": iso(now), "event": state.value, "attempt": self.claim.attempt}
        record.update({"message": message} if message else {}, **extra)
        with self._lock:
            states = {**self._current("states"), state.value: iso(now)}
            self._update({"state": state, "states": states, "updated_at": iso(now), **given})
            if self._active is not None:
                self._active.state = state.value
            if (defer or state is State.CLAIMED) and state not in TERMINAL:
                self._hold(record)
                return
            self._write_status(fsync=state in TERMINAL)
            self._append(record)

    def _write_status(self, *, fsync: bool) -> None:
        # Every write is atomic (readers never see half a file); only a terminal state is also
        # fsynced: it is what gets committed. An intermediate state lost in a crash is moot, as
        # the lease expires and the submission runs again. So are the other result files, which
        # are written without an fsync. At the terminal state, status.json's temporary file is
        # written, and threads of the process's fsync it and rename it into place and fsync the
        # other result files (two fsyncs at once share a device flush) while the work thread goes
        # on (it closes the sandbox and releases the slot); the claim's commit waits for them
        # (`Claim.before_commit`): nothing is committed before it is on disk. A crash before that
        # leaves the entry in active/, to run again. Readers see the terminal status.json once
        # it is on disk, at most that long before the commit.
        if self._held:
            self._held = False
            BACKGROUND.discard(self)
        for earlier in self._finals:  # a later status (an error after the end) lands after it
            earlier.exception()  # its failure is the commit's (before_commit), not this write's
        path = self.dir / "status.json"
        if not fsync:
            write_json(path, self.status.dump(), fsync=False, beneath=self.anchor)
            return
        self._written()
        self._finals = [_SYNCER.submit(write_json_in_two(path, self.status.dump(), beneath=self.anchor))]
        waits = [*self._finals]
        if self._unsynced:
            waits.append(_SYNCER.submit(_fsync_all, self._unsynced))
            self._unsynced = []
        self.claim.before_commit.extend(wait.result for wait in waits)

    def write_now(self) -> None:
        """The background writer's tick: a status held back is written."""
        with self._lock:
            if not self._held:
                return
            try:
                self._write_status(fsync=False)
                self._append(None)
            except CutorError:  # the claim is gone: its work thread finds out by itself
                pass

    def stage(self, name: str, output: StageOutput, *, later: bool = False, **extra: Any) -> None:
        """Writes a stage's output; `extra` adds fields (a test's verdict, its checker's message).
        Like every result file, fsynced with the terminal state (see `_write_status`). `later`
        (a judged test's file) has it written by a thread of the process's while the next test
        runs; the terminal state waits for it, and a failure (the claim lost, the disk full) is
        raised there."""
        path = self.dir / f"{name}.json"
        if "/" in name and path.parent not in self._made:
            make_dir(path.parent, beneath=self.anchor)
            self._made.add(path.parent)
            self._unsynced.append(path.parent)  # its entries
        if later:
            self._later.append(_WRITER.submit(self._write_document, path, output, extra))
            self._unsynced.append(path)
        else:
            self._write(path, output.document(**extra).dump())
        if "/" not in name:
            self._update({"stages": {**self._current("stages"), name: stage_summary(output)}})

    def _write_document(self, path: Path, output: StageOutput, extra: dict[str, Any]) -> None:
        write_json(path, output.document(**extra).dump(), fsync=False, beneath=self.anchor)

    def _written(self) -> None:
        """Waits for the files `stage(later=True)` handed over; raises the first one's failure."""
        later, self._later = self._later, []
        failure = None
        for future in later:
            exc = future.exception()
            failure = failure or exc
        if failure is not None:
            raise failure

    def dependencies(self, record: Mapping[str, object]) -> None:
        """Writes `dependencies.json` and lists the stage in the status's `stages`, as every stage."""
        self._write(self.dir / "dependencies.json", dict(record))
        doc = DependenciesDocument.read(dict(record))
        if doc is not None:
            summary = StageSummary(
                status=doc.status,
                exit_code=doc.exit_code,
                cpu_time=round(float(doc.cpu_time or 0.0), 6),
                wall_time=round(float(doc.wall_time or doc.waited or 0.0), 6),
                memory=doc.memory or 0,
            )
            self._update({"stages": {**self._current("stages"), "dependencies": summary}})

    def write(self, name: str, data: Any) -> None:
        self._write(self.dir / name, data)

    def write_bytes(self, name: str, data: bytes) -> None:
        """A result file that is not JSON (`junit.xml`)."""
        path = self.dir / name
        write_bytes(path, data, fsync=False, beneath=self.anchor)
        self._unsynced.append(path)

    def _write(self, path: Path, data: Any) -> None:
        write_json(path, data, fsync=False, beneath=self.anchor)
        self._unsynced.append(path)

    def finish(self, state: State, outcome: Outcome | None = None, **fields: Any) -> None:
        if self.before_final is not None:  # an invocation's charge: settled before anyone sees the end
            self.before_final(state)
        if self.status.test is not None:  # the test being judged: nothing once finished
            kept = self.status.model_dump(exclude_unset=True, exclude={"test"})
            self._doc = StatusDocument.model_validate(kept)
        self.transition(state, outcome=outcome.value if outcome else None, **fields)


# Their threads start with the first use, not at import.
_SYNCER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fsync")
_WRITER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="results")


def _fsync_all(paths: list[Path]) -> None:
    """fsyncs result files (and the directories new ones are in); one that is gone means the
    claim is no longer ours."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise LeaseLost(f"{path} is gone") from exc
        except OSError as exc:
            raise SpoolIOError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            os.fsync(fd)
        except OSError as exc:
            raise SpoolIOError(f"cannot fsync {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
