"""Running Nix: one wrapper, with a deadline, byte caps on both outputs, and (for builds) a cgroup.

A build is submitter code (a Nix file can loop in evaluation; a derivation can fork or eat
memory), so the builder runs every Nix process of a build in one cgroup with a memory and pids
limit, under one deadline, with its log capped. The launcher shell puts itself into the cgroup
before exec (so Nix and every builder it forks are counted; no `preexec_fn`), and `setpriv
--pdeathsig KILL` takes Nix down if the worker dies, so a killed builder leaves no build running.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.errors import BuildError
from cutor_spool.runner.cgroups import Cgroup

log = logging.getLogger(__name__)

POLL = 0.1


@dataclass(frozen=True)
class Finished:
    argv: tuple[str, ...]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    killed_for: str | None  # "time", "output", "cancel", or None
    wall: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_for is None

    def error_text(self, limit: int = 4000) -> str:
        text = self.stderr.decode("utf-8", "replace").strip()
        return text[-limit:] or f"exit status {self.returncode}"


# Joins the cgroup(s), runs the command, and stays as its keeper: if the worker dies, the keeper
# gets SIGTERM (its parent-death signal) and kills everything in the cgroup. Nix alone would not
# do: its sandboxed builders are not its children by then and would run on, unbounded in time.
KEEPER = (
    'first=$1; while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; '
    '"$@" & child=$!; '
    'trap \'for i in 1 2 3; do for p in $(cat "$first"); do [ "$p" = $$ ] || kill -KILL "$p" 2>/dev/null; '
    "done; done; exit 143' TERM; "
    'wait "$child"'
)


def launcher(argv: list[str], cgroup: Cgroup | None) -> list[str]:
    """The argv that runs `argv` in `cgroup` (if any) and takes it down if this process dies."""
    if cgroup is None:
        return ["setpriv", "--pdeathsig", "KILL", "--", *argv]
    procs = [str(p) for p in cgroup.procs_files]
    return ["setpriv", "--pdeathsig", "TERM", "--", "/bin/sh", "-c", KEEPER, "cutor-nix", *procs, "--", *argv]


def run(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    deadline: float | None = None,
    stdout_cap: int = 64 * 2**20,
    stderr_cap: int = 4 * 2**20,
    cancel: threading.Event | None = None,
    cgroup: Cgroup | None = None,
    label: str = "",
) -> Finished:
    """Runs `argv` to its end, or until `deadline` (monotonic), a cap or `cancel` stops it."""
    log.debug("%s$ %s", f"{label}: " if label else "", shlex.join(argv))
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        raise BuildError(f"{argv[0]} is not installed (Nix: apt install nix-bin)")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            launcher(argv, cgroup),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise BuildError(f"cannot run {argv[0]}: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    caps = {"stdout": stdout_cap, "stderr": stderr_cap}
    bufs = {"stdout": bytearray(), "stderr": bytearray()}
    over = {"stdout": False, "stderr": False}
    killed_for: str | None = None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    try:
        while sel.get_map():
            for key, _ in sel.select(POLL):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.data]
                room = caps[key.data] - len(buf)
                buf += data[: max(room, 0)]
                if len(data) > room:
                    over[key.data] = True
                    killed_for = killed_for or "output"
            if killed_for is None:
                if cancel is not None and cancel.is_set():
                    killed_for = "cancel"
                elif deadline is not None and time.monotonic() >= deadline:
                    killed_for = "time"
            if killed_for is not None:
                break
        if killed_for is None and proc.poll() is None:  # outputs closed, process not done yet
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                killed_for = "time"
    finally:
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        if killed_for is not None or proc.poll() is None:
            _kill(proc, cgroup)
        proc.wait()
    return Finished(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=bytes(bufs["stdout"]),
        stderr=bytes(bufs["stderr"]),
        stdout_truncated=over["stdout"],
        stderr_truncated=over["stderr"],
        killed_for=killed_for,
        wall=time.monotonic() - started,
    )


def _kill(proc: subprocess.Popen[bytes], cgroup: Cgroup | None) -> None:
    if cgroup is not None:
        cgroup.kill()  # Nix, and the builders it forked (as nixbld users, in their own sessions)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
