"""`cutor-spool slurm`: the `sbatch` script that runs N pilot executors as one array job.

Each array task is one executor on a node that mounts the spool, started with `--exit-when-idle`
(and optionally `--max-jobs`), so the job ends with exit status 0 when the queue is empty; the
spool's own protocol (claims, leases, reaping) does everything else, as for workers started by
systemd: nothing sits between Slurm and the spool.

The script `exec`s the executor: it *is* the batch step's process, so Slurm's signals reach it
directly. `--signal=B:TERM@GRACE` has Slurm send SIGTERM to the batch shell GRACE seconds before
the time limit; the executor then finishes its current work or hands it back (its `--grace` is a
little less than GRACE), and exits 0. Everything after that is SIGKILL, which loses nothing
either: leases expire and another pilot claims the work.

Cgroups stay the executor's (docs/deploy.md, "Slurm"): the node's slurm.conf has
`ProctrackType=proctrack/pgid` (Slurm signals the executor's process group only: the sandboxes,
each in a session of its own, are never signalled behind its back, and `bwrap --die-with-parent`
takes them down with it) and `TaskPlugin=task/none` (no cgroup of Slurm's around the job, so the
executor makes its stages' cgroups under its own as on any host). Jobs run as root, on a judge
cluster's nodes, as the executor must; submissions never do.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

# Slurm's time formats: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, and "UNLIMITED".
TIME_PATTERN = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^(UNLIMITED|INFINITE)$", re.IGNORECASE)
# The room between the executor's --grace and Slurm's signal lead time: its exit, the SIGKILL.
MARGIN = 10


def seconds_word(seconds: float) -> str:
    """A duration as the CLI reads it back (`30s`, `1.5s`)."""
    return f"{seconds:g}s"


@dataclass
class SlurmJob:
    """What the operator chose; `script()` renders it."""

    spool: str
    executable: list[str]  # the command that is cutor-spool on the nodes (one word, or python -m)
    pilots: int = 1
    concurrency: int = 1
    exit_when_idle: float = 300.0
    max_jobs: int | None = None
    time: str | None = None
    partition: str | None = None
    exclusive: bool = False
    cpus_per_task: int | None = None
    signal_grace: int = 120  # seconds before the time limit that Slurm sends SIGTERM
    job_name: str = "cutor-spool"
    output: str = "cutor-spool-%A_%a.out"
    error: str | None = None
    state_dir: str | None = None
    invocations: int | None = None
    sbatch_options: list[str] = field(default_factory=list)  # more `#SBATCH` lines, verbatim

    def problems(self) -> list[str]:
        found = []
        if self.pilots < 1:
            found.append("--pilots must be at least 1")
        if self.exclusive and self.cpus_per_task is not None:
            found.append("--exclusive and --cpus-per-task exclude each other: a whole node, or N CPUs of one")
        if self.time is not None and not TIME_PATTERN.match(self.time):
            found.append(f"--time {self.time!r} is not a Slurm time (minutes, HH:MM:SS, D-HH:MM:SS)")
        if self.signal_grace <= MARGIN:
            found.append(f"--signal-grace must be more than {MARGIN} seconds (the executor's grace is {MARGIN} s less)")
        for option in self.sbatch_options:
            if "\n" in option or not option.startswith("--"):
                found.append(f"--sbatch-option {option!r} is not one `--name=value` option")
        return found

    def directives(self) -> list[str]:
        lines = [
            f"--job-name={self.job_name}",
            f"--array=0-{self.pilots - 1}",
            "--nodes=1",
            "--ntasks=1",
            f"--output={self.output}",
        ]
        if self.error is not None:
            lines.append(f"--error={self.error}")
        if self.time is not None:
            lines.append(f"--time={self.time}")
        if self.partition is not None:
            lines.append(f"--partition={self.partition}")
        if self.exclusive:
            lines.append("--exclusive")
        else:
            lines.append(f"--cpus-per-task={self.cpus_per_task or self.concurrency}")
        lines.append(f"--signal=B:TERM@{self.signal_grace}")
        return lines + self.sbatch_options

    def command(self) -> list[str]:
        argv = [
            *self.executable,
            "--spool",
            self.spool,
            "executor",
            "--concurrency",
            str(self.concurrency),
            "--exit-when-idle",
            seconds_word(self.exit_when_idle),
            "--grace",
            str(self.signal_grace - MARGIN),
        ]
        if self.max_jobs is not None:
            argv += ["--max-jobs", str(self.max_jobs)]
        if self.invocations is not None:
            argv += ["--invocations", str(self.invocations)]
        if self.state_dir is not None:
            argv += ["--state-dir", self.state_dir]
        return argv

    def script(self) -> str:
        header = "\n".join(f"#SBATCH {shlex.quote(line)}" for line in self.directives())
        command = " ".join(shlex.quote(word) for word in self.command())
        return f"""#!/bin/bash
# {self.pilots} pilot executor(s) of the spool {self.spool}, one per array task (cutor-spool slurm).
# Each claims submissions until the queue has been empty for {seconds_word(self.exit_when_idle)}, then exits 0.
# --signal: SIGTERM {self.signal_grace} s before the time limit; the executor finishes or hands back its work.
# The node's slurm.conf: ProctrackType=proctrack/pgid, TaskPlugin=task/none; jobs run as root.
{header}
set -euo pipefail
echo "cutor-spool pilot ${{SLURM_ARRAY_JOB_ID:-}}_${{SLURM_ARRAY_TASK_ID:-}} on $(hostname) at $(date -u +%FT%TZ)"
# exec: the executor becomes the batch step's process and gets Slurm's signals itself.
exec {command}
"""
