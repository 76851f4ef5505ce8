"""Warm slots (issue 18): a bubblewrap stage's mount tree made once per environment, each stage
entered into a copy of it instead of building its sandbox afresh.

A fresh bubblewrap per stage is already 5.5x a bare fork/exec on its own (docs/benchmarks.md,
"Where the time goes"): a user namespace, a tmpfs root and a dozen mounts each time. Here the
read-only part of that tree (/usr and the top-level links, the prepared /etc, the launcher,
`sandbox.ro_binds` and a stage's Nix store paths, a /dev of device nodes, empty mount points) is
made once by the launcher's `root` mode in a mount namespace of its own, and this module keeps
that namespace open (a descriptor of /proc/PID/ns/mnt; the process that made it has exited, so
there is no keeper process a job could signal, trace or enter). Each stage is then started by the
launcher's `ns=FD` mode, as root on the host, in the stage's cgroups and with its rlimits:

1. it clones the slot's current /work (or aux) and io mounts as detached trees (`open_tree`),
   while it still sees the host's tree: a slot's tmpfs mounts are new at each acquire, so they
   cannot be part of the shared tree;
2. enters the environment's tree and copies it (`unshare(CLONE_NEWNS)`), with new ipc, uts, pid,
   cgroup namespaces, and enters a new network namespace made ahead (`NetPool`; unless the stage
   has network);
3. mounts a fresh /tmp, /dev/shm (size-capped tmpfs) and /dev/pts (a new devpts instance) and
   attaches /work and /run/cutor (read-only) (`move_mount`);
4. forks the stage's pid 1, which mounts /proc, starts a session, reads the environment, drops
   to the slot's uid (no groups, no_new_privs), renews the keyrings if the filter lets the job use
   them (`keyring_open`), loads the seccomp filter, hides its host options from /proc/1/cmdline
   and goes on as the stage's init (`init=yes`).

Nothing of one stage is visible to the next: every namespace but the read-only tree's is new
per stage; /tmp, /dev/shm and /dev/pts are new mounts in the stage's own mount namespace, gone
with its last process; /work is the slot's tmpfs of the submission, new at each acquire; the
stage's cgroup is new (cgroups.py) whatever the construction.

What is different from bubblewrap, and why it is no weaker: the job does not run in a user
namespace of its own but as the slot's uid in the host's, with no capabilities (a uid other than
0 has none after setresuid, and no_new_privs stops any exec from gaining them: no setuid
binary, no file capability). A user namespace is what gave bubblewrap, unprivileged, the right to
mount; here the launcher mounts as root, before the drop. bubblewrap's `--disable-userns` is the
seccomp filter's `namespaces` group here: warm slots are used only when the spool's policy
refuses unshare, setns and clone's namespace flags (`eligible`), otherwise every stage goes
through bubblewrap. Keyrings, per user namespace under bubblewrap, are per uid here: the
`keyring` group of the filter refuses them to the job, and a spool that allows them gets a new
session keyring and the uid's keyrings emptied per stage. The read-only tree cannot be changed by a job
(no capability, and the mounts are read-only in the copy it runs in; mount propagation is
private), nor can another submission's /work reach it: each stage attaches its own.

`sandbox.warm_slots: false` turns this off; a stage that fails to start drops its tree, and the
next stage makes it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.bwrap_layout import OVERHEAD_PROCESSES, BwrapLayout, pid1_bind, store_binds, system_and_etc
from cutor_spool.runner.launcher import OOM, parent_options, rlimit_options
from cutor_spool.runner.seccomp import Policy

log = logging.getLogger(__name__)

NETNS_BATCH = 16  # network namespaces made ahead at once (see NetPool)
TREES = 16  # environments whose trees are kept open at once (least recently used dropped first)
TreeKey = tuple[str, ...]


def eligible(launcher: Path | None, pol: Policy | None) -> bool:
    """Whether stages may run on warm slots: the static launcher does the work, and the seccomp
    filter refuses new namespaces (bubblewrap's `--disable-userns`: see the module's docstring)."""
    return launcher is not None and pol is not None and {"unshare", "setns", "clone"} <= set(pol.denied)


def keyring_open(pol: Policy) -> bool:
    """Whether the filter lets a job use the kernel's keyrings (a spool's `allow: [keyring]`): the
    launcher then gives each stage a new session keyring and empties the uid's (see above)."""
    return not {"keyctl", "add_key", "request_key"} <= set(pol.denied)


def tree_args(layout: BwrapLayout, *, network: bool, ro_binds: Sequence[str]) -> list[str]:
    """The read-only tree's contents for the launcher's `root` mode (bubblewrap's syntax): the same
    read-only mounts as a fresh stage's (bwrap_layout.bwrap_argv), in the same order. Pure."""
    assert layout.launcher is not None
    return [*system_and_etc(layout, network=network), *pid1_bind(layout), *store_binds(layout, ro_binds)]


def warm_argv(
    launcher: Path,
    *,
    procs_files: Sequence[Path],
    limits: Limits,
    uid: int,
    gid: int,
    fds: dict[str, int],
    work: Path,
    io: Path,
    tmp_size: int,
    network: bool,
    keyring: bool,
    marker: str,
    command: Sequence[str],
) -> list[str]:
    """A stage's command line on a warm slot (`fds`: ns, env, status and, with a filter, seccomp:
    descriptors the launcher inherits). `ns=` comes before `user=`: the launcher then drops to
    the uid in the stage's pid 1, after its mounts. Pure."""
    return [
        str(launcher), OOM, *(f"cgroup={path}" for path in procs_files),
        *rlimit_options(limits, limits.processes + OVERHEAD_PROCESSES),
        *(f"{name}={fd}" for name, fd in fds.items()),
        f"work={work}", f"io={io}", f"tmp={tmp_size}", f"net={'yes' if network else 'no'}",
        f"keyring={'yes' if keyring else 'no'}", f"user={uid}:{gid}",
        "--", *parent_options("stderr" if marker == "stderr" else ""), "--", *command,
    ]  # fmt: skip


class Trees:
    """The read-only trees of the environments stages ran in, each a mount namespace held open by
    a descriptor of this process: no process of its own, gone with the executor."""

    def __init__(self, launcher: Path, scratch: Path) -> None:
        self.launcher = launcher
        self.scratch = scratch  # where `root` mounts its tmpfs, in its own namespace only
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._open: OrderedDict[TreeKey, int] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, args: list[str]) -> int | None:
        """A descriptor of the tree `args` describe (made if needed), the caller's to close. None
        if it cannot be made (a bind source missing, say): the stage then goes through bubblewrap,
        whose own error says what is wrong, as it would without warm slots."""
        key = tuple(args)
        with self._lock:
            fd = self._open.get(key)
            if fd is not None:
                self._open.move_to_end(key)
                return os.dup(fd)
        try:
            made = self._make(args)  # outside the lock: a few ms, once per environment
        except SandboxError as exc:
            log.warning("%s; this stage goes through bubblewrap", exc)
            return None
        with self._lock:
            if key in self._open:  # another thread made it meanwhile
                os.close(made)
            else:
                self._open[key] = made
                while len(self._open) > TREES:
                    os.close(self._open.popitem(last=False)[1])
            return os.dup(self._open[key])

    def drop(self, key: TreeKey) -> None:
        """Forgets a tree (a stage in it failed to start): the next stage makes it again."""
        with self._lock:
            fd = self._open.pop(key, None)
        if fd is not None:
            log.warning("a stage failed to start on a warm slot; its environment's tree is made again")
            os.close(fd)

    def _make(self, args: list[str]) -> int:
        proc = subprocess.Popen(
            [str(self.launcher), "root", str(self.scratch), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={},
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            ready = proc.stdout.readline()
            fd = os.open(f"/proc/{proc.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC) if ready == b"ready\n" else -1
        finally:
            proc.stdin.close()
            error = proc.stderr.read().decode("utf-8", "replace").strip()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        if fd < 0:
            raise SandboxError(f"cannot make a warm slot's tree: {error or f'exit {proc.returncode}'}")
        return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._open.values():
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._open.clear()


class NetPool:
    """New network namespaces (loopback up) made ahead, in batches, by the launcher's `netns` mode
    in a thread of their own: making one is a third of a warm stage's work in the kernel
    (copy_net_ns), done here off the stage's path. Each is handed to one stage only and closed
    by the caller once the stage's launcher has it; none is ever entered twice. Empty (at the
    start, or when stages outrun it), a stage makes its own as before."""

    def __init__(self, launcher: Path) -> None:
        self.launcher = launcher
        self._ready: list[int] = []
        self._lock = threading.Lock()
        self._filling = False
        self._closed = False

    def take(self) -> int | None:
        with self._lock:
            fd = self._ready.pop() if self._ready else None
            refill = len(self._ready) < NETNS_BATCH // 2 and not self._filling and not self._closed
            self._filling |= refill
        if refill:
            threading.Thread(target=self._fill, name="netns", daemon=True).start()
        return fd

    def _fill(self) -> None:
        fds: list[int] = []
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with ours:
                proc = subprocess.Popen(
                    [str(self.launcher), "netns", str(NETNS_BATCH)],
                    stdin=subprocess.DEVNULL, stdout=theirs.fileno(), stderr=subprocess.PIPE, env={},
                )  # fmt: skip
                theirs.close()
                size = socket.CMSG_SPACE(NETNS_BATCH * 4)
                _, ancillary, _, _ = ours.recvmsg(1, size, socket.MSG_CMSG_CLOEXEC)
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds += [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data) - 3, 4)]
                _, error = proc.communicate()
            if proc.returncode != 0:
                log.warning("network namespaces made ahead: %s", error.decode("utf-8", "replace").strip())
        except OSError as exc:
            log.warning("network namespaces made ahead: %s", exc)
        finally:
            with self._lock:
                self._filling = False
                if self._closed:
                    fds, kept = [], fds
                else:
                    self._ready += fds
                    kept = []
            for fd in kept:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            fds, self._ready = self._ready, []
        for fd in fds:
            os.close(fd)
