"""The bubblewrap backend (the default; no daemon).

A stage is launched as

    cutor-launch cgroup=<procs>... <rlimits> user=<slot uid>:<gid> marker=no -- bwrap <namespaces,
    mounts> -- /run/cutor-launch init=yes report=/run/cutor/.exit (pid 1) -- <the job>

- cutor-launch is the static launcher of launcher.py, one process start (0.5 ms). On a host
  without a C compiler the same is done by `sh -c <attach to cgroups> -- prlimit <rlimits> --
  setpriv <uid>`, about 5 ms more per stage.
- The job runs as the slot's unprivileged uid, never root (as root, RLIMIT_NPROC does not hold
  and root-owned 0600 files would be readable). The launcher drops to it before bwrap, so bwrap
  runs unprivileged and builds its user namespace with that uid mapped to itself.
- The launcher puts itself into the stage's cgroups before exec, so every process the job ever
  makes is counted; prlimits are set in the argv, not by `preexec_fn` (which forces fork() in a
  large parent).
- The launcher again, inside, is pid 1 and the job its child: pid 1 ignores default-action
  signals (SIGXCPU at the CPU limit, SIGPIPE, SIGXFSZ), and bwrap's own pid 1 would leave zombies
  that count against RLIMIT_NPROC. As the job's parent it reports the job's own wait status
  (launcher.ExitReport), and no signal from inside the namespace reaches it. Without the static
  launcher, tini is pid 1 and a shell writes the started marker (`sandbox_init`).
- Nothing the job can see names a host path: /work, /run/cutor and the prepared /etc are bound
  from tmpfs mounts (slots.py, `tmpfs_once`), which /proc/self/mountinfo shows by their path
  inside the tmpfs; /usr, tini and Nix store paths show their own, public, paths.
- New user, pid, net, ipc, uts and cgroup namespaces; nested user namespaces disabled; `/usr` and
  the Nix store paths read-only; only /work and a size-capped /tmp writable; / itself read-only.

On a warm slot (the default, `sandbox.warm_slots`) the same sandbox is made without bwrap: the
launcher enters a read-only tree made once per environment and mounts the stage's own parts
itself, as root, before it drops to the slot's uid (keeper.py says how, and what differs).

The command line is built by the pure functions of `bwrap_layout.py`; `bwrap_stage.py` runs it: a
stage's cgroup, its pipes, and the runner's one supervisor (`supervise.py`), in the caller's
thread (`run`) or a thread of its own (`spawn`, whose stdin and stdout may be another stage's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.config import SeccompConfig
from cutor_spool.errors import SandboxError
from cutor_spool.runner.bwrap_layout import (
    OVERHEAD_PROCESSES,
    BwrapLayout,
    check_reachable,
    find_init,
    system_mounts,
)
from cutor_spool.runner.bwrap_stage import NAME, BwrapStage
from cutor_spool.runner.cgroups import CgroupHost
from cutor_spool.runner.keeper import NetPool, Trees, eligible, keyring_open
from cutor_spool.runner.launcher import build_launcher, launcher_dir, publish
from cutor_spool.runner.sandbox import PIPE
from cutor_spool.runner.sandbox_etc import TOOLCHAIN_ETC, etc_stamp, prepare_etc
from cutor_spool.runner.seccomp import policy, write_filter
from cutor_spool.runner.slots import Slot, SlotPool, tmpfs_once
from cutor_spool.runner.stage import StageOutput, StageSpec, internal_error

log = logging.getLogger(__name__)

ETC_SIZE = 64 << 20  # the prepared /etc directories (a few hundred KiB each) live on a tmpfs of this cap


class BubblewrapBackend:
    name = NAME

    def __init__(
        self,
        *,
        state_dir: Path,
        uid_base: int,
        slots: int,
        tmp_size: int,
        extra_ro: list[str] | None = None,
        launcher: bool = True,
        seccomp: SeccompConfig | None = None,
        etc: tuple[str, ...] = TOOLCHAIN_ETC,
        pin: bool = False,
        warm: bool = True,
    ) -> None:
        """`launcher=False` uses `prlimit` and `setpriv` even where the static launcher builds;
        `seccomp` is the spool's system call filter (on, with the default policy, when not given);
        `etc` the patterns of sandbox.etc (sandbox_etc.py); `pin`: stages get a cpuset, their
        slot's CPU (CPU pinning); `warm`: stages enter a tree made once per environment where
        they may (keeper.py: warm slots)."""
        if shutil.which("bwrap") is None:
            raise SandboxError("bubblewrap is not installed (apt install bubblewrap)")
        state_dir.mkdir(parents=True, exist_ok=True)
        check_reachable(state_dir)
        self.launcher: Path | None = None
        if launcher:
            try:
                self.launcher = build_launcher(launcher_dir(state_dir))
                log.info("stages start through the launcher %s", self.launcher)
            except SandboxError as exc:
                log.warning("%s; stages start through prlimit and setpriv instead (about 5 ms slower)", exc)
        if self.launcher is None:
            for tool in ("prlimit", "setpriv"):
                if shutil.which(tool) is None:
                    raise SandboxError(f"{tool} is not installed (util-linux)")
        self._etc_args = {"uid_base": uid_base, "slots": slots}
        self._etc_patterns = etc
        self._etc_base = state_dir / "etc.d"
        self._etc_stamp = (-1.0, -1.0)
        self.layout = BwrapLayout(
            init=find_init(),
            system=tuple(system_mounts()),
            tmp_size=tmp_size,
            etc=self._etc_base,
            etc_net=self._etc_base,
            extra_ro=tuple(extra_ro or ()),
        )
        self._refresh_etc()
        if self.launcher is not None:  # on the /etc tmpfs: the sandbox's mountinfo names no host path
            self.layout = dataclasses.replace(self.layout, launcher=publish(self.launcher, self._etc_base))
        self.cgroups = CgroupHost.detect(cpuset=pin)
        seccomp = seccomp or SeccompConfig()  # the filter is on unless a spool turns it off
        pol = policy(seccomp) if seccomp.enabled else None
        self.seccomp = write_filter(state_dir / "seccomp", pol) if pol is not None else None
        self.trees, self.netns, self.keyring = None, None, pol is None or keyring_open(pol)
        if warm and self.launcher is not None and eligible(self.launcher, pol):
            self.trees, self.netns = Trees(self.launcher, state_dir / "trees"), NetPool(self.launcher)
        if warm and self.trees is None:
            log.warning("warm slots need the launcher and a seccomp filter that refuses namespaces: stages use bwrap")

    def _refresh_etc(self) -> None:
        """Points stages at the prepared /etc for the host's current files, checked cheaply
        (sandbox_etc.etc_stamp) before each submission."""
        stamp = etc_stamp()
        if stamp != self._etc_stamp or not self.layout.etc.is_dir():
            tmpfs_once(self._etc_base, ETC_SIZE)  # /etc's mount then names no host path
            etc = prepare_etc(self._etc_base, network=False, patterns=self._etc_patterns, **self._etc_args)
            etc_net = prepare_etc(self._etc_base, network=True, patterns=self._etc_patterns, **self._etc_args)
            self.layout = dataclasses.replace(self.layout, etc=etc, etc_net=etc_net)
            self._etc_stamp = stamp

    def sweep(self, pool: SlotPool) -> int:
        """Removes stage cgroups left by a worker that died (SIGKILL mid-stage, host trouble), with
        whatever they still hold: a sandbox killed while bwrap was still setting it up can wait
        forever for a monitor that is gone. Only slots nobody holds are touched. Returns how many."""
        swept = 0
        for cgroup in self.cgroups.existing("u"):
            uid_text = cgroup.name[1:].partition("-")[0]
            if not uid_text.isdigit():
                continue
            with pool.idle(int(uid_text)) as free:
                if free:
                    try:
                        left = cgroup.pids()
                    except FileNotFoundError:  # half removed already, by another executor's sweep
                        left = []
                    log.warning("removing cgroup %s left by a dead worker (processes: %s)", cgroup.name, left or "none")
                    cgroup.remove()
                    swept += 1
        return swept

    def cpus(self) -> tuple[int, ...]:
        own = set(os.sched_getaffinity(0))
        return tuple(sorted(own & set(self.cgroups.allowed_cpus()))) if self.cgroups.cpuset else tuple(sorted(own))

    def open(self, slot: Slot, label: str) -> BwrapSandbox:
        if slot.cpu is not None and not self.cgroups.cpuset:
            raise SandboxError(f"slot {slot.name} is pinned to CPU {slot.cpu}; this backend was made without pinning")
        self._refresh_etc()
        if not slot.clean:  # a worker killed while it held the slot may have left stage cgroups
            for stale in self.cgroups.existing(f"{slot.name}-"):
                stale.remove()
        return BwrapSandbox(self, slot, label)

    def close(self) -> None:
        if self.trees is not None and self.netns is not None:
            self.trees.close()
            self.netns.close()


@dataclass
class BwrapSandbox:
    backend: BubblewrapBackend
    slot: Slot
    label: str
    stages: int = field(default=0)

    @property
    def workdir(self) -> Path:
        return self.slot.work

    def close(self) -> None:
        pass

    def run(self, spec: StageSpec, cancel: threading.Event | None = None) -> StageOutput:
        try:
            stage = self._start(spec, cancel, stdin=None, stdout=None)
        except OSError as exc:
            log.exception("%s: stage %s failed to run", self.label, spec.name)
            return internal_error(spec, f"sandbox failure: {exc}", NAME)
        return stage.supervise()

    def spawn(
        self,
        spec: StageSpec,
        cancel: threading.Event | None = None,
        *,
        stdin: int | None = None,
        stdout: int | None = PIPE,
    ) -> BwrapStage:
        """See `Sandbox.spawn`. A failure to start is the system's: SandboxError."""
        try:
            stage = self._start(spec, cancel, stdin=stdin, stdout=stdout)
        except OSError as exc:
            raise SandboxError(f"{self.label}: stage {spec.name} failed to start: {exc}") from exc
        stage.supervise_in_background()
        return stage

    def _start(
        self, spec: StageSpec, cancel: threading.Event | None, *, stdin: int | None, stdout: int | None
    ) -> BwrapStage:
        self.stages += 1
        slot = self.slot
        slot.writable(spec.workdir)  # mounts the checker's aux directory on first use
        slot.reset_io()
        for name, data in spec.files.items():
            (slot.io / name).write_bytes(data)
        pinned = None if slot.cpu is None else str(slot.cpu)
        cgroup = self.backend.cgroups.create(f"{slot.name}-{secrets.token_hex(4)}", pinned)
        try:
            cgroup.set_limits(memory=spec.limits.memory, pids=spec.limits.processes + OVERHEAD_PROCESSES)
            return BwrapStage.start(self, spec, cgroup, cancel, stdin=stdin, stdout=stdout)
        except BaseException:
            cgroup.remove()
            raise
