"""Running Nix: one wrapper, with a deadline, byte caps on both outputs, and (for builds) a cgroup.

A build is submitter code (a Nix file can loop in evaluation; a derivation can fork or eat
memory), so the builder runs every Nix process of a build in one cgroup with a memory and pids
limit, under one deadline, with its log capped. It is started through the runner's launcher, as
stages are (`runner/launcher.py`): the launcher joins the cgroup before exec (so Nix and every
builder it forks are counted; no `preexec_fn`) and, with `guard=yes`, stays as Nix's guard: if the
worker dies, it kills everything in the cgroup. Nix alone would not do: its sandboxed builders are
not its children by then and would run on, unbounded in time. The launcher does not drop to
another uid here: Nix stays root to hand the build to its own build users. Nix processes outside
a build (gc, hashes, cache checks) get `setpriv --pdeathsig KILL`. Either way the runner's one
supervisor (`runner/supervise.py`) watches the process.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import BuildError, SandboxError
from cutor_spool.runner.capture import Capture
from cutor_spool.runner.cgroups import Cgroup
from cutor_spool.runner.launcher import host_argv
from cutor_spool.runner.supervise import KillReason, LimitWatch, PipeSource, ProcessChild, Source, Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    argv: tuple[str, ...]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    killed_for: KillReason | None
    wall: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_for is None

    def error_text(self, limit: int = 4000) -> str:
        text = self.stderr.decode("utf-8", "replace").strip()
        return text[-limit:] or f"exit status {self.returncode}"


@dataclass(frozen=True)
class BuildCgroup:
    """Where a build's Nix processes run: its cgroup, and the static launcher that puts them there."""

    cgroup: Cgroup
    launcher: Path


def start_argv(argv: list[str], build: BuildCgroup | None) -> list[str]:
    """The argv that runs `argv` in the build's cgroup (if any), taken down if this process dies."""
    if build is None:
        return ["setpriv", "--pdeathsig", "KILL", "--", *argv]
    return [*host_argv(build.launcher, build.cgroup.procs_files, rlimits=["core=0"], guard=True), *argv]


def run(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    deadline: float | None = None,
    stdout_cap: int = 64 * 2**20,
    stderr_cap: int = 4 * 2**20,
    cancel: threading.Event | None = None,
    build: BuildCgroup | None = None,
    label: str = "",
) -> Finished:
    """Runs `argv` to its end, or until `deadline` (monotonic), a cap or `cancel` stops it."""
    log.debug("%s$ %s", f"{label}: " if label else "", shlex.join(argv))
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        raise BuildError(f"{argv[0]} is not installed (Nix: apt install nix-bin)")
    started = time.monotonic()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        proc = subprocess.Popen(
            start_argv(argv, build), stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w, env=dict(env), cwd=cwd,
            start_new_session=True,
        )  # fmt: skip
    except (OSError, SandboxError) as exc:
        os.close(out_r)
        os.close(err_r)
        raise BuildError(f"cannot run {argv[0]}: {exc}") from exc
    finally:
        os.close(out_w)
        os.close(err_w)
    capture = Capture(stdout_cap, stderr_cap=stderr_cap, interleave=False)
    sources: list[Source] = [PipeSource(out_r, "stdout"), PipeSource(err_r, "stderr")]
    child = ProcessChild(proc, build.cgroup if build is not None else None)
    try:
        killed_for = Supervisor(child, sources, capture, LimitWatch(deadline, cancel), label=label).run()
    finally:
        proc.wait()
    return Finished(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=bytes(capture.stdout),
        stderr=bytes(capture.stderr),
        stdout_truncated=capture.stdout_truncated,
        stderr_truncated=capture.stderr_truncated,
        killed_for=killed_for,
        wall=time.monotonic() - started,
    )
