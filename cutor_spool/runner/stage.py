"""What goes into a stage and what comes out of it (DESIGN section 4: one shape for every stage)."""

from __future__ import annotations

import base64
import os
import signal as signals
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cutor_spool.documents.stage import AppliedLimits, StageDocument, Truncated
from cutor_spool.documents.stage import StageStatus as StageStatus  # noqa: PLC0414 - re-exported from its old home
from cutor_spool.limits import Limits
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.supervise import KillReason

# Written to a stage's stdout inside the sandbox just before the job is exec'd (by the bwrap
# backend's wrapper, by the Docker backend's launcher): the proof that the sandbox got as far as
# the job. Without it a set-up failure would pass for the job exiting 1. See Capture.
STARTED_MARKER = b"\x1ecutor-stage\x1e"
# Why we may stop a stage before its marker was read, which still means it had started: a tight
# limit can strike during the milliseconds of set-up, and stdout and stderr are separate pipes,
# so a flood on stderr can hit its cap before the marker on stdout has been read.
STOPPED_BY_US = frozenset(KillReason)
# A SIGXCPU with the cgroup's CPU figure at this share of the limit or more is the kernel's (at the
# rlimit): its per-process clock is sampled at ticks and runs ahead of the cgroup's under load
# (measured: SIGXCPU at 0.93 s of the cgroup's CPU for a 1 s rlimit, two busy cores).
XCPU_SHARE = 0.8


@dataclass(frozen=True)
class StageSpec:
    """One stage to run in a submission's sandbox.

    `command` is the argv inside the sandbox, run in /work as the slot's uid. `files` are placed
    read-only under /run/cutor/ for this stage only (scripts, checker inputs). `stdin` is fed from
    a file outside the sandbox. `ro_binds` are host paths (Nix store paths) mounted read-only at
    the same place. `env_script` (a path inside the sandbox) is sourced by `env_shell` first.
    `workdir` picks which of the slot's writable directories is /work ("work" for the submission,
    "aux" for a checker, so that a checker never runs among files the submission could plant).
    """

    name: str
    command: tuple[str, ...]
    limits: Limits
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: bytes = b""
    files: Mapping[str, bytes] = field(default_factory=dict)
    network: bool = False
    ro_binds: tuple[str, ...] = ()
    env_script: str | None = None
    env_shell: str = "/bin/bash"
    workdir: str = "work"
    # Called with the output as it is kept (a live view, runner/live.py); must only copy it.
    live: Callable[[bytes], None] | None = field(default=None, compare=False)

    def sandbox_command(self) -> tuple[str, ...]:
        if self.env_script is None:
            return self.command
        # print-dev-env scripts are bash; sourcing one costs milliseconds, unlike nix-shell.
        return (self.env_shell, "-c", '. "$0" >/dev/null 2>&1 || exit 126; exec "$@"', self.env_script, *self.command)


def signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _text_fields(key: str, data: bytes) -> dict[str, str]:
    text = data.decode("utf-8", "replace")
    out = {key: text}
    if text.encode("utf-8") != data:  # not valid UTF-8: keep the exact bytes too
        out[f"{key}_base64"] = base64.b64encode(data).decode("ascii")
    return out


@dataclass(frozen=True)
class StageOutput:
    stage: str
    status: StageStatus
    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    output: bytes  # stdout and stderr interleaved as they were read
    stdout_truncated: bool
    stderr_truncated: bool
    cpu_time: float
    wall_time: float
    memory: int
    limits: Limits
    message: str | None = None
    backend: str = ""

    @property
    def ok(self) -> bool:
        return self.status == StageStatus.OK

    def document(self, **judged: Any) -> StageDocument:
        """The stage's result file; `judged` adds a test's verdict, score and checker."""
        texts = {
            k: v for key in ("stdout", "stderr", "output") for k, v in _text_fields(key, getattr(self, key)).items()
        }
        return StageDocument(
            stage=self.stage, status=self.status, **texts, exit_code=self.exit_code,
            signal=signal_name(self.signal) if self.signal else None,
            truncated=Truncated(stdout=self.stdout_truncated, stderr=self.stderr_truncated),
            cpu_time=round(self.cpu_time, 6), wall_time=round(self.wall_time, 6), memory=self.memory,
            limits=AppliedLimits(**self.limits.to_json()), backend=self.backend, message=self.message or None,
            **judged,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return self.document().dump()


def internal_error(spec: StageSpec, message: str, backend: str) -> StageOutput:
    return StageOutput(
        stage=spec.name,
        status=StageStatus.INTERNAL_ERROR,
        exit_code=None,
        signal=None,
        stdout=b"",
        stderr=b"",
        output=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        cpu_time=0.0,
        wall_time=0.0,
        memory=0,
        limits=spec.limits,
        message=message,
        backend=backend,
    )


def _exit_status(returncode: int | None, wait_status: int | None = None) -> tuple[int | None, int | None]:
    """(exit code, signal) of the job: from its raw wait status when its parent reported it
    (launcher.ExitReport), else guessed from a return code as subprocess reports it."""
    if wait_status is not None:
        if os.WIFSIGNALED(wait_status):
            return None, os.WTERMSIG(wait_status)
        if os.WIFEXITED(wait_status):
            return os.WEXITSTATUS(wait_status), None
    if returncode is None:
        return None, None
    if returncode < 0:
        return None, -returncode
    # Without a report (a host without the static launcher, or a job that killed its parent) the
    # exit code is all there is: tini and shells report a child killed by signal N as 128+N, which
    # a program's own `exit(128+N)` cannot be told from.
    return returncode, returncode - 128 if 128 < returncode <= 128 + 64 else None


def classify(
    *,
    started: bool,
    killed_for: KillReason | None,
    returncode: int | None,
    oom_kills: int,
    cpu_time: float,
    limits: Limits | None,
    wait_status: int | None = None,
) -> tuple[StageStatus, int | None, int | None]:
    """(status, exit_code, signal) of how a stage or a build ended, from what was observed. The
    order matters: a child we stopped for its output is an output limit even if it was also
    killed; the OOM counter, not the exit code, says *memory limit*; a *time limit* is the CPU
    figure (all processes summed) at the limit, or our kill for it, never a signal's name: a job
    that raises SIGXCPU itself, or exits 152, after 3 ms is a runtime error (the kernel's own
    SIGXCPU comes only at the rlimit, which is at or above the limit, so it is still a time limit).
    `wait_status` is the job's own (launcher.ExitReport), which says exit code or signal without
    guessing. `limits` is None for a child without a CPU limit of its own (a build): its deadline
    is then its one time limit, and passing it is a *time limit*."""
    exit_code, sig = _exit_status(returncode, wait_status)
    if not started or killed_for == KillReason.CANCEL:
        return StageStatus.INTERNAL_ERROR, exit_code, sig
    if killed_for == KillReason.OUTPUT:
        return StageStatus.OUTPUT_LIMIT, exit_code, sig
    if oom_kills > 0:
        return StageStatus.MEMORY_LIMIT, exit_code, sig
    over_cpu = limits is not None and cpu_time >= limits.cpu_time
    # The kernel's SIGXCPU comes when the process's own CPU reaches its rlimit (at or above the limit).
    kernel_xcpu = sig == signals.SIGXCPU and limits is not None and cpu_time >= limits.cpu_time * XCPU_SHARE
    if killed_for == KillReason.CPU or over_cpu or kernel_xcpu:
        return StageStatus.TIME_LIMIT, exit_code, sig
    if killed_for == KillReason.WALL:
        return (StageStatus.WALL_TIME_LIMIT if limits is not None else StageStatus.TIME_LIMIT), exit_code, sig
    if sig == signals.SIGSYS:  # on x86-64 only a seccomp filter's kill sends it (or the job itself)
        return StageStatus.SECURITY_VIOLATION, exit_code, sig
    if sig is not None:
        return StageStatus.SIGNALED, exit_code, sig
    if exit_code:
        return StageStatus.RUNTIME_ERROR, exit_code, sig
    return StageStatus.OK, exit_code, sig


def conclude(
    spec_name: str,
    limits: Limits,
    backend: str,
    *,
    capture: Capture,
    started: bool,
    killed_for: KillReason | None,
    returncode: int | None,
    oom_kills: int,
    cpu_time: float,
    wall_time: float,
    memory: int,
    setup_error: str = "",
    note: str | None = None,
    wait_status: int | None = None,
) -> StageOutput:
    """A finished stage's output, the same way for every backend. `started` is false when the
    sandbox never reached the job (no started marker, and we did not stop it for a limit)."""
    status, exit_code, sig = classify(
        started=started,
        killed_for=killed_for,
        returncode=returncode,
        oom_kills=oom_kills,
        cpu_time=cpu_time,
        limits=limits,
        wait_status=wait_status,
    )
    message = note
    if killed_for == KillReason.CANCEL:
        message = "stopped: the worker lost its lease or is shutting down, or its caller killed it"
    elif not started:
        message = f"the sandbox did not start: {setup_error.strip()[-2000:]}"
    elif message is None and status == StageStatus.SIGNALED and sig == signals.SIGXFSZ:
        message = "file size limit exceeded (SIGXFSZ)"
    elif message is None and status == StageStatus.SIGNALED and sig == signals.SIGXCPU:
        message = f"SIGXCPU after {cpu_time:.3f} s of CPU, below the limit of {limits.cpu_time:g} s: not a time limit"
    elif message is None and status == StageStatus.SECURITY_VIOLATION:
        message = "killed for a system call the spool's seccomp policy denies (SIGSYS)"
    return StageOutput(
        stage=spec_name, status=status, exit_code=exit_code, signal=sig, stdout=bytes(capture.stdout),
        stderr=bytes(capture.stderr), output=bytes(capture.interleaved), stdout_truncated=capture.stdout_truncated,
        stderr_truncated=capture.stderr_truncated, cpu_time=cpu_time, wall_time=wall_time, memory=memory,
        limits=limits, message=message, backend=backend,
    )  # fmt: skip
