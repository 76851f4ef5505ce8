"""An invocation: the invocations entry of kind `invoke`.

Everything that can refuse it is checked before a slot is taken, and a refusal ends the entry
`invalid` with the reason and nothing run (`Refused`): the request's method, path, query and
headers (cgi.py), its body against `deployments.max_body`, the deployment (its spec's bytes
against its CID, the owner's signature, the terms signature: `load_deployment`), its build record
(missing or `failed`), its sealed env against this executor's server key, its compiled work area
against its CID. A `pending` build is waited for up to `deployments.build_wait`, then the entry is
handed back uncounted (`BuildPending`), to be tried again once the queue has moved on.

Then the pipeline runs it as a plan without files or compile stage (the same sandbox, dependencies
and stage runner as a submission) whose grader, `InvokeGrader`, unpacks the compiled work area
into the slot's /work (owned by its uid, before any stage has run there) and runs the run stage with
the body on stdin and the CGI meta-variables and the opened env in its environment: in memory
only, handed to the sandbox and nowhere else. Its stdout becomes `result/response.json`.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.deployments.bundle import unpack
from cutor_spool.deployments.errors import BlobMismatch, DeploymentError, UnknownCid
from cutor_spool.deployments.requests import BODY, read_build_record
from cutor_spool.deployments.spec import Deployment, open_env
from cutor_spool.documents.deployment import DeploymentBuild, DeploymentState, InvocationRequest, Response
from cutor_spool.documents.states import State
from cutor_spool.errors import SystemFailure
from cutor_spool.limits import Limits
from cutor_spool.runner.intake import CONVENTIONAL, Plan, Script
from cutor_spool.runner.invocations import cgi
from cutor_spool.runner.invocations.context import Refused, Services, submission_of
from cutor_spool.runner.invocations.payment import pay_before_run
from cutor_spool.runner.judge.graders.base import GradingContext, Stopped
from cutor_spool.runner.results import STAGE_OUTCOME, Reporter
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.runner.stage_limits import resolved_limits
from cutor_spool.runner.tree import Problem, Tree, read_file
from cutor_spool.submission import NixExpression, ScriptFile, Submission
from cutor_spool.watcher.cancel import Cancelled
from cutor_spool.watcher.claim import Claim

RESPONSE = "response.json"
_BUILD_POLL = 0.1


class BuildPending(Exception):
    """The deployment's build has not finished: the invocation goes back to the queue uncounted."""


@dataclass
class InvokeGrader:
    services: Services
    work: bytes  # the compiled work area's zip, checked against its CID
    body: bytes
    environment: dict[str, str]  # CGI meta-variables and the opened env: never written anywhere
    name: str = "invocation"
    wall: float | None = None  # the run's measured wall time, once it ran (the charge: payment.py)

    def problems(self, plan: Plan) -> list[Problem]:
        return []

    def grade(self, context: GradingContext) -> None:
        plan, runner, reporter, sandbox = context.plan, context.runner, context.reporter, context.sandbox
        assert plan.run is not None
        config = self.services.config
        try:  # /work is ours until the first stage runs in it
            unpack(
                self.work,
                sandbox.workdir,
                uid=sandbox.slot.uid,
                gid=sandbox.slot.gid,
                max_files=config.max_files,
                max_bytes=config.sandbox.work_size,
            )
        except DeploymentError as exc:  # the spool's own zip, checked against its CID: not the request's
            raise SystemFailure(f"the compiled work area cannot be unpacked: {exc}") from exc
        reporter.transition(State.RUNNING, defer=True)
        command, files = runner.script_command(plan.run)
        spec = runner.spec(
            "run", command, plan.limits[StageKind.RUN], stdin=self.body, files=files, env=self.environment
        )
        output = runner.run(spec)
        self.wall = output.wall_time  # what the invocation is charged for (payment.py)
        reporter.stage("run", output)
        response = response_of(output)
        reporter.write(RESPONSE, response.dump())
        reporter.finish(State.DONE, STAGE_OUTCOME[output.status], message=f"HTTP {response.status}")

    def stopped(self, context: GradingContext, stop: Stopped) -> None:
        reason = f"the deployment's {stop.step} failed: {stop.message}"[-2000:]
        context.reporter.write(RESPONSE, cgi.bad_gateway(reason).dump())


def response_of(output: StageOutput) -> Response:
    """The program's answer when it ended by itself with exit 0; else 504 when it ran out of time
    and 502 for any other end, with how it ended as the reason (and none of its output)."""
    if output.ok:
        return cgi.parse_response(output.stdout)
    if output.status in (StageStatus.TIME_LIMIT, StageStatus.WALL_TIME_LIMIT):
        return cgi.bad_gateway(f"the program ran out of time ({output.status.value})", 504)
    how = f"exit code {output.exit_code}" if output.exit_code is not None else output.status.value
    return cgi.bad_gateway(f"the program failed: {output.status.value} ({how})")


def invocation_limits(sub: Submission, config: SpoolConfig) -> dict[StageKind, Limits]:
    """The stages' limits as a submission's, but the run stage's wall clock is the spool's
    invocation default unless the deployment sets its own, and never above the invocation maximum."""
    stages, _ = resolved_limits(sub, config)
    settings = config.deployments
    asked = sub.limits.run.wall_time if sub.limits.run is not None else None
    wall = min(asked if asked is not None else settings.invoke_wall_time, settings.max_invoke_wall_time)
    run = stages[StageKind.RUN]
    return {**stages, StageKind.RUN: Limits(**{**run.to_json(), "wall_time": wall})}  # type: ignore[arg-type]


def run_script(sub: Submission, archive: zipfile.ZipFile) -> Script:
    """The run stage's script, as intake decides it, with the names of the compiled work area."""
    names = set(archive.namelist())
    value = sub.run
    name: str | None = None
    if isinstance(value, ScriptFile):
        name = value.file
    elif value is None:
        name = CONVENTIONAL["run"]
    elif "\n" not in value.strip() and value.strip() in names:
        name = value.strip()
    if name is None:
        assert isinstance(value, str)
        return Script(text=value)
    if name not in names:
        raise Refused.because("run", f"{name!r} is not a file of the compiled work area")
    with archive.open(name) as member:
        return Script(file=name, shebang=member.read(2) == b"#!")


def read_body(entry: Path, services: Services) -> bytes:
    limit = services.config.deployments.max_body
    try:
        body = read_file(entry, BODY, limit + 1)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise Refused.because("body", f"cannot be read: {exc}") from None
    if len(body) > limit:
        raise Refused.because("body", f"is larger than the spool's maximum of {limit} bytes")
    return body


def ready_build(services: Services, cid: str) -> DeploymentBuild:
    """The deployment's build record once it is ready; waits `build_wait` for a pending one."""
    deadline = time.monotonic() + services.config.deployments.build_wait
    while True:
        record = read_build_record(services.paths, cid)
        if record is None:
            raise Refused.because("deployment", f"{cid} has no build record: it was not deployed to this spool")
        if record.state == DeploymentState.FAILED:
            raise Refused.because("deployment", f"its build failed: {record.reason or 'no reason given'}")
        if record.state == DeploymentState.READY and record.work:
            return record
        if time.monotonic() >= deadline:
            raise BuildPending(f"the build of {cid} is still pending")
        time.sleep(_BUILD_POLL)


def opened_env(services: Services, deployment: Deployment) -> dict[str, str]:
    if not deployment.spec.sealed_env:
        return {}
    if services.server_key is None:
        raise SystemFailure("this executor has no server key (--server-key or deployments.server_key)")
    try:
        return open_env(deployment, services.server_key)
    except DeploymentError as exc:
        raise Refused.because("sealed_env", f"does not open with this spool's server key: {exc}") from None


def compiled_work(services: Services, record: DeploymentBuild) -> bytes:
    assert record.work is not None
    try:
        return services.store.get(record.work, limit=services.config.sandbox.work_size)
    except (UnknownCid, BlobMismatch) as exc:
        raise Refused.because("work", f"the compiled work area {record.work}: {exc}") from None


def prepare(
    services: Services, claim: Claim, request: InvocationRequest, deployment: Deployment
) -> tuple[Plan, InvokeGrader]:
    """Every check of the invocation, in order; Refused or BuildPending before anything runs."""
    try:
        cgi.check_request(request.method, request.path, request.query, request.headers)
    except cgi.BadRequest as exc:
        raise Refused.because("request", str(exc)) from None
    body = read_body(claim.path, services)
    record = ready_build(services, deployment.cid)
    sub = submission_of(deployment.spec.manifest, services.config)
    work = compiled_work(services, record)
    try:
        with zipfile.ZipFile(io.BytesIO(work)) as archive:
            script = run_script(sub, archive)
    except zipfile.BadZipFile as exc:
        raise Refused.because("work", f"the compiled work area is not a zip: {exc}") from None
    owner = opened_env(services, deployment)
    meta = cgi.meta_variables(
        cgi.CgiRequest(
            method=request.method,
            path=request.path,
            query=request.query,
            headers=tuple(request.headers),
            body_length=len(body),
            script_name=f"/{deployment.cid}",
        )
    )
    plan = Plan(
        submission=sub,
        tree=Tree({}, frozenset(), 0),
        workdir_files=(),
        inline_files=(),
        compile=None,
        run=script,
        stdin=body,
        limits=invocation_limits(sub, services.config),
    )
    return plan, InvokeGrader(services, work, body, cgi.stage_environment(meta, owner))


def invoke(
    services: Services,
    claim: Claim,
    request: InvocationRequest,
    deployment: Deployment,
    reporter: Reporter,
    cancel: Cancelled,
) -> None:
    plan, grader = prepare(services, claim, request, deployment)
    wall_limit = plan.limits[StageKind.RUN].wall_time
    pay_before_run(
        services.ledger, services.nonces, services.config, claim.entry_id, request, deployment, grader,
        grader.body, reporter, wall_limit,
    )  # fmt: skip
    if "server" in deployment.spec.manifest:  # -- warm server: its pool, not a CGI stage (warm.py) --
        if services.warm is None:
            raise SystemFailure("this executor serves no warm servers")
        services.warm.invoke(services, request, deployment, plan, grader, reporter, cancel)
        return
    services.pipeline.run(plan, grader, nix_source(services, deployment, plan.submission), reporter, cancel)


def nix_source(services: Services, deployment: Deployment, sub: Submission) -> Path:
    """Where the dependencies stage finds the deployment's files: `staging/<cid>/`, its name
    the environment's user (one per deployment, not per invocation), holding the `{nix: FILE}`
    of a deployment that has one, taken from its bundle once (blobs never change)."""
    source = services.staging_for(deployment.cid)
    deps = sub.dependencies
    if not isinstance(deps, NixExpression) or (source / deps.nix).is_file():
        return source
    try:
        bundle = services.store.get(deployment.spec.bundle)
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            data = archive.read(deps.nix)
    except (DeploymentError, zipfile.BadZipFile, KeyError) as exc:
        raise Refused.because("dependencies.nix", f"cannot be read from the bundle: {exc}") from None
    fresh = services.staging_for(f".{deployment.cid}.{secrets.token_hex(4)}")
    (fresh / deps.nix).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    (fresh / deps.nix).write_bytes(data)
    try:
        os.rename(fresh, source)
    except OSError:  # another invocation put it there first (or an empty one is in the way)
        shutil.rmtree(fresh, ignore_errors=True)
        if not (source / deps.nix).is_file():
            shutil.rmtree(source, ignore_errors=True)
            raise SystemFailure(f"cannot prepare the Nix file of {deployment.cid}; retrying") from None
    return source
