"""One interactive test: the submission and the problem's interactor, each in its own sandbox (two
slots: two uids, two /work, two /run/cutor), the interactor's stdout the submission's stdin and the
submission's stdout the interactor's stdin, through pipes the kernel carries directly (nothing of
ours sits in the dialogue). The interactor's verdict, the submission's own end and an idleness
watch make the test's verdict (`verdict`, pure).

The interactor's protocol (testlib's, with DOMjudge's codes too):

- argv: `INPUT OUTPUT ANSWER`: `/run/cutor/input` (the test's input), `/work/transcript` (a file
  it may write: its record of the dialogue, kept in the test's result, the first 64 KiB) and
  `/run/cutor/expected` (the test's `output`, empty when it has none); also in `$CUTOR_INPUT`,
  `$CUTOR_TRANSCRIPT`, `$CUTOR_EXPECTED`, and the test's name in `$CUTOR_TEST`.
- exit 0 or 42: accepted; 1, 2 or 43: wrong answer; 7: points, stderr starting with the fraction
  (`0.5 ...` or `points 0.5 ...`); anything else (3 is testlib's fail), a signal or a limit: the
  interactor failed, an internal error of the test (the submission ends in state `error`).
- stderr (the first 4 KiB): the message shown with the verdict.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.runner.judge.checkers.program import MESSAGE_LIMIT
from cutor_spool.runner.judge.verdicts import STAGE_VERDICT, CheckResult, Verdict, stage_feedback
from cutor_spool.runner.sandbox import PIPE, Sandbox, StageProcess
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus, signal_name

INPUT, EXPECTED, TRANSCRIPT = "/run/cutor/input", "/run/cutor/expected", "/work/transcript"
TRANSCRIPT_LIMIT = 64 << 10
IDLENESS = 2.0  # seconds of no CPU on either side (both waiting on the other): `idleness_limit`
PERIOD = 0.1  # how often both sides' CPU is sampled
ACCEPT, WRONG, PRESENTATION, POINTS = (0, 42), (1, 43), 2, 7
OWN_END = (StageStatus.TIME_LIMIT, StageStatus.WALL_TIME_LIMIT, StageStatus.MEMORY_LIMIT, StageStatus.OUTPUT_LIMIT)


@dataclass(frozen=True)
class Dialogue:
    submissions: tuple[StageOutput, ...]  # one, or a communication task's processes in order
    interactor: StageOutput  # or a communication task's manager
    idle: bool  # stopped by the idleness watch
    transcript: bytes = b""
    transcript_truncated: bool = False
    stopped: frozenset[int] = frozenset()  # processes stopped because the manager had ended

    @property
    def submission(self) -> StageOutput:
        return self.submissions[0]


def converse(
    boxes: tuple[Sandbox, Sandbox], specs: tuple[StageSpec, StageSpec], cancel: threading.Event, idleness: float
) -> tuple[StageOutput, StageOutput, bool]:
    """Runs the submission (boxes[0], specs[0]) against the interactor (boxes[1], specs[1])."""
    interactor = boxes[1].spawn(specs[1], cancel, stdin=PIPE, stdout=PIPE)
    assert interactor.stdin is not None and interactor.stdout is not None
    try:
        submission = boxes[0].spawn(specs[0], cancel, stdin=interactor.stdout, stdout=interactor.stdin)
    except BaseException:
        interactor.kill()
        interactor.wait()
        raise
    finally:  # the two sandboxes hold them now: an end that exits gives the other its EOF
        os.close(interactor.stdin)
        os.close(interactor.stdout)
    outputs, idle = supervise_all((submission, interactor), idleness)
    return outputs[0], outputs[1], idle


def supervise_all(stages: tuple[StageProcess, ...], idleness: float) -> tuple[list[StageOutput], bool]:
    """Waits for every stage (in a thread) while watching their idleness: their outputs, in order,
    and whether the watch stopped them. A system failure of any is raised here."""
    ended = threading.Event()
    outputs: list[StageOutput | BaseException] = []

    def wait_all() -> None:
        try:
            outputs.extend(stage.wait() for stage in stages)
        except BaseException as exc:  # handed to the caller
            outputs.append(exc)
        ended.set()

    threading.Thread(target=wait_all, name="dialogue-wait", daemon=True).start()
    idle = watch_idleness(stages, idleness, ended)
    ended.wait()
    done = [out for out in outputs if isinstance(out, StageOutput)]
    if len(done) != len(stages):
        raise next(out for out in outputs if isinstance(out, BaseException))
    return done, idle


def watch_idleness(stages: tuple[StageProcess, ...], idleness: float, ended: threading.Event) -> bool:
    """Samples the stages' CPU every PERIOD until `ended`; kills them all and returns True when
    none used any for `idleness` seconds (a deadlock: each waits for the other)."""
    last: tuple[float | None, ...] = ()
    since = time.monotonic()
    while not ended.wait(PERIOD):
        cpus = tuple(stage.cpu_seconds() for stage in stages)
        now = time.monotonic()
        if cpus != last:
            last, since = cpus, now
        elif now - since >= idleness:
            for stage in stages:
                stage.kill()
            return True
    return False


def read_transcript(aux: Path) -> tuple[bytes, bool]:
    """The interactor's /work/transcript (first TRANSCRIPT_LIMIT bytes), and whether it was longer."""
    try:
        fd = os.open(aux / "transcript", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b"", False
    with os.fdopen(fd, "rb") as file:
        data = file.read(TRANSCRIPT_LIMIT + 1)
    return data[:TRANSCRIPT_LIMIT], len(data) > TRANSCRIPT_LIMIT


def clear_transcript(aux: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (aux / "transcript").unlink()


def _points(message: str) -> float | None:
    words = message.split()
    if words[:1] == ["points"]:
        words = words[1:]
    try:
        value = float(words[0]) if words else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) and 0.0 <= value <= 1.0 else None


def interpret(output: StageOutput) -> CheckResult:
    """The interactor's verdict from its exit status and stderr (see the module's docstring)."""
    message = output.stderr[:MESSAGE_LIMIT].decode("utf-8", "replace").strip()
    suffix = f": {message}" if message else ""
    if output.status not in (StageStatus.OK, StageStatus.RUNTIME_ERROR):
        what = (
            f"was killed by {signal_name(output.signal)}"
            if output.status == StageStatus.SIGNALED and output.signal
            else f"hit a limit ({output.status})"
        )
        return CheckResult.failed(f"the interactor {what}{suffix}")
    code = output.exit_code
    if code in ACCEPT:
        return CheckResult.accepted(message)
    if code in (*WRONG, PRESENTATION):
        return CheckResult.wrong(message)
    if code == POINTS:
        fraction = _points(message)
        if fraction is None:
            return CheckResult.failed(f"the interactor exited 7 (points) without a fraction first on stderr{suffix}")
        return CheckResult.scored(fraction, message)
    return CheckResult.failed(f"the interactor failed (exit status {code}){suffix}")


def verdict(
    dialogue: Dialogue, idleness: float, judge: Callable[[StageOutput], CheckResult] = interpret
) -> CheckResult:
    """The test's verdict. The submission's own end comes first: idle, out of time, memory or
    output is that, whatever the interactor said; then a failed interactor (the judge's fault);
    then the interactor's wrong answer (a submission killed by a closed pipe after a wrong answer
    is wrong); then a submission that crashed although the interactor accepted; then the
    interactor's accepted or points."""
    if dialogue.idle:
        return CheckResult(
            Verdict.IDLENESS_LIMIT, 0.0, f"idleness limit: neither side used CPU for {idleness:g}s, each waiting"
        )
    for i, sub in enumerate(dialogue.submissions):
        if sub.status == StageStatus.INTERNAL_ERROR and i not in dialogue.stopped:
            raise SandboxError(f"the submission's stage failed: {sub.message or 'internal error'}")
    for sub in dialogue.submissions:
        if sub.status in OWN_END:
            return CheckResult(STAGE_VERDICT[sub.status], 0.0, stage_feedback(sub))
    check = judge(dialogue.interactor)
    failed = [sub for sub in dialogue.submissions if not sub.ok and sub.status in STAGE_VERDICT]
    if check.verdict not in (Verdict.ACCEPTED, Verdict.PARTIAL) or not failed:
        return check
    return CheckResult(STAGE_VERDICT[failed[0].status], 0.0, stage_feedback(failed[0]))
