"""The /etc a bubblewrap stage sees: which of the host's files it holds (the rule of docs/security.md,
"The sandbox's /etc"), copied once per host state into a content-addressed directory.

The rule, in order:

1. Named: the base (`BASE_ETC`: the dynamic linker's cache, time zone, os-release...), with network
   `NETWORK_ETC` (name resolution, CA certificates), and the operator's `sandbox.etc` patterns
   (globs relative to /etc; the default, `TOOLCHAIN_ETC`, is what Debian's compilers read there).
2. Followed: a symlink is copied as a symlink, and its target too when it lies in /etc
   (`fpc.cfg` -> `alternatives/fpc.cfg` -> `fpc-3.2.2.cfg`), step by step.
3. Refused, whatever named it: a path under `DENY_ETC` (shadow files, sudoers, SSH, TLS private
   keys, key files, the spool's own directory with its server key and the workers' environment
   file), and anything an unprivileged user of the host may not read (a file without o+r, a
   directory without o+rx): the job runs as such a user, and the copy is made by root.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from cutor_spool.config import SandboxConfig
from cutor_spool.runner.slots import slot_accounts

BASE_ETC = (
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "os-release",
    "debian_version",
    "mime.types",
    "protocols",
    "services",
)
NETWORK_ETC = ("resolv.conf", "nsswitch.conf", "ssl", "ca-certificates", "gai.conf", "host.conf", "hosts")
# The default of spool.yaml's sandbox.etc (config.py says why each is there).
TOOLCHAIN_ETC = tuple(SandboxConfig().etc)
# Never copied, whatever names them: the path itself or any parent matching one of these.
DENY_ETC = (
    "shadow*",
    "gshadow*",
    "passwd-",
    "group-",
    "sudoers",
    "sudoers.d",
    "ssh",
    "ssl/private",
    "*/private",
    "*.key",
    "*_key",
    "*.keytab",
    "security",
    "environment",
    "cutor-spool",
)


def denied(rel: str) -> bool:
    """Is /etc/`rel` (or a directory it is in) refused by DENY_ETC?"""
    parts = PurePosixPath(rel).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in DENY_ETC)


def _readable_by_others(st: os.stat_result) -> bool:
    wanted = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(st.st_mode) else 0)
    return st.st_mode & wanted == wanted and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode))


def _in_etc(root: Path, link: Path) -> str | None:
    """The target of the symlink `link` relative to `root` (the host's /etc), or None when it
    points elsewhere. A target named by an absolute /etc path is taken relative to `root`."""
    target = os.readlink(link)
    if os.path.isabs(target):
        full = os.path.normpath(target)
        rel = os.path.relpath(full, "/etc") if full == "/etc" or full.startswith("/etc/") else None
    else:
        rel = os.path.relpath(os.path.normpath(os.path.join(link.parent, target)), root)
    return None if rel is None or rel == "." or rel.startswith("..") else rel


def etc_sources(
    network: bool, patterns: Iterable[str] = TOOLCHAIN_ETC, root: Path = Path("/etc")
) -> list[tuple[str, str, bytes]]:
    """(relative name, kind, content) of what the sandbox's /etc holds; kinds l(ink), f(ile), d(ir)."""
    found: dict[str, tuple[str, str, bytes]] = {}
    real_root = os.path.realpath(root)
    pending = [*BASE_ETC, *(NETWORK_ETC if network else ())]
    pending += [str(path.relative_to(root)) for pattern in patterns for path in root.glob(pattern)]
    while pending:
        rel = os.path.normpath(pending.pop())
        src = root / rel
        if rel in found or denied(rel) or rel.startswith(".."):
            continue
        if os.path.commonpath([real_root, os.path.realpath(src.parent)]) != real_root:
            continue  # a parent is a symlink out of /etc
        try:
            if src.is_symlink():
                found[rel] = (rel, "l", os.readlink(src).encode())
                target = _in_etc(root, src)
                if target is not None:
                    pending.append(target)
                continue
            st = src.stat()
        except OSError:  # gone, or a parent we may not reach
            continue
        if not _readable_by_others(st):
            continue
        if stat.S_ISDIR(st.st_mode):
            found[rel] = (rel, "d", b"")
            pending.extend(f"{rel}/{child}" for child in sorted(os.listdir(src)))
        else:
            found[rel] = (rel, "f", src.read_bytes())
    return sorted(found.values())


def prepare_etc(
    base: Path, *, uid_base: int, slots: int, network: bool, patterns: Iterable[str] = TOOLCHAIN_ETC
) -> Path:
    """The directory that is the sandbox's /etc for this host's files as they are now.

    Content-addressed (`etc-<digest>`), built once and never changed after: executors of a host
    agree on it without locks, and a new one appears only when the host's files change (new
    libraries: a new ld.so.cache). Swapping one directory in place was seen to leave a moment
    with no /etc at all, and a concurrent stage failed to start."""
    entries = etc_sources(network, patterns)
    synthetic = slot_accounts(uid_base, slots)
    if not network:
        synthetic["hosts"] = "127.0.0.1 localhost sandbox\n::1 localhost\n"
    entries = [e for e in entries if e[0] not in synthetic] + [(k, "f", v.encode()) for k, v in synthetic.items()]
    digest = hashlib.sha256(repr(sorted(entries)).encode()).hexdigest()[:16]
    target = base / f"{'etc-net' if network else 'etc'}-{digest}"
    if target.is_dir():
        return target
    fresh = base / f".build-{target.name}-{os.getpid()}-{secrets.token_hex(3)}"
    fresh.mkdir(mode=0o755, parents=True)
    for rel, kind, content in sorted(entries):
        dst = fresh / rel
        dst.parent.mkdir(mode=0o755, parents=True, exist_ok=True)  # a pattern may name a nested path
        if kind == "d":
            dst.mkdir(mode=0o755, exist_ok=True)
        elif kind == "l":
            os.symlink(content.decode(), dst)
        else:
            dst.write_bytes(content)
            dst.chmod(0o644)
    try:
        os.rename(fresh, target)
    except OSError:  # another executor published the same directory first
        shutil.rmtree(fresh, ignore_errors=True)
    return target


def etc_stamp() -> tuple[float, float]:
    """What says the host's /etc may have changed, cheaply: ld.so.cache (new libraries) and /etc's
    own mtime (an entry added or removed: a toolchain installed)."""
    stamps = []
    for path in ("/etc/ld.so.cache", "/etc"):
        try:
            stamps.append(os.stat(path).st_mtime)
        except FileNotFoundError:
            stamps.append(0.0)
    return stamps[0], stamps[1]
