"""One build: evaluate the request (restricted), build it, print its env script, measure it.

    1. `nix eval` of the driver's `info` under `restrict-eval`: the derivation and its packages.
       A missing attribute, a Nix file that reads a host file, a syntax error: Nix's error, and
       the build *fails* (an outcome, cached like a success: the same key fails the same way).
    2. `nix print-dev-env --profile <gcroots>/cutor-spool/<key> <drv>`: builds the packages with
       Nix's sandbox and build users, prints the environment as a bash script, and roots it.
    3. `nix path-info --recursive`: the closure with its sizes (what an executor must mount).
    4. `nix copy --to file://<spool>/builds/cache` (signed), for executors with another store.

All steps share one cgroup (memory and pids limit), one deadline and one log budget: together
they are the build's limits. Failures of the system itself (Nix missing, store unwritable, disk
full) raise `BuildError` instead, and the worker retries them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.builder import nixcmd, process
from cutor_spool.builder.driver import DRIVER_NIX
from cutor_spool.builder.keys import NIX_FILE_NAME, EnvRequest, short
from cutor_spool.builder.nixcmd import NixSettings
from cutor_spool.config import NixConfig
from cutor_spool.documents.build import BuildStatus as BuildStatus  # noqa: PLC0414 - re-exported from its old home
from cutor_spool.documents.build import BuiltPackage
from cutor_spool.errors import BuildError
from cutor_spool.runner.cgroups import Cgroup, CgroupHost
from cutor_spool.runner.stage import StageStatus, classify
from cutor_spool.runner.supervise import KillReason
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)

CGROUP_PREFIX = "nixbuild-"
# Lines of Nix's own errors that mean the machine, not the request, is at fault.
SYSTEM_ERRORS = re.compile(
    r"^error:.*(No space left on device|database is locked|Read-only file system|cannot connect to|"
    r"opening lock file|SQLite|getting status of '/nix/var|Too many open files)",
    re.MULTILINE,
)
BASH_IN_STORE = re.compile(r"^/nix/store/[0-9a-z]{32}-bash(-interactive)?-[0-9]")
# `print-dev-env` scripts make a fresh NIX_BUILD_TOP with `mktemp -d` each time they are sourced:
# a process per stage (9 ms on a loaded 2-core host, against 0.4 ms for the rest of the script).
# In the sandbox /tmp is private to the stage already, so the published script uses it. The line
# is Nix's own (src/nix/develop.cc); a Nix that words it otherwise keeps its mktemp.
MKTEMP_LINE = b'export NIX_BUILD_TOP="$(mktemp -d -t nix-shell.XXXXXX)"'
SANDBOX_TMP_LINE = b'export NIX_BUILD_TOP="${TMPDIR:-/tmp}"'


def for_sandbox(script: bytes) -> bytes:
    return script.replace(MKTEMP_LINE, SANDBOX_TMP_LINE, 1)


@dataclass(frozen=True)
class BuildLimits:
    timeout: float
    memory: int
    log: int
    processes: int

    @classmethod
    def from_config(cls, nix: NixConfig) -> BuildLimits:
        return cls(nix.build_timeout, nix.build_memory, nix.build_log, nix.build_processes)

    def to_json(self) -> dict[str, float | int]:
        return {"wall_time": self.timeout, "memory": self.memory, "output": self.log, "processes": self.processes}


@dataclass(frozen=True)
class BuildReport:
    status: BuildStatus
    stage_status: StageStatus
    message: str
    log: bytes
    log_truncated: bool
    wall_time: float
    cpu_time: float
    memory: int
    exit_code: int | None = None
    drv_path: str | None = None
    env_path: str | None = None
    shell: str = "/bin/bash"
    packages: tuple[BuiltPackage, ...] = ()
    closure: tuple[tuple[str, int], ...] = ()
    env_script: bytes | None = None
    exported: bool = False
    steps: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def closure_size(self) -> int:
        return sum(size for _, size in self.closure)


@dataclass(frozen=True)
class CacheTarget:
    """Where (and with which key) to export a built closure."""

    directory: Path
    secret_key: Path


class _Failed(Exception):
    """A step of the build failed in the submitter's way (an outcome, not the system's failure)."""

    def __init__(self, report: BuildReport) -> None:
        super().__init__(report.message)
        self.report = report


class _Steps:
    """Runs the Nix commands of one build under its shared limits and collects its log."""

    def __init__(
        self, limits: BuildLimits, build: process.BuildCgroup | None, cancel: Cancelled, label: str, started: float
    ) -> None:
        self.limits, self.build, self.cancel, self.label = limits, build, cancel, label
        self.started = started
        self.deadline = started + limits.timeout
        self.log = bytearray()
        self.truncated = False
        self.steps: list[dict[str, Any]] = []

    @property
    def cgroup(self) -> Cgroup | None:
        return self.build.cgroup if self.build is not None else None

    def run(self, name: str, argv: list[str], env: dict[str, str]) -> process.Finished:
        room = max(self.limits.log - len(self.log), 0)
        done = process.run(
            argv,
            env=env,
            deadline=self.deadline,
            stderr_cap=room,
            cancel=self.cancel.event,
            build=self.build,
            label=self.label,
        )
        self.log += done.stderr
        self.truncated = self.truncated or done.stderr_truncated
        self.steps.append({"step": name, "exit_code": done.returncode, "wall_time": round(done.wall, 3)})
        self.cancel.check()  # a lost lease or a shutdown: the worker decides what happens
        return done

    def must(self, name: str, argv: list[str], env: dict[str, str], failure: str) -> process.Finished:
        """Runs a step whose failure is the request's (raises _Failed), or the system's (BuildError)."""
        done = self.run(name, argv, env)
        if done.ok:
            return done
        if SYSTEM_ERRORS.search(done.stderr.decode("utf-8", "replace")):
            raise BuildError(f"{failure}: {done.error_text(1000)}")
        status, message = build_status(done, self.cgroup)
        raise _Failed(self.report(BuildStatus.FAILED, status, f"{failure}: {message}", exit_code=done.returncode))

    def report(self, status: BuildStatus, stage_status: StageStatus, message: str, **fields: Any) -> BuildReport:
        cgroup = self.cgroup
        return BuildReport(
            status=status,
            stage_status=stage_status,
            message=message,
            log=bytes(self.log),
            log_truncated=self.truncated,
            wall_time=time.monotonic() - self.started,
            cpu_time=cgroup.cpu_seconds() if cgroup is not None else 0.0,
            memory=cgroup.memory_peak() if cgroup is not None else 0,
            steps=tuple(self.steps),
            **fields,
        )


BUILD_LIMIT_MESSAGES = {
    StageStatus.MEMORY_LIMIT: "the build went over its memory limit (nix.build_memory)",
    StageStatus.TIME_LIMIT: "the build took longer than its time limit (nix.build_timeout)",
    StageStatus.OUTPUT_LIMIT: "the build's log went over its limit (nix.build_log)",
}


def build_status(done: process.Finished, cgroup: Cgroup | None) -> tuple[StageStatus, str]:
    """How a failed Nix step ended, by the stages' own classifier: a build has no CPU limit of its
    own, so its deadline is its time limit. Nix's own max-build-log-size kill is an output limit
    like ours."""
    killed_for = done.killed_for
    if killed_for is None and b"killed after writing more than" in done.stderr:
        killed_for = KillReason.OUTPUT
    status, _, _ = classify(
        started=True,
        killed_for=killed_for,
        returncode=done.returncode,
        oom_kills=cgroup.oom_kills() if cgroup is not None else 0,
        cpu_time=0.0,
        limits=None,
    )
    if status == StageStatus.OUTPUT_LIMIT and done.stdout_truncated and not done.stderr_truncated:
        return status, "Nix printed more than expected"
    return status, BUILD_LIMIT_MESSAGES.get(status) or done.error_text()


def profile_target(profile: Path, settings: NixSettings) -> str:
    """The store path a profile link points to (followed by hand: in a separate store the store
    path itself is not where the file is)."""
    link = profile
    for _ in range(4):
        target = Path(str(link.parent / link.readlink()))
        if str(target).startswith("/nix/store/"):
            return str(target)
        link = target
    raise BuildError(f"{profile}: does not lead into /nix/store")


def find_shell(closure: list[str]) -> str:
    """The bash to source the env script with: the closure's own, else the host's."""
    found = sorted((p for p in closure if BASH_IN_STORE.match(p)), key=lambda p: "-bash-interactive-" not in p)
    return f"{found[0]}/bin/bash" if found else "/bin/bash"


def build_environment(
    request: EnvRequest,
    nix_text: bytes | None,
    *,
    key: str,
    settings: NixSettings,
    limits: BuildLimits,
    workdir: Path,
    cgroups: CgroupHost | None,
    cancel: Cancelled,
    cache: CacheTarget | None,
    launcher: Path | None = None,
) -> BuildReport:
    """Builds one environment. With `cgroups`, its Nix processes run in a cgroup of their own,
    started through `launcher` (the runner's static launcher, required then)."""
    label = short(key)
    started = time.monotonic()
    build = None
    if cgroups is not None:
        if launcher is None:
            raise BuildError("a build in a cgroup starts through the launcher, and none was given")
        cgroup = cgroups.create(f"{CGROUP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}")
        cgroup.set_limits(memory=limits.memory, pids=limits.processes)
        build = process.BuildCgroup(cgroup, launcher)
    steps = _Steps(limits, build, cancel, label, started)
    try:
        return _build(request, nix_text, key, settings, workdir, steps, cache)
    except _Failed as failed:
        return failed.report
    finally:
        if build is not None:
            build.cgroup.remove()


def _driver(request: EnvRequest, nix_text: bytes | None, workdir: Path) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """The driver's directory, Nix search path and arguments for this request."""
    driver_dir, request_dir = workdir / "driver", workdir / "request"
    driver_dir.mkdir(parents=True)
    request_dir.mkdir()
    (driver_dir / "env.nix").write_text(DRIVER_NIX)
    search: dict[str, Path] = {"cutor-driver": driver_dir, "cutor-request": request_dir}
    args = {"system": request.system, "nixpkgsKind": request.nixpkgs.kind}
    if request.nixpkgs.kind == "flake":
        args["flake"] = request.nixpkgs.ref
    else:
        search["nixpkgs"] = Path(request.nixpkgs.ref)
    if nix_text is not None:
        (request_dir / NIX_FILE_NAME).write_bytes(nix_text)
        args["nixFile"] = str(request_dir / NIX_FILE_NAME)
        args["nixName"] = request.nix_name or NIX_FILE_NAME
    else:
        args["attrs"] = json.dumps(list(request.attrs))
    return driver_dir, search, args


Closure = tuple[tuple[str, int], ...]  # (store path, NAR size)


def _closure(
    steps: _Steps, settings: NixSettings, env_path: str, env: dict[str, str], listed: list[dict[str, Any]]
) -> tuple[Closure, tuple[BuiltPackage, ...]]:
    """The environment's closure with its sizes, and its packages as the driver listed them."""
    done = steps.run("closure", nixcmd.path_info_argv(settings, env_path), env)
    if not done.ok:
        raise BuildError(f"nix path-info {env_path}: {done.error_text(1000)}")
    try:
        infos = {str(p["path"]): p for p in json.loads(done.stdout)}
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"nix path-info gave unexpected output: {exc}") from exc
    closure = tuple(sorted((path, int(p.get("narSize") or 0)) for path, p in infos.items()))
    packages = tuple(
        BuiltPackage(
            attr=p.get("attr"),
            name=str(p.get("name") or ""),
            pname=str(p.get("pname") or ""),
            version=str(p.get("version") or ""),
            path=str(p.get("path")),
            nar_size=infos.get(str(p.get("path")), {}).get("narSize"),
            closure_size=infos.get(str(p.get("path")), {}).get("closureSize"),
        )
        for p in listed
    )
    return closure, packages


def _build(
    request: EnvRequest,
    nix_text: bytes | None,
    key: str,
    settings: NixSettings,
    workdir: Path,
    steps: _Steps,
    cache: CacheTarget | None,
) -> BuildReport:
    driver_dir, search, args = _driver(request, nix_text, workdir)
    restricted = nixcmd.nix_env(settings, nixcmd.nix_config(settings, restricted=True), tmpdir=workdir)
    argv = nixcmd.eval_argv(settings, driver_dir / "env.nix", search_path=search, args=args)
    done = steps.must("evaluate", argv, restricted, "evaluation failed")
    try:
        info = json.loads(done.stdout)
        drv_path = str(info["drvPath"])
        listed = [p for p in info["packages"] if isinstance(p, dict)]
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"nix eval gave unexpected output: {exc}") from exc

    settings.roots_dir.mkdir(parents=True, exist_ok=True)
    profile = settings.roots_dir / key
    plain = nixcmd.nix_env(settings, nixcmd.nix_config(settings), tmpdir=workdir)
    done = steps.must("build", nixcmd.dev_env_argv(settings, drv_path, profile), plain, "build failed")
    env_script = for_sandbox(done.stdout)
    env_path = profile_target(profile, settings)
    closure, packages = _closure(steps, settings, env_path, plain, listed)

    exported = False
    if cache is not None:
        argv = nixcmd.copy_to_cache_argv(settings, cache.directory, cache.secret_key, env_path)
        done = steps.run("export", argv, plain)
        if not done.ok:
            raise BuildError(f"cannot export {env_path} to the spool's binary cache: {done.error_text(1000)}")
        exported = True
    return steps.report(
        BuildStatus.OK,
        StageStatus.OK,
        "built",
        exit_code=0,
        drv_path=drv_path,
        env_path=env_path,
        shell=find_shell([path for path, _ in closure]),
        packages=packages,
        closure=closure,
        env_script=env_script,
        exported=exported,
    )
