"""The file descriptors of a bubblewrap stage being started (runner/bwrap.py): the child's ends,
closed here once it has them, and ours; the stage's environment in a memory file."""

from __future__ import annotations

import fcntl
import os

from cutor_spool.atomic import write_fd
from cutor_spool.runner.sandbox import PIPE


class StagePipes:
    """The fds of a stage being started: the child's ends (closed here once it has them) and ours."""

    def __init__(self) -> None:
        self.child: dict[str, int] = {}
        self.ours: dict[str, int] = {}
        self.close_after: list[int] = []

    def pipe(self, name: str, child_reads: bool) -> None:
        read, write = os.pipe()
        self.child[name], self.ours[name] = (read, write) if child_reads else (write, read)
        self.close_after.append(self.child[name])

    def wire(self, stdin_bytes: bytes, *, stdin: int | None, stdout: int | None) -> None:
        """The child's stdin, stdout, stderr and bwrap's status fd, as `Sandbox.spawn` says. A
        stage's own stdin (`stdin_bytes`) is a sealed memory file: a regular file the job may
        read and seek, which nothing can change (it was a file in the slot's directory, written
        and truncated for every stage: 0.3 ms a judged test where that directory is on a disk)."""
        self.pipe("status", child_reads=False)
        self.pipe("stderr", child_reads=False)
        if stdout is None or stdout == PIPE:
            self.pipe("stdout", child_reads=False)
        else:
            self.child["stdout"] = stdout
        if stdin == PIPE:
            self.pipe("stdin", child_reads=True)
        elif stdin is not None:
            self.child["stdin"] = stdin
        else:
            self.child["stdin"] = sealed_file("cutor-stage-stdin", stdin_bytes)
            self.close_after.append(self.child["stdin"])

    def env(self, data: bytes) -> None:
        """A memory file holding the stage's environment for bwrap's `--args` (see env_args),
        made like the stage's stdin (`sealed_file`): written whole, then sealed."""
        self.child["env"] = sealed_file("cutor-stage-env", data)
        self.close_after.append(self.child["env"])

    def started(self) -> None:
        for fd in self.close_after:
            os.close(fd)
        self.close_after.clear()

    def abandon(self) -> None:
        self.started()
        for fd in self.ours.values():
            os.close(fd)


SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def sealed_file(name: str, data: bytes) -> int:
    """A memory file holding `data`, positioned at its start and sealed (memfd_create(2)): its
    size and bytes can no longer change, through this descriptor or any other (a job that opens
    /proc/self/fd/0 for writing gets EPERM), and no seal can be taken off."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        write_fd(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd
