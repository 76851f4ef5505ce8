"""`cutor-spool doctor`: checks a spool's owners and modes against its permission model
(`sharing.py`, docs/shared-spool.md) and says what is unsafe and what to do about it.

Read-only: it never changes a mode (`init --shared` again repairs the spool's own directories). It
looks at the spool's directories, spool.yaml, workers/, keys/, the top of cas/ and builds/cache/,
and every entry of active/ and done/ (one lstat each, plus one getxattr in a shared spool); inside
an entry it looks at nothing, because an entry is sealed by its top directory.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from cutor_spool.config import SpoolConfig, load_config
from cutor_spool.deployments.keys import KEYS_DIR, SERVER_KIND, SIGNING_KIND
from cutor_spool.deployments.store import CAS_DIR
from cutor_spool.errors import ConfigError
from cutor_spool.layout import SpoolPaths
from cutor_spool.sharing import (
    ACCESS_ACL,
    INCOMING_MODE,
    STATUS_MODE,
    GroupUnknown,
    Sharing,
    entry_acl,
    named_readers,
)

UNSAFE = "unsafe"
NOTE = "note"
KEY_FILE_LIMIT = 64 << 10  # a key file is a few hundred bytes; larger files are not read
SCAN_LIMIT = 100_000  # entries of cas/ looked at, at most


@dataclass(frozen=True)
class Finding:
    severity: str  # UNSAFE or NOTE
    path: str
    problem: str
    fix: str


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


class Doctor:
    def __init__(self, root: Path) -> None:
        self.paths = SpoolPaths(root)
        self.root = root
        self.findings: list[Finding] = []
        self.owner = 0  # who should own the spool's directories (its root's owner when not shared)

    def say(self, severity: str, path: Path, problem: str, fix: str) -> None:
        self.findings.append(Finding(severity, str(path), problem, fix))

    def lstat(self, path: Path) -> os.stat_result | None:
        try:
            return os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.say(NOTE, path, f"cannot be checked: {exc.strerror}", "run cutor-spool doctor as root")
            return None

    # -- the whole spool -----------------------------------------------------------------------
    def run(self) -> list[Finding]:
        top = self.lstat(self.root)
        if top is None or not stat.S_ISDIR(top.st_mode):
            self.say(UNSAFE, self.root, "is not a spool directory", f"cutor-spool init {self.root}")
            return self.findings
        config = self.config()
        sharing = self.sharing(config)
        self.owner = 0 if sharing is not None else top.st_uid
        self.not_writable(self.root, top)
        drop_boxes = (self.paths.submissions.incoming, self.paths.cancels)  # clients write into these
        for directory in self.paths.directories():
            if directory not in drop_boxes:
                self.plain_directory(directory)
        for box in drop_boxes:
            self.incoming(box, sharing)
        self.workers()
        self.keys()
        self.private_keys()
        self.tree(self.root / CAS_DIR, files_too=True)
        self.tree(self.paths.builds.root / "cache", files_too=False)
        if sharing is not None:
            self.shared(sharing)
        return self.findings

    def config(self) -> SpoolConfig | None:
        path = self.paths.config
        st = self.lstat(path)
        if st is not None:
            self.not_writable(path, st, what="whoever writes spool.yaml chooses nixpkgs, limits and sandbox for all")
        try:
            return load_config(self.root)
        except ConfigError as exc:
            self.say(UNSAFE, path, f"does not load: {exc}", "fix spool.yaml (cutor-spool schema --spool-config)")
            return None

    def sharing(self, config: SpoolConfig | None) -> Sharing | None:
        if config is None or config.shared is None:
            return None
        try:
            return Sharing.from_config(config.shared)
        except GroupUnknown as exc:
            self.say(UNSAFE, self.paths.config, f"shared: {exc}", "groupadd it, or name an existing group")
            return None

    def not_writable(self, path: Path, st: os.stat_result, *, what: str = "") -> None:
        """Owned by root (or the owner of a spool that is not shared), writable by nobody else."""
        fix_owner = "root" if self.owner == 0 else str(self.owner)
        if st.st_uid not in (0, self.owner):
            self.say(
                UNSAFE,
                path,
                f"is owned by uid {st.st_uid}: it can change its mode and contents",
                f"chown {fix_owner} {path}",
            )
        if st.st_mode & 0o022:
            mode = stat.S_IMODE(st.st_mode) & ~0o022
            whom = "every user" if st.st_mode & 0o002 else "its group"
            self.say(
                UNSAFE,
                path,
                f"is writable by {whom} (mode {_mode(st)}){': ' + what if what else ''}",
                f"chmod {mode:04o} {path}",
            )

    def plain_directory(self, directory: Path) -> None:
        st = self.lstat(directory)
        if st is None:
            self.say(UNSAFE, directory, "is missing", f"cutor-spool init {self.root}")
        elif not stat.S_ISDIR(st.st_mode):
            self.say(UNSAFE, directory, "is not a directory", f"remove it, then cutor-spool init {self.root}")
        else:
            self.not_writable(directory, st)

    def incoming(self, path: Path, sharing: Sharing | None) -> None:
        """A directory clients write into (incoming/, cancel/)."""
        st = self.lstat(path)
        if st is None:
            self.say(UNSAFE, path, "is missing", f"cutor-spool init {self.root}")
            return
        others_write = bool(st.st_mode & 0o022)
        if others_write and not st.st_mode & stat.S_ISVTX:
            self.say(
                UNSAFE,
                path,
                f"is writable by others without the sticky bit (mode {_mode(st)}): "
                "any submitter can rename or remove another's drop (or request)",
                f"chmod +t {path}",
            )
        if sharing is None:
            if others_write:
                self.say(
                    UNSAFE,
                    path,
                    "other users may submit, but the spool is not shared: every user can read every result and source",
                    f"cutor-spool init --shared GROUP {self.root} (docs/shared-spool.md)",
                )
            return
        if st.st_uid != 0 or st.st_gid != sharing.submitters:
            self.say(
                UNSAFE,
                path,
                f"is {st.st_uid}:{st.st_gid}, not root and the submitters' group {sharing.submitters}",
                f"chown root:{sharing.submitters} {path}",
            )
        if st.st_mode & 0o007:
            self.say(
                UNSAFE,
                path,
                f"is open to users outside the submitters' group (mode {_mode(st)})",
                f"chmod {INCOMING_MODE:04o} {path}",
            )
        elif st.st_mode & 0o040:
            self.say(
                NOTE,
                path,
                f"can be listed by every submitter (mode {_mode(st)}): they see each other's drops",
                f"chmod {INCOMING_MODE:04o} {path}",
            )

    def workers(self) -> None:
        for path in self.children(self.paths.workers):
            st = self.lstat(path)
            if st is not None:
                self.not_writable(path, st, what="a forged heartbeat misleads the reaper and the page")

    def keys(self) -> None:
        directory = self.root / KEYS_DIR
        st = self.lstat(directory)
        if st is None:
            return
        self.not_writable(directory, st, what="a replaced server.pub gets every secret sealed to another key")
        for path in self.children(directory):
            found = self.lstat(path)
            if found is not None:
                self.not_writable(path, found, what="a replaced server.pub gets every secret sealed to another key")

    def private_keys(self) -> None:
        """Private keys have no place in the spool: whoever reads the spool would have them."""
        places = [
            self.root,
            self.root / KEYS_DIR,
            self.paths.tmp,
            self.paths.workers,
            self.paths.status,
            self.paths.builds.root,
            self.paths.builds.root / "cache",
            self.paths.builds.root / "cache" / "keys",
        ]
        for place in places:
            for path in self.children(place):
                if _is_private_key(path):
                    self.say(
                        UNSAFE,
                        path,
                        "is a private key inside the spool",
                        f"move it out of the spool (e.g. /etc/cutor-spool/), chmod 0600, then rm {path}",
                    )

    def tree(self, top: Path, *, files_too: bool) -> None:
        """`top` and the directories (and with `files_too` the files) below it, to two levels."""
        for seen, (path, depth) in enumerate(self.walk(top, 2), 1):
            if seen > SCAN_LIMIT:
                break
            st = self.lstat(path)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode) or files_too:
                self.not_writable(
                    path, st, what="blobs and caches are code that every executor trusts" if depth else ""
                )

    # -- a shared spool ------------------------------------------------------------------------
    def shared(self, sharing: Sharing) -> None:
        status = self.paths.status
        st = self.lstat(status)
        if st is not None and (st.st_mode & 0o007 or st.st_gid != sharing.operators):
            self.say(
                UNSAFE,
                status,
                f"the page (every job's output) is readable by users outside the operators' "
                f"group (mode {_mode(st)}, group {st.st_gid})",
                f"chown root:{sharing.operators} {status}; chmod {STATUS_MODE:04o} {status}",
            )
        for queue in (self.paths.submissions.active, self.paths.submissions.done):
            for entry in self.children(queue):
                self.entry(entry, sharing)
        self.acl_support()

    def entry(self, path: Path, sharing: Sharing) -> None:
        st = self.lstat(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return
        if st.st_uid != 0:
            self.say(
                UNSAFE,
                path,
                f"is owned by uid {st.st_uid}: its owner can change every name in it",
                f"chown root {path}",
            )
        if st.st_mode & 0o007:
            self.say(
                UNSAFE,
                path,
                f"its sources and result are readable by every user (mode {_mode(st)})",
                f"chmod o-rwx {path}",
            )
        if st.st_mode & 0o020 or st.st_gid != sharing.operators:
            self.say(
                UNSAFE if st.st_mode & 0o020 else NOTE,
                path,
                f"is group {st.st_gid} mode {_mode(st)}, not the operators' ({sharing.operators}) 0750",
                f"chgrp {sharing.operators} {path}; chmod 0750 {path}",
            )
        try:
            readers = named_readers(path)
        except (OSError, ValueError) as exc:
            self.say(NOTE, path, f"its ACL cannot be read: {exc}", "getfacl it")
            return
        if readers is not None and (len(readers[0]) > 1 or readers[1]):
            self.say(
                UNSAFE,
                path,
                f"its ACL lets more than its submitter read it (users {readers[0]}, groups {readers[1]})",
                f"setfacl -b {path}; setfacl -m u:SUBMITTER:rx {path}",
            )

    def acl_support(self) -> None:
        probe = self.paths.tmp / f".doctor-acl-{os.getpid()}"
        try:
            os.mkdir(probe, 0o700)
        except OSError:
            return  # not root: nothing to probe with
        try:
            os.setxattr(probe, ACCESS_ACL, entry_acl(65534))
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP):
                self.say(
                    NOTE,
                    self.root,
                    "the filesystem has no POSIX ACLs: submitters cannot read their own "
                    "results (only the operators can)",
                    "mount it with ACLs (NFS: without `noacl`)",
                )
        finally:
            os.rmdir(probe)

    # -- listing -------------------------------------------------------------------------------
    def children(self, directory: Path) -> list[Path]:
        try:
            with os.scandir(directory) as it:
                return [Path(e.path) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            self.say(NOTE, directory, f"cannot be listed: {exc.strerror}", "run cutor-spool doctor as root")
            return []

    def walk(self, top: Path, depth: int) -> Iterator[tuple[Path, int]]:
        if not os.path.lexists(top):
            return
        yield top, 0
        level = [top]
        for d in range(1, depth + 1):
            below = []
            for directory in level:
                for child in (
                    self.children(directory) if os.path.isdir(directory) and not os.path.islink(directory) else []
                ):
                    yield child, d
                    below.append(child)
            level = below


def _is_private_key(path: Path) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > KEY_FILE_LIMIT:
            return False
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return _is_nix_secret_key(text)
    return (
        isinstance(data, dict)
        and data.get("kind") in (SERVER_KIND, SIGNING_KIND)
        and bool(data.get("private") or data.get("seed"))
    )


def _is_nix_secret_key(text: str) -> bool:
    """`name:base64` of 64 bytes: a Nix signing secret key (a public one has 32)."""
    name, sep, data = text.strip().partition(":")
    if not sep or not name or "\n" in data:
        return False
    try:
        return len(base64.b64decode(data, validate=True)) == 64
    except (binascii.Error, ValueError):
        return False


def examine(root: Path) -> list[Finding]:
    return Doctor(root).run()


def as_json(root: Path, findings: list[Finding], shared: bool) -> dict[str, object]:
    return {
        "spool": str(root),
        "shared": shared,
        "unsafe": sum(1 for f in findings if f.severity == UNSAFE),
        "findings": [asdict(f) for f in findings],
    }
