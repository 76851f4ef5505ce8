"""The executor's dependencies stage (`pipeline.Environments`): find or request the submission's
environment, wait for it, make sure its closure is in this host's store, and hand the later stages
the env script to source and the store paths to mount read-only (only those: the sandbox never
sees the rest of /nix/store).

Warm, this is a marker file, a small JSON read, a `stat` per store path and the env script's
bytes: milliseconds. The store paths are checked with `nix-store --check-validity` once per
process; if they are missing (an executor with a store of its own) they are realised from the
spool's signed binary cache and rooted under gcroots/cutor-spool/substituted/<key>.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.builder import cache, nixcmd, process
from cutor_spool.builder.keys import MAX_NIX_FILE, EnvRequest, for_attrs, for_nix_file, short
from cutor_spool.builder.nixcmd import NixSettings, host_system
from cutor_spool.builder.nixpkgs import PinResolver
from cutor_spool.builder.requests import Builds
from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.documents.build import BuildRecord, BuildStatus
from cutor_spool.documents.dependencies import BuildInfo, DependenciesDocument, EnvironmentInfo
from cutor_spool.documents.stage import StageStatus, Truncated
from cutor_spool.errors import BuildError
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.intake import Plan
from cutor_spool.runner.pipeline import Environment, EnvironmentResult
from cutor_spool.runner.tree import read_file
from cutor_spool.submission import NixExpression
from cutor_spool.watcher.ids import split_active

log = logging.getLogger(__name__)

SUBSTITUTED = "substituted"


class Unavailable(Exception):
    """The environment is built but its paths cannot be had on this host."""


@dataclass
class Obtained:
    data: BuildRecord | None
    key: str
    source: str  # "cached", "requested" (our request was built), "joined" (someone else's)
    message: str = ""
    substituted: bool = False


class NixEnvironments:
    def __init__(
        self,
        paths: SpoolPaths,
        config: SpoolConfig,
        *,
        poll: bool = False,
        settings: NixSettings | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.settings = settings or NixSettings.from_config(config.nix, paths.root)
        self.resolver = PinResolver(config.nix.nixpkgs, paths.root, self.settings)
        self.system = config.nix.system or host_system()
        self.builds = Builds(paths, poll=poll, interval=config.poll_interval if poll else 1.0)
        self._valid: set[str] = set()
        self._lock = threading.Lock()

    # -- the hook ----------------------------------------------------------------------------
    def prepare(self, plan: Plan, entry: Path, cancel: threading.Event) -> EnvironmentResult:
        parsed = split_active(entry.name)
        sub_id = parsed[0] if parsed else entry.name
        started = time.monotonic()
        limits = plan.limits[StageKind.DEPENDENCIES]
        try:
            nix_text = self._nix_text(plan, entry)
        except OSError as exc:  # larger than MAX_NIX_FILE, or swapped for something else
            message = f"the Nix file cannot be used: {exc}"
            refused = DependenciesDocument(status=StageStatus.RUNTIME_ERROR, message=message)
            return EnvironmentResult(False, Environment(), refused.dump(), message)
        request = self._request(plan, nix_text)
        got = self._obtain(sub_id, request, nix_text, until=started + limits.wall_time, cancel=cancel)
        waited = time.monotonic() - started
        if got.data is None:
            late = DependenciesDocument(
                status=StageStatus.TIME_LIMIT,
                key=got.key,
                message=got.message,
                request=request.summary(),
                waited=round(waited, 3),
                limits=limits.to_json(),
            )
            return EnvironmentResult(False, Environment(), late.dump(), got.message)
        data = got.data
        record = self._record(data, got, waited).dump()
        if data.status != BuildStatus.OK:
            message = f"the environment did not build: {data.message or data.status}"
            log.info("%s: dependencies %s failed: %s", sub_id, short(got.key), data.message)
            return EnvironmentResult(False, Environment(), record, message[-2000:])
        environment = Environment(
            env_script=self.builds.env_script(got.key),
            ro_binds=tuple(path for path, _ in data.paths or []),
            shell=data.shell or "/bin/bash",
        )
        log.info(
            "%s: environment %s ready (%s, %.3fs%s)",
            sub_id,
            short(got.key),
            got.source,
            waited,
            ", substituted from the spool's cache" if got.substituted else "",
        )
        return EnvironmentResult(True, environment, record, "")

    # -- the request -------------------------------------------------------------------------
    def _nix_text(self, plan: Plan, entry: Path) -> bytes | None:
        deps = plan.submission.dependencies
        if not isinstance(deps, NixExpression):
            return None
        # From the spool entry (validated at intake), never from /work: the job may own it by now.
        return read_file(entry, deps.nix, MAX_NIX_FILE)

    def _request(self, plan: Plan, nix_text: bytes | None, *, fresh: bool = False) -> EnvRequest:
        pin = self.resolver.pin(fresh=fresh)
        deps = plan.submission.dependencies
        if isinstance(deps, NixExpression):
            assert nix_text is not None
            return for_nix_file(deps.nix, nix_text, pin, self.system)
        return for_attrs(list(deps), pin, self.system)

    def _obtain(
        self, sub_id: str, request: EnvRequest, nix_text: bytes | None, *, until: float, cancel: threading.Event
    ) -> Obtained:
        key = request.key()
        source = "cached"
        retried = False
        while True:
            if cancel.is_set():
                return Obtained(None, key, source, "cancelled")
            data = self.builds.use(key, sub_id)
            if data is not None:
                if data.status == BuildStatus.ERROR and not retried:
                    # A system failure is not cached for new submissions: ask once more, with a
                    # fresh look at nixpkgs (the builder may have refused a stale pin).
                    retried = True
                    request = EnvRequest.model_validate(
                        {**request.model_dump(), "nixpkgs": self.resolver.pin(fresh=True).model_dump()}
                    )
                    if request.key() == key:
                        self.builds.evict(key, f"{sub_id}: {data.message}")
                    key = request.key()
                    continue
                substituted = False
                if data.status == BuildStatus.OK:
                    try:
                        substituted = self._ensure_local(key, data, until)
                    except Unavailable as exc:
                        if retried:
                            raise BuildError(f"environment {short(key)}: {exc}") from exc
                        retried = True
                        self.builds.evict(key, f"{sub_id}: {exc}")
                        continue
                return Obtained(data, key, source, substituted=substituted)
            if not self.builds.pending(key):
                sent = self.builds.send(request, nix_text)
                source = "requested" if sent and source != "joined" else "joined"
                how = "requested" if sent else "joined"
                log.info("%s: %s build %s (%s)", sub_id, how, short(key), request.describe())
            elif source == "cached":
                source = "joined"
            if time.monotonic() >= until:
                return self._timed_out(key)
            self.builds.wait(key, until=until, cancel=cancel)

    def _timed_out(self, key: str) -> Obtained:
        if not self.builds.claimed(key) and os.path.lexists(self.builds.dirs.incoming / key):
            # Nobody even started it: that is the system's failure (no builder running), not
            # the submission's. Retry, then error, like any other system failure.
            raise BuildError(
                f"no builder claimed the build of environment {short(key)}: is `cutor-spool builder` running?"
            )
        return Obtained(
            None,
            key,
            "joined",
            "the environment was still building when the dependencies stage's wall_time ran out",
        )

    # -- the store ---------------------------------------------------------------------------
    def _ensure_local(self, key: str, data: BuildRecord, until: float) -> bool:
        """Makes sure the environment's closure is valid in this host's store; True if it had
        to be substituted from the spool's binary cache."""
        env_path = data.env_path or ""
        closure = [path for path, _ in data.paths or []]
        if not env_path or not closure:
            raise Unavailable("its build record lists no store paths")
        present = all(os.path.lexists(self.settings.host_path(p)) for p in closure)
        with self._lock:
            known = env_path in self._valid
        if present and known:
            return False
        deadline = max(until, time.monotonic() + 60)
        env = nixcmd.nix_env(self.settings, nixcmd.nix_config(self.settings))
        if present:
            done = process.run(nixcmd.check_validity_argv(self.settings, closure), env=env, deadline=deadline)
            if done.ok and not done.stdout.strip():
                with self._lock:
                    self._valid.add(env_path)
                return False
        self._substitute(key, env_path, deadline)
        with self._lock:
            self._valid.add(env_path)
        return True

    def _substitute(self, key: str, env_path: str, deadline: float) -> None:
        keys = cache.trusted_keys(self.config.nix, self.paths)
        if not keys:
            raise Unavailable("this store lacks its paths and the spool's binary cache has no trusted key")
        directory = cache.cache_dir(self.paths)
        config = nixcmd.nix_config(self.settings, substituters=(f"file://{directory}",), trusted_public_keys=keys)
        root = self.settings.roots_dir / SUBSTITUTED / key
        root.parent.mkdir(parents=True, exist_ok=True)
        done = process.run(
            nixcmd.substitute_argv(self.settings, env_path, root),
            env=nixcmd.nix_env(self.settings, config),
            deadline=deadline,
        )
        if not done.ok:
            raise Unavailable(f"cannot substitute {env_path} from {directory}: {done.error_text(1500)}")

    # -- the record --------------------------------------------------------------------------
    def _record(self, data: BuildRecord, got: Obtained, waited: float) -> DependenciesDocument:
        tail, cut = self.builds.log_tail(got.key)
        return DependenciesDocument(
            status=data.stage_status or StageStatus.INTERNAL_ERROR,
            key=got.key,
            source=got.source,
            waited=round(waited, 6),
            request=data.request,
            nixpkgs=data.nixpkgs,
            system=data.system,
            environment=EnvironmentInfo(
                path=data.env_path,
                drv=data.drv_path,
                paths=len(data.paths or []),
                closure_size=data.closure_size,
                shell=data.shell,
                substituted=got.substituted,
            ),
            packages=data.packages or [],
            build=BuildInfo(
                status=data.status, builder=data.builder, host=data.host, built_at=data.built_at, attempt=data.attempt
            ),
            stdout="",
            stderr=tail,
            output=tail,
            exit_code=data.exit_code,
            signal=None,
            truncated=Truncated(stdout=False, stderr=cut or bool(data.log_truncated)),
            cpu_time=data.cpu_time,
            wall_time=data.build_time,
            memory=data.memory,
            limits=data.limits.model_dump() if data.limits is not None else None,
            message=data.message,
        )
