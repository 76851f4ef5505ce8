"""A deployment's build: the invocations entry of kind `build` that `deploy` drops.

The executor verifies the deployment, unpacks its bundle into a root-only staging directory on local
disk, plans it as a submission (its manifest's settings), and hands it to the pipeline with the
`BuildGrader`: the same materialise, dependencies (the builder's Nix environment) and compile as a
submission's. Then, instead of running the program, the grader stores the compiled work area as a
deterministic zip in `cas/` and writes `deployments/<cid>/build.json` `ready` with its CID; a
deployment without a compile stage is stored as its bundle. A compile error or a failed
environment writes `failed` with the reason (the deployment's fault); a failure of the system is
retried by the worker and, past its attempts, `failed` too (`record_failure`).

The compiled work area is the job's: `pack` reads it without following anything, and a symlink,
FIFO or hard link in it fails the build (a bundle holds regular files only).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.deployments.bundle import MAX_BYTES, pack, unpack
from cutor_spool.deployments.errors import BundleError, DeploymentError
from cutor_spool.deployments.manifest import MANIFEST_NAME
from cutor_spool.deployments.requests import read_build_record, write_build_record
from cutor_spool.deployments.spec import Deployment
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState
from cutor_spool.documents.states import Outcome, State
from cutor_spool.runner.intake import Plan, plan_directory
from cutor_spool.runner.invocations.context import Refused, Services, now, submission_of
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.tree import Problem
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)


@dataclass
class BuildGrader:
    """The pipeline's last step for a build: store the work area, write the build record."""

    services: Services
    deployment: Deployment
    entry_id: str
    name: str = "deployment-build"

    def problems(self, plan: Plan) -> list[Problem]:
        return []

    def grade(self, context: GradingContext) -> None:
        reporter = context.reporter
        if context.plan.compile is None:
            work = self.deployment.spec.bundle  # nothing ran: the work area is the bundle
        else:
            problems: list[Problem] = []
            packed = self._work_area(context.sandbox.workdir, problems)
            if packed is None:
                reason = "the compiled work area cannot be stored: " + "; ".join(map(str, problems[:5]))
                self.record(DeploymentState.FAILED, reason=reason)
                reporter.finish(State.DONE, Outcome.RUNTIME_ERROR, message=reason)
                return
            work = self.services.store.put(packed)
        self.record(DeploymentState.READY, work=work)
        reporter.finish(State.DONE, Outcome.OK, message=f"ready: work area {work}")

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        self.record(DeploymentState.FAILED, reason=f"{stop.step}: {stop.outcome.value}: {stop.message}"[-2000:])

    def record(self, state: DeploymentState, *, work: str | None = None, reason: str | None = None) -> None:
        record_build(self.services, self.deployment.cid, self.entry_id, state, work=work, reason=reason)

    def _work_area(self, workdir: Path, problems: list[Problem]) -> bytes | None:
        """The compiled /work packed (None, with the problems, when it holds anything but regular
        files and directories). `pack` follows nothing and refuses hard links; every file there is
        the slot uid's own (a tmpfs of its own: no link reaches another file system), and no
        process of the job is left once its stage has ended."""
        config = self.services.config
        try:
            return pack(workdir, max_files=config.max_files, max_bytes=min(config.sandbox.work_size, MAX_BYTES))
        except BundleError as exc:
            problems.extend(Problem("work", p) for p in exc.problems)
            return None


def record_build(
    services: Services,
    cid: str,
    entry_id: str,
    state: DeploymentState,
    *,
    work: str | None = None,
    reason: str | None = None,
) -> None:
    earlier = read_build_record(services.paths, cid)
    write_build_record(
        services.paths,
        DeploymentBuild(
            deployment=cid,
            state=state,
            work=work,
            build_entry=entry_id,
            reason=reason,
            created=earlier.created if earlier is not None else now(),
            finished=now(),
        ),
    )


def build(
    services: Services, deployment: Deployment, entry_id: str, staging: Path, reporter: Reporter, cancel: Cancelled
) -> None:
    """Builds a verified deployment in this claim's staging directory (removed afterwards). One
    that is built already is not built again: a build entry anyone drops cannot turn a working
    deployment's record `failed` (a flaky compile) or make the executors compile it over and over."""
    earlier = read_build_record(services.paths, deployment.cid)
    if earlier is not None and earlier.state == DeploymentState.READY and earlier.work is not None:
        reporter.finish(State.DONE, Outcome.OK, message=f"built already: work area {earlier.work}")
        return
    staging.mkdir(mode=0o700)
    try:
        source = staging / deployment.cid  # its name is the environment's user (builder/environments.py)
        source.mkdir(mode=0o700)
        config = services.config
        try:
            unpack(
                services.store.get(deployment.spec.bundle),
                source,
                uid=0,
                gid=0,
                max_files=config.max_files,
                max_bytes=config.max_submission_size,
            )
        except DeploymentError as exc:
            raise Refused.because("bundle", f"{deployment.spec.bundle}: {exc}") from None
        sub = submission_of(deployment.spec.manifest, config)
        intake = plan_directory(source, sub, config, hidden=frozenset({MANIFEST_NAME}))
        if intake.plan is None:
            raise Refused(list(intake.problems))
        grader = BuildGrader(services, deployment, entry_id)
        services.pipeline.run(intake.plan, grader, source, reporter, cancel)
        if reporter.status.state == State.INVALID:  # the pipeline refused it before any stage
            errors = reporter.status.errors or []
            grader.record(DeploymentState.FAILED, reason="; ".join(f"{p.where}: {p.message}" for p in errors))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
