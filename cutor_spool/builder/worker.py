"""`cutor-spool builder`: claims `builds/incoming/<key>` with the same claim/lease/commit/reap code
as submissions, builds the environment, and publishes `builds/done/<key>`.

The loop and the decisions are the generic worker's (watcher/worker.py): its system failures
(`BuildError`: Nix broken, store unwritable, cache unwritable) are handed back and retried, and past
`max_attempts` published as a result with status `error`. The builder says how to build one
request and how to finish one: a request that is already built or being built (one that slipped
in after the commit) is discarded, as many executors asking for one key cause one build; a
request whose content does not hash to its entry's name is set aside as `<key>.rejected-<token>`,
never published under that key.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cutor_spool.atomic import write_bytes, write_json
from cutor_spool.builder import cache
from cutor_spool.builder.build import (
    CGROUP_PREFIX,
    BuildLimits,
    BuildReport,
    BuildStatus,
    CacheTarget,
    build_environment,
)
from cutor_spool.builder.keys import EnvRequest, short
from cutor_spool.builder.nixcmd import NixSettings, host_system
from cutor_spool.builder.nixpkgs import PinResolver
from cutor_spool.builder.requests import ENV_SCRIPT_NAME, LOG_NAME, RESULT_NAME, USES_NAME, request_of
from cutor_spool.config import SpoolConfig
from cutor_spool.documents.build import BuildRecord
from cutor_spool.documents.states import State
from cutor_spool.errors import BuildError, LeaseLost, SandboxError
from cutor_spool.layout import BUILDS
from cutor_spool.runner.cgroups import CgroupHost
from cutor_spool.runner.launcher import build_launcher, launcher_dir
from cutor_spool.runner.slots import DEFAULT_STATE_DIR
from cutor_spool.runner.stage import StageStatus
from cutor_spool.watcher.claim import Claim, iso
from cutor_spool.watcher.endings import Ending
from cutor_spool.watcher.maintenance import Active
from cutor_spool.watcher.worker import QueueWorker

log = logging.getLogger(__name__)


class Builder(QueueWorker[None]):
    kind = "builder"
    queue_kind = BUILDS

    def __init__(
        self,
        spool: Path,
        *,
        concurrency: int = 1,
        poll: bool | None = None,
        state_dir: Path = DEFAULT_STATE_DIR,
        store_root: Path | None = None,
        signing_key: Path = cache.DEFAULT_SIGNING_KEY,
        host: str | None = None,
        grace: float = 30.0,
        config: SpoolConfig | None = None,
    ) -> None:
        super().__init__(spool, concurrency=concurrency, poll=poll, host=host, grace=grace, config=config)
        self.work_root = state_dir / "builds"
        self.settings = NixSettings.from_config(self.config.nix, self.paths.root, store_root=store_root)
        self.limits = BuildLimits.from_config(self.config.nix)
        self.signing_key = signing_key
        self.system = self.config.nix.system or host_system()
        self.resolver = PinResolver(self.config.nix.nixpkgs, self.paths.root, self.settings, ttl=0.0)
        self.maintenance.info.update(
            {"store": str(store_root or "/nix/store"), "nix": {"system": self.system, "sandbox": self.settings.sandbox}}
        )
        self.cgroups: CgroupHost | None = None
        self.launcher_dir = launcher_dir(state_dir)
        self.launcher: Path | None = None
        self.cache: CacheTarget | None = None
        self.built = 0

    # -- life cycle --------------------------------------------------------------------------
    def setup(self) -> None:
        self.resolver.pin()  # a wrong nixpkgs is the operator's to fix: fail at start, not per build
        self.work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.cgroups = CgroupHost.detect()
        except (SandboxError, OSError) as exc:
            raise BuildError(f"builds need cgroups for their memory and pids limits: {exc}") from exc
        try:
            self.launcher = build_launcher(self.launcher_dir)
        except SandboxError as exc:
            raise BuildError(f"builds start through the launcher: {exc}") from exc
        self._sweep_cgroups()
        if self.config.nix.binary_cache:
            public = cache.ensure_signing_key(self.signing_key, self.settings, self.identity.host)
            cache.publish_public_key(self.paths, public)
            directory = cache.cache_dir(self.paths)
            directory.mkdir(parents=True, exist_ok=True)
            self.cache = CacheTarget(directory, self.signing_key)
            log.info("builder: exporting to %s, signed as %s", directory, public.partition(":")[0])
        self.maintenance.periodic.append(self._sweep_cgroups)

    def _sweep_cgroups(self) -> None:
        """Removes build cgroups of builder processes on this host that died (with their Nix)."""
        assert self.cgroups is not None
        for cgroup in self.cgroups.left_by_dead(CGROUP_PREFIX):
            log.warning("removing build cgroup %s of a builder that died", cgroup.name)
            try:
                cgroup.remove()
            except SandboxError as exc:
                log.error("cannot remove cgroup %s: %s", cgroup.name, exc)

    def describe(self) -> str:
        store = self.settings.store_root or "/nix/store"
        return (
            f"spool {self.paths.root}, {self.concurrency} at once, nixpkgs {self.config.nix.nixpkgs}, "
            f"system {self.system}, store {store}"
        )

    def label(self, name: str) -> str:
        return f"build {short(name)}"

    # -- one build -----------------------------------------------------------------------------
    def begin(self, claim: Claim, active: Active) -> None:
        return None

    def finish(self, claim: Claim, job: None, ending: Ending) -> None:
        if ending.state is State.INVALID:
            # A duplicate (built already, or being built under another claim) adds nothing, and a
            # name that is not a key cannot be published.
            log.info("build %s: request discarded", short(claim.entry_id))
            self._discard(claim)
            return
        checked = self._request(claim)
        if checked is not None:
            self._publish_error(claim, checked[0], ending.reason)

    def _request(self, claim: Claim) -> tuple[EnvRequest, bytes | None] | None:
        """The entry's request, or None once it is set aside: unreadable, or not hashing to its
        entry's name (it must never be published under that key)."""
        try:
            request, nix_text = request_of(claim.path)
        except (OSError, ValueError, ValidationError) as exc:
            self._reject(claim, f"unreadable request: {exc}")
            return None
        if request.key() != claim.entry_id:
            self._reject(claim, f"its request hashes to {short(request.key())}, not to its name")
            return None
        return request, nix_text

    def handle(self, claim: Claim, job: None, active: Active) -> None:
        label = short(claim.entry_id)
        checked = self._request(claim)
        if checked is None:
            return
        request, nix_text = checked
        pin = self.resolver.pin()
        if pin.identity != request.nixpkgs.identity or request.system != self.system:
            mine = f"nixpkgs {pin.identity} on {self.system}"
            theirs = f"nixpkgs {request.nixpkgs.identity} on {request.system}"
            self._publish_error(claim, request, f"this builder has {mine}; the request asks for {theirs}")
            return
        workdir = self.work_root / f"{claim.entry_id}.{claim.token}"
        log.info("build %s: building %s (attempt %d)", label, request.describe(), claim.attempt)
        started_at = time.time()
        try:
            report = build_environment(
                request,
                nix_text,
                key=claim.entry_id,
                settings=self.settings,
                limits=self.limits,
                workdir=workdir,
                cgroups=self.cgroups,
                cancel=active.cancel,
                cache=self.cache,
                launcher=self.launcher,
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._publish(claim, request, report, started_at)
        self.built += 1
        log.info(
            "build %s: %s in %.2fs (%s)",
            label,
            report.status,
            report.wall_time,
            report.message if report.status != BuildStatus.OK else f"{len(report.closure)} paths",
        )

    # -- publishing --------------------------------------------------------------------------
    def _base_record(self, claim: Claim, request: EnvRequest) -> dict[str, Any]:
        """The fields of every build record (see documents/build.py)."""
        return {
            "key": claim.entry_id,
            "system": request.system,
            "nixpkgs": request.nixpkgs.ref,
            "nixpkgs_identity": request.nixpkgs.identity,
            "request": request.summary(),
            "builder": self.identity.worker_id,
            "host": self.identity.host,
            "attempt": claim.attempt,
            "limits": self.limits.to_json(),
        }

    def _publish(self, claim: Claim, request: EnvRequest, report: BuildReport, started_at: float) -> None:
        entry = claim.path
        record = BuildRecord.model_validate(
            {
                **self._base_record(claim, request),
                "status": str(report.status),
                "stage_status": str(report.stage_status),
                "message": report.message,
                "packages": list(report.packages),
                "env_path": report.env_path,
                "drv_path": report.drv_path,
                "shell": report.shell,
                "env_script": ENV_SCRIPT_NAME if report.env_script is not None else None,
                "closure_size": report.closure_size if report.closure else None,
                "paths": [list(item) for item in report.closure],
                "exported": report.exported,
                "exit_code": report.exit_code,
                "log": LOG_NAME,
                "log_truncated": report.log_truncated,
                "started_at": iso(started_at),
                "built_at": iso(time.time()),
                "build_time": round(report.wall_time, 3),
                "cpu_time": round(report.cpu_time, 3),
                "memory": report.memory,
                "steps": list(report.steps),
            }
        )
        write_bytes(entry / LOG_NAME, report.log)
        if report.env_script is not None:
            write_bytes(entry / ENV_SCRIPT_NAME, report.env_script)
        self._commit(claim, record)

    def _publish_error(self, claim: Claim, request: EnvRequest, reason: str) -> None:
        log.error("build %s: %s", short(claim.entry_id), reason)
        record = BuildRecord.model_validate(
            {
                **self._base_record(claim, request),
                "status": str(BuildStatus.ERROR),
                "stage_status": str(StageStatus.INTERNAL_ERROR),
                "message": reason,
                "packages": [],
                "paths": [],
                "built_at": iso(time.time()),
            }
        )
        self._commit(claim, record)

    def _commit(self, claim: Claim, record: BuildRecord) -> None:
        entry = claim.path
        try:
            (entry / USES_NAME).mkdir(exist_ok=True)
        except FileNotFoundError as exc:
            raise LeaseLost(f"build {short(claim.entry_id)}: claim is gone") from exc
        write_json(entry / RESULT_NAME, record.dump())
        claim.commit()

    def _discard(self, claim: Claim) -> None:
        trash = self.paths.tmp / f".discarded-{claim.path.name}"
        try:
            os.rename(claim.path, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _reject(self, claim: Claim, reason: str) -> None:
        log.error("build %s: rejected: %s", short(claim.entry_id), reason)
        record = BuildRecord(key=claim.entry_id, status=BuildStatus.REJECTED, message=reason)
        write_json(claim.path / RESULT_NAME, record.dump())
        claim.commit(f"{claim.entry_id}.rejected-{claim.token}")
