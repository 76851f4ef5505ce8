"""One claimed submission through its stages: validate, dependencies, compile, run or judge.

Outcomes (invalid, compile error, limits, ...) are values written to the result. Exceptions leave
this module only for failures of the system (`SystemFailure`), a lost lease (`LeaseLost`) or a
shutdown (`Shutdown`); the executor decides what they mean, in one place.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cutor_spool.atomic import write_bytes
from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import SandboxError
from cutor_spool.limits import Limits
from cutor_spool.runner.backend import Backend, Sandbox
from cutor_spool.runner.intake import Plan, Script, read_submission
from cutor_spool.runner.results import STAGE_OUTCOME, Reporter
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus
from cutor_spool.runner.tree import Problem, copy_file, make_dirs, place, read_file
from cutor_spool.watcher.cancel import Cancelled

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Environment:
    """What the dependencies stage gives the later stages: a script to source, the store paths to
    mount read-only."""

    env_script: bytes | None = None
    ro_binds: tuple[str, ...] = ()
    shell: str = "/bin/bash"


@dataclass(frozen=True)
class EnvironmentResult:
    ok: bool
    environment: Environment
    record: Mapping[str, object]  # dependencies.json
    message: str = ""


class Environments(Protocol):
    def prepare(self, plan: Plan, entry: Path, cancel: threading.Event) -> EnvironmentResult: ...


@dataclass
class StageRunner:
    """Builds and runs the stages of one submission in its sandbox (used by plain runs and by the
    judge). An internal error of the sandbox is a system failure, not the submission's fault."""

    plan: Plan
    sandbox: Sandbox
    reporter: Reporter
    cancel: Cancelled
    env: Environment = field(default_factory=Environment)

    @staticmethod
    def script_command(
        script: Script, args: tuple[str, ...] = (), *, root: str = "/work"
    ) -> tuple[tuple[str, ...], dict[str, bytes]]:
        """argv and per-stage files for a script: inline text is placed at /run/cutor/script; a
        file of the submission runs from /work. `#!` scripts are executed; others go to /bin/sh.
        Pure: nothing here reads /work, which the job controls once a stage has run."""
        if script.text is not None:
            data = script.text.encode("utf-8", "surrogatepass")
            return ("/bin/sh", "/run/cutor/script", *args), {"script": data}
        assert script.file is not None
        if script.shebang:
            return (f"{root}/{script.file}", *args), {}
        return ("/bin/sh", f"{root}/{script.file}", *args), {}

    def spec(
        self,
        name: str,
        command: tuple[str, ...],
        limits: Limits,
        *,
        stdin: bytes = b"",
        files: Mapping[str, bytes] | None = None,
        workdir: str = "work",
        env: Mapping[str, str] | None = None,
        network: bool | None = None,
    ) -> StageSpec:
        stage_files = dict(files or {})
        env_script = None
        if self.env.env_script is not None:
            stage_files["env.sh"] = self.env.env_script
            env_script = "/run/cutor/env.sh"
        sub = self.plan.submission
        return StageSpec(
            name=name,
            command=command,
            limits=limits,
            env=dict(sub.env if env is None else env),
            stdin=stdin,
            files=stage_files,
            network=sub.network if network is None else network,
            ro_binds=self.env.ro_binds,
            env_script=env_script,
            env_shell=self.env.shell,
            workdir=workdir,
        )

    def run(self, spec: StageSpec) -> StageOutput:
        self.cancel.check()
        output = self.sandbox.run(spec, self.cancel.event)
        self.cancel.check()
        if output.status == StageStatus.INTERNAL_ERROR:
            raise SandboxError(f"stage {spec.name}: {output.message or 'internal error'}")
        return output


def materialise(plan: Plan, source: Path, dest: Path, uid: int, gid: int) -> list[Problem]:
    """Copies the submission's files into its private work directory (local disk, never the spool
    entry itself: a directory keeps its inode when renamed, so a sandbox with the entry mounted
    would write into the next claim after a requeue)."""
    problems = []
    # Directories come with the files copied into them; only those the submission made empty are
    # made on their own. A directory holding only hidden files (test data, a checker) would
    # otherwise show its name to the job.
    occupied = {name.rsplit("/", i)[0] for name in plan.tree.files for i in range(1, name.count("/") + 1)}
    make_dirs(dest, frozenset(plan.tree.dirs - occupied), uid, gid)
    for name in plan.workdir_files:
        entry = plan.tree.files[name]
        try:
            copy_file(
                source,
                name,
                dest,
                size_limit=entry.size,
                executable=entry.executable or plan.executable(name),
                uid=uid,
                gid=gid,
            )
        except OSError as exc:
            problems.append(Problem(f"file {name}", f"changed while it was being read ({exc})"))
    for name, data, executable in plan.inline_files:
        try:
            place(dest, name, data, executable=executable or plan.executable(name), uid=uid, gid=gid)
        except OSError as exc:
            problems.append(Problem(f"file {name}", f"cannot be written: {exc}"))
    return problems


Judge = Callable[[StageRunner], None]


class Pipeline:
    def __init__(
        self,
        config: SpoolConfig,
        backend: Backend,
        slots: SlotPool,
        *,
        environments: Environments | None = None,
        judge: Judge | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.slots = slots
        self.environments = environments
        self.judge = judge

    def process(self, entry: Path, reporter: Reporter, cancel: Cancelled) -> None:
        intake = read_submission(entry, self.config)
        if intake.plan is None:
            self._invalid(reporter, list(intake.problems))
            return
        plan = intake.plan
        if plan.submission.dependencies and self.environments is None:
            self._invalid(reporter, [Problem("dependencies", "this executor has no Nix builder configured")])
            return
        slot = self.slots.acquire()
        try:
            reporter.note(sandbox_uid=slot.uid)
            sandbox = self.backend.open(slot, reporter.claim.entry_id)
            try:
                problems = materialise(plan, entry, sandbox.workdir, slot.uid, slot.gid)
                if problems:
                    self._invalid(reporter, problems)
                    return
                self._stages(plan, entry, StageRunner(plan, sandbox, reporter, cancel))
            finally:
                sandbox.close()
        finally:
            self.slots.release(slot)

    def probe(self) -> str | None:
        """Can this host run a stage at all? `true` in a fresh sandbox of a free slot, with the
        run stage's default limits and nothing of any submission: None if it ran (whatever its
        exit), else why not. Tells a broken host from a submission that breaks its own sandbox
        (see health.py)."""
        limits = self.config.limits.stage_default(StageKind.RUN)
        try:
            slot = self.slots.acquire()
            try:
                sandbox = self.backend.open(slot, "probe")
                try:
                    output = sandbox.run(StageSpec(name="probe", command=("true",), limits=limits))
                finally:
                    sandbox.close()
            finally:
                self.slots.release(slot)
        except SandboxError as exc:
            return str(exc)
        if output.status == StageStatus.INTERNAL_ERROR:
            return output.message or "internal error"
        return None

    def _invalid(self, reporter: Reporter, problems: list[Problem]) -> None:
        reporter.finish(
            State.INVALID,
            errors=[p.to_json() for p in problems],
            message=f"{len(problems)} problem(s): " + "; ".join(map(str, problems[:5])),
        )

    def _stages(self, plan: Plan, entry: Path, runner: StageRunner) -> None:
        reporter, sub = runner.reporter, plan.submission
        if sub.dependencies and self.environments is not None:
            reporter.transition(State.INSTALLING_DEPENDENCIES)
            result = self.environments.prepare(plan, entry, runner.cancel.event)
            runner.cancel.check()
            reporter.write("dependencies.json", dict(result.record))
            if not result.ok:
                if plan.judged:
                    _not_judged(reporter, plan, "dependencies", Outcome.DEPENDENCY_FAILURE, result.message, b"")
                reporter.finish(State.DONE, Outcome.DEPENDENCY_FAILURE, message=result.message)
                return
            runner.env = result.environment
            reporter.transition(State.DEPENDENCIES_INSTALLED)
        if plan.compile is not None:
            reporter.transition(State.COMPILING)
            command, files = runner.script_command(plan.compile)
            output = runner.run(runner.spec("compile", command, plan.limits[StageKind.COMPILE], files=files))
            reporter.stage("compile", output)
            reporter.transition(State.COMPILED, success=output.ok)
            if not output.ok:
                message = _tail(output)
                if plan.judged:
                    log, seconds = output.stderr, output.wall_time
                    _not_judged(reporter, plan, "compile", Outcome.COMPILE_ERROR, message, log, seconds)
                reporter.finish(State.DONE, Outcome.COMPILE_ERROR, message=message)
                return
        if plan.judged:
            if self.judge is None:
                raise SandboxError("this executor cannot judge tests")
            self.judge(runner)
            return
        assert plan.run is not None
        reporter.transition(State.RUNNING)
        stdin = plan.stdin
        if sub.stdin_file is not None:  # from the spool entry, never from /work (the job's by now)
            stdin = read_file(entry, sub.stdin_file, plan.tree.files[sub.stdin_file].size)
        command, files = runner.script_command(plan.run, tuple(sub.args))
        output = runner.run(runner.spec("run", command, plan.limits[StageKind.RUN], stdin=stdin, files=files))
        reporter.stage("run", output)
        reporter.finish(State.DONE, STAGE_OUTCOME[output.status], message=output.message)


def _not_judged(
    reporter: Reporter, plan: Plan, step: str, outcome: Outcome, message: str, log: bytes, seconds: float = 0.0
) -> None:
    """A judged submission's junit.xml when it ends before its tests: CI shows it failing."""
    from cutor_spool.runner.judge.junit import junit_not_judged  # the judge package imports this module

    data = junit_not_judged(reporter.claim.entry_id, plan.submission, step, str(outcome), message, log, seconds)
    write_bytes(reporter.dir / "junit.xml", data)


def _tail(output: StageOutput, limit: int = 500) -> str:
    text = (output.stderr or output.stdout).decode("utf-8", "replace").strip()
    return text[-limit:]
