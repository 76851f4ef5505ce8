"""The claim takes a submission out of its client's reach, before anything in it is read.

Until the claim, a client owns every directory of its entry: it may rename, replace or symlink
any name in it at any moment, from a process whose working directory is inside it or that holds a
descriptor of one of its directories. A root worker that reads `d/secret` after the client turned
`d` into a symlink to a root-only directory leaks it; one that writes `result/status.json` after
the client swapped `result` for a symlink writes wherever the client likes.

So the claim, right after its rename, takes custody of the entry top-down: each directory is
opened from its parent's descriptor with `O_DIRECTORY | O_NOFOLLOW` (never by path), given to the
worker's uid with `fchown`, stripped of group and other write, of set-id and sticky bits, and of
its POSIX ACLs (an ACL entry naming the client would outlive the chown), and only then listed.
Creating, removing or renaming a name needs write permission on its directory at the moment of the
call: once a directory is the worker's and not writable by others, a process of the client inside
it, or holding a descriptor of it, can still read it but no longer change which inode any name
in it stands for. Top-down matters: a directory is locked before its children are listed, so no
name can move between the listing and the lock below it.

Files keep their owner. The client can still write into a file it owns (through a descriptor it
kept, or by opening it again), but not replace it: what changes is its own bytes, which it could
have sent anyway, and every read is size-capped. Whether the submitter could read a file, and
whether it has other hard links, is judged from its owner and link count at intake
(`runner/tree.py`), where a file still has its client's owner.

The submitter (the uid that owned the dropped directory) is recorded in the attempt log and in
status.json. An entry that comes back already the worker's (a requeue) takes its submitter from
the log of its earlier claim, which only the spool could have written (`result/` is the spool's
own directory, see `queue.py`). An entry dropped by the worker's own uid (root on a single-user
spool) is its own submitter.

In a spool shared between users (`sharing.py`, docs/shared-spool.md) the top directory is also
closed (the operators' group, 0750) as soon as it is the worker's, before anything in it is listed
or made, and sealed (`seal`) with one ACL entry for its submitter once the submitter is known: no
other user can open anything in it from then on, nor through a descriptor taken earlier.

A directory on another filesystem (a FUSE mount the client made on its own directory) is not
entered: intake refuses it. A worker that may not `chown` (not root, and the entry another uid's)
cannot take custody; the claim records why and the submission ends `invalid` with that reason,
its results written with the same no-symlink opens.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.nofollow import DIR_FLAGS, opened_dir
from cutor_spool.sharing import Sharing

# Deeper than this is refused at intake (runner/tree.py MAX_DEPTH, 32) and never read.
MAX_DEPTH = 34
_ACLS = ("system.posix_acl_access", "system.posix_acl_default")


class CustodyRefused(Exception):
    """The worker cannot take the entry from its client (it may not change the owner)."""


@dataclass(frozen=True)
class Custody:
    owner: int  # the uid that owned the entry's directory when it was claimed
    result_ours: bool  # result/ was there already and is the spool's (a requeue)
    failure: str | None = None  # why custody could not be taken


def take(anchor: Path, name: str, *, close: Callable[[int], None] | None = None) -> Custody:
    """Takes custody of `anchor/name` (see the module's docstring). `close`, in a shared spool,
    shuts the top directory to everyone but the operators (`sharing.Sharing.close`) once it is the
    worker's and before anything is listed or made in it: no other user can open a directory
    below it from then on (a descriptor of `result/` taken now would read every result)."""
    with opened_dir(anchor, name) as top:
        st = os.fstat(top)
        try:
            _lock(top, st)
        except CustodyRefused as exc:
            return Custody(st.st_uid, False, str(exc))
        if close is not None:
            close(top)
        try:
            found = os.lstat("result", dir_fd=top)
            result_ours = stat.S_ISDIR(found.st_mode) and found.st_uid == os.geteuid()
        except FileNotFoundError:
            result_ours = False
        try:
            _lock_children(top, st.st_dev, 1)
        except CustodyRefused as exc:
            return Custody(st.st_uid, result_ours, str(exc))
        return Custody(st.st_uid, result_ours)


def seal(sharing: Sharing, anchor: Path, name: str, submitter: int) -> bool:
    """A shared spool: from now on only the entry's submitter and the operators may read it
    (`sharing.py`); it stays sealed through the commit, which renames the same directory. False
    when the filesystem has no ACLs (then only the operators may)."""
    with opened_dir(anchor, name) as top:
        return sharing.seal(top, submitter)


def _lock(fd: int, st: os.stat_result) -> None:
    if st.st_uid != os.geteuid():
        try:
            os.fchown(fd, os.geteuid(), -1)  # first: from here on the client cannot chmod it back
        except PermissionError as exc:
            raise CustodyRefused(
                "the worker may not take this entry from its owner (uid "
                f"{st.st_uid}): a spool shared between users needs its executors to run as root"
            ) from exc
    for name in _ACLS:
        try:
            os.removexattr(fd, name)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
    # Its mode as of now: the client, still its owner until the chown, may have changed it since `st`.
    now = stat.S_IMODE(os.fstat(fd).st_mode)
    if now != now & 0o755:
        os.fchmod(fd, now & 0o755)


def _lock_children(parent: int, device: int, depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    with os.scandir(parent) as it:
        names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    for name in names:
        try:
            fd = os.open(name, DIR_FLAGS, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # gone before the parent was ours, or a FUSE mount root may not enter
        try:
            st = os.fstat(fd)
            if st.st_dev != device:
                continue  # a mount point: intake refuses it, nothing reads below it
            _lock(fd, st)
            _lock_children(fd, device, depth + 1)
        finally:
            os.close(fd)
