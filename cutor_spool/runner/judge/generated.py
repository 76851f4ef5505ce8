"""Generated tests: a test's input made at judge time by the problem's `generator`, cached per host.

A test with `generate: [ARGS...]` gets as its input the stdout of the problem's generator run with
those arguments (sandboxed in aux like a checker, see programs.py; compiled once per claim, and
only if some input is not in the cache yet).

The cache lives in the executor's state directory on local disk (`<state>/generated/<key>`), keyed
by the sha256 of everything the output can depend on: the generator's files (names and bytes), its
`compile`, `run` and `limits`, the arguments, and the dependency environment (the submission's
`dependencies` and the environment script the builder made, which names its store paths). An entry
is written to a temporary name, fsynced and renamed into place, so a reader never sees half a file;
a per-key lock file (flock) makes concurrent executors of one host generate it once: the second
waits, then reads the first's. It is not shared through the spool: a spool on NFS has no flock that
holds across hosts, and its clients can write to it, so an entry there could be planted; each host
generates once instead. Entries are never changed, so the directory can be emptied at any time;
each executor's housekeeping (`prune`) keeps it under `sandbox.generated_cache` bytes, removing the
least recently used entries first (a hit touches its entry's mtime): the state directory is on
/run, a tmpfs, by default, so an unbounded cache would be memory.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from cutor_spool.errors import SpoolIOError
from cutor_spool.runner.judge.programs import AuxPrograms, problem_script
from cutor_spool.runner.judge.verdicts import stage_feedback
from cutor_spool.runner.tree import read_file
from cutor_spool.submission import ProblemProgram

CACHED, GENERATED = "cached", "generated"
VERSION = b"cutor-spool generated tests v1\0"


def cache_dir(programs: AuxPrograms) -> Path:
    """`<state>/generated`: the slot's root is `<state>/slots/<uid>` (runner/slots.py)."""
    return programs.runner.sandbox.slot.root.parent.parent / "generated"


@dataclass
class Generator:
    programs: AuxPrograms
    compiled: str | None = None  # None: not yet; "": ready; else why it is unusable
    _base: bytes | None = field(default=None, repr=False)

    @property
    def spec(self) -> ProblemProgram:
        spec = self.programs.runner.plan.submission.generator
        assert spec is not None
        return spec

    def key(self, args: list[str]) -> str:
        digest = hashlib.sha256(self._identity())
        digest.update(json.dumps(args).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()

    def _identity(self) -> bytes:
        if self._base is None:
            runner = self.programs.runner
            plan = runner.plan
            digest = hashlib.sha256(VERSION + self.spec.model_dump_json().encode())
            mine = [n for n in sorted(plan.tree.files) if any(n == f or n.startswith(f + "/") for f in self.spec.files)]
            for name in mine:
                try:
                    data = read_file(self.programs.entry, name, plan.tree.files[name].size)
                except OSError as exc:
                    raise SpoolIOError(f"generator file {name} cannot be read: {exc}") from exc
                digest.update(f"{name}\0{len(data)}\0".encode() + hashlib.sha256(data).digest())
            deps = json.dumps(plan.submission.model_dump(mode="json")["dependencies"]).encode()
            env = runner.env.env_script or b""
            digest.update(deps + b"\0" + hashlib.sha256(env).digest() + "\0".join(runner.env.ro_binds).encode())
            self._base = digest.digest()
        return self._base

    def input(self, test: str, args: list[str]) -> tuple[bytes | None, str]:
        """The test's input and `cached` or `generated`; or None and why the generator failed."""
        directory = cache_dir(self.programs)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = self.key(args)
        path = directory / key
        limit = self.programs.limits(self.spec).output
        data = _cached(path, limit)
        if data is not None:
            return data, CACHED
        wait = 2 * self.programs.limits(self.spec).wall_time + 600
        try:
            with FileLock(str(directory / f"{key}.lock"), timeout=wait):
                data = _cached(path, limit)  # another executor made it while we waited
                if data is not None:
                    return data, CACHED
                return self._generate(test, args, path)
        except Timeout as exc:
            raise SpoolIOError(f"the generated input {key} stayed locked for {wait:g}s") from exc

    def _generate(self, test: str, args: list[str], path: Path) -> tuple[bytes | None, str]:
        if self.compiled is None:
            self.compiled = self._compile()
        if self.compiled:
            return None, self.compiled
        script = problem_script(self.spec.run, self.programs.runner.plan.program_files)
        assert script is not None
        output = self.programs.stage(f"tests/{test}/generator", self.spec, script, tuple(args))
        if not output.ok:
            return None, f"the generator failed on test {test} ({stage_feedback(output)})"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        try:
            with open(tmp, "xb") as file:
                file.write(output.stdout)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return output.stdout, GENERATED

    def _compile(self) -> str:
        script = problem_script(self.spec.compile, self.programs.runner.plan.program_files)
        if script is None:
            return ""
        output = self.programs.stage("generator_compile", self.spec, script)
        self.programs.runner.reporter.stage("generator_compile", output)
        return "" if output.ok else f"the generator did not compile ({stage_feedback(output)})"


def _cached(path: Path, limit: int) -> bytes | None:
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        return None
    try:
        os.utime(path)  # used now: the last to be pruned
    except FileNotFoundError:
        pass  # pruned since it was opened: what was read is whole all the same
    return data


ABANDONED = 3600.0  # seconds after which a temporary left by a killed generator is removed


def prune(directory: Path, cap: int) -> int:
    """Removes the least recently used entries until the cache holds at most `cap` bytes, with
    temporaries older than ABANDONED and the lock files of entries no longer there that nobody
    holds. Returns how many entries went. A reader that opened an entry keeps reading it."""
    try:
        listing = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    now, entries, locks = time.time(), [], []
    for item in listing:
        try:
            st = item.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if item.name.endswith(".lock"):
            locks.append(item.name)
        elif item.name.startswith("."):
            if now - st.st_mtime > ABANDONED:
                (directory / item.name).unlink(missing_ok=True)
        else:
            entries.append((st.st_mtime, st.st_size, item.name))
    total, removed = sum(size for _, size, _ in entries), 0
    for _, size, name in sorted(entries):
        if total <= cap:
            break
        (directory / name).unlink(missing_ok=True)
        total, removed = total - size, removed + 1
    for lock in locks:  # one removed while another executor opens it: that key is made twice, alike
        if not (directory / lock.removesuffix(".lock")).exists():
            _unlink_unheld(directory / lock)
    return removed


def _unlink_unheld(path: Path) -> None:
    """A lock file nobody holds (a generator at work holds its key's)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
