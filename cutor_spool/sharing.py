"""The permission model of a spool shared by users who do not trust each other (docs/shared-spool.md).

    spool/                 root:root       0755
    spool.yaml             root:root       0644
    incoming/              root:SUBMITTERS 1730   drop, never list; the sticky bit: only a drop's
                                                  owner (or root) may rename or remove it
    cancel/                root:SUBMITTERS 1730   cancel requests, `<id>.<uid>`, the same way
    tmp/ active/ done/     root:root       0755   workers' only; ids are visible, entries are not
    builds/ workers/       root:root       0755
    status/                root:OPERATORS  2750   the page is for operators (and root) only
    active/<id>.<token>/   root:OPERATORS  0750   + ACL user:<submitter>:r-x, from the claim on
    = done/<id>/

An entry is sealed at its claim, right after custody has made it root's: its top directory gets the
operators' group, mode 0750 and one named-user ACL entry for its submitter. Everything below it
keeps its modes (0755 directories, 0644 documents) but is out of reach for anyone who cannot
traverse the top: the submitter and the operators can, nobody else. The submitter owns no directory
on the way, so it can read every document but replace, rename or rewrite none (its own source
files, which it owns, excepted). Plain owner and group bits cannot say "this one user and that
group": owning a directory lets its owner rename anything in it, owning a file lets its owner
rewrite it; hence one ACL entry. Where the filesystem has no ACLs the seal fails closed: the
entry is the operators' alone (`doctor` reports it).
"""

from __future__ import annotations

import errno
import grp
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import SharedConfig
from cutor_spool.errors import ConfigError

INCOMING_MODE = 0o1730
STATUS_MODE = 0o2750
ENTRY_MODE = 0o750
SPOOL_MODE = 0o755

ACCESS_ACL = "system.posix_acl_access"
DEFAULT_ACL = "system.posix_acl_default"

# The kernel's xattr form of a POSIX ACL (linux/posix_acl_xattr.h): a version, then (tag, perm, id).
_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF
_R, _X = 4, 1


class GroupUnknown(ConfigError):
    pass


def resolve_group(name: str) -> int:
    """A group's gid, from its name or its number."""
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise GroupUnknown(f"no group named {name!r} on this host") from None


@dataclass(frozen=True)
class AclEntry:
    tag: int
    perm: int
    qualifier: int


def encode_acl(entries: list[AclEntry]) -> bytes:
    ordered = sorted(entries, key=lambda e: (e.tag, e.qualifier if e.tag in (USER, GROUP) else 0))
    return struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", e.tag, e.perm, e.qualifier) for e in ordered)


def decode_acl(blob: bytes) -> list[AclEntry]:
    if len(blob) < 4 or struct.unpack_from("<I", blob)[0] != _VERSION or (len(blob) - 4) % 8:
        raise ValueError("not a POSIX ACL")
    return [AclEntry(*struct.unpack_from("<HHI", blob, offset)) for offset in range(4, len(blob), 8)]


def entry_acl(submitter: int) -> bytes:
    """rwx for the owner (root), r-x for the submitter and the owning group, nothing for others."""
    return encode_acl(
        [
            AclEntry(USER_OBJ, 7, _UNDEFINED),
            AclEntry(USER, _R | _X, submitter),
            AclEntry(GROUP_OBJ, _R | _X, _UNDEFINED),
            AclEntry(MASK, _R | _X, _UNDEFINED),
            AclEntry(OTHER, 0, _UNDEFINED),
        ]
    )


def named_readers(path: Path) -> tuple[list[int], list[int]] | None:
    """The uids and gids that a directory's access ACL names with read permission (None without
    an ACL)."""
    try:
        blob = (
            os.getxattr(path, ACCESS_ACL, follow_symlinks=False)
            if isinstance(path, Path)
            else os.getxattr(path, ACCESS_ACL)
        )
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise
    entries = decode_acl(blob)
    mask = next((e.perm for e in entries if e.tag == MASK), 7)
    users = [e.qualifier for e in entries if e.tag == USER and e.perm & mask & _R]
    groups = [e.qualifier for e in entries if e.tag == GROUP and e.perm & mask & _R]
    return users, groups


@dataclass(frozen=True)
class Sharing:
    """A shared spool's groups, resolved on this host."""

    submitters: int
    operators: int

    @classmethod
    def from_config(cls, config: SharedConfig | None) -> Sharing | None:
        if config is None:
            return None
        return cls(resolve_group(config.submitters), resolve_group(config.operators))

    def close(self, fd: int) -> None:
        """Shuts a claimed entry's top directory (`fd`, already the worker's, its ACLs gone) to
        all but its owner and the operators' group."""
        os.fchown(fd, -1, self.operators)
        os.fchmod(fd, ENTRY_MODE)

    def seal(self, fd: int, submitter: int) -> bool:
        """Seals a claimed entry's top directory (`fd`, already the worker's): closed (`close`),
        then read for its submitter through an ACL. False when the filesystem has no ACLs: then
        only the operators may read it (fail closed)."""
        self.close(fd)
        if submitter == os.fstat(fd).st_uid:
            return True  # the worker's own uid dropped it: the owner bits say it all
        try:
            os.setxattr(fd, ACCESS_ACL, entry_acl(submitter))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                return False
            raise
        return True

    def layout(self, root: Path) -> dict[Path, tuple[int, int]]:
        """path -> (mode, gid) of what `init --shared` sets; every other directory of the spool
        is root's, 0755."""
        return {
            root / "incoming": (INCOMING_MODE, self.submitters),
            root / "status": (STATUS_MODE, self.operators),
            root / "cancel": (INCOMING_MODE, self.submitters),  # requests: `cancel/<id>.<uid>`
        }

    def apply(self, root: Path, directories: list[Path]) -> None:
        """Sets the model's owners and modes on a spool's directories (`init --shared`)."""
        special = self.layout(root)
        for directory in [root, *directories]:
            mode, gid = special.get(directory, (SPOOL_MODE, 0))
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchown(fd, 0, gid)
                os.fchmod(fd, mode)
                for name in (ACCESS_ACL, DEFAULT_ACL):
                    try:
                        os.removexattr(fd, name)
                    except OSError as exc:
                        if exc.errno not in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP):
                            raise
            finally:
                os.close(fd)


def world_bits(mode: int) -> int:
    return stat.S_IMODE(mode) & 0o007
