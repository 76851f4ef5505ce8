"""One claimed submission through its stages: validate, dependencies, compile, then its grader.

The pipeline is the same for every submission: it installs the dependencies and compiles; what
running the compiled submission means (once, test by test, ...) is its grader's (runner/judge/
graders/), asked for once. Outcomes (invalid, compile error, limits, ...) are values written to
the result. Exceptions leave this module only for failures of the system (`SystemFailure`), a lost
lease (`LeaseLost`) or a shutdown (`Shutdown`); the executor decides what they mean, in one place.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import SandboxError, SystemFailure
from cutor_spool.runner.intake import Plan, read_submission
from cutor_spool.runner.judge.graders import GRADERS, Grader, GradingContext, Stopped, choose
from cutor_spool.runner.results import Reporter
from cutor_spool.runner.sandbox import Backend, Sandbox
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageOutput, StageSpec, StageStatus
from cutor_spool.runner.stagerunner import Environment, StageRunner
from cutor_spool.runner.tree import Problem, copy_file, make_dirs, place, rerun_link
from cutor_spool.watcher.cancel import Cancelled

# `Environment` lives with the stage runner that uses it; the builder, which makes one, imports it here.
__all__ = ["Environment", "EnvironmentResult", "Environments", "Pipeline", "materialise"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvironmentResult:
    ok: bool
    environment: Environment
    record: Mapping[str, object]  # dependencies.json
    message: str = ""


class Environments(Protocol):
    def prepare(self, plan: Plan, entry: Path, cancel: threading.Event) -> EnvironmentResult: ...


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


class Pipeline:
    def __init__(
        self,
        config: SpoolConfig,
        backend: Backend,
        slots: SlotPool,
        *,
        environments: Environments | None = None,
        graders: Mapping[str, Grader] = GRADERS,
    ) -> None:
        self.config = config
        self.backend = backend
        self.slots = slots
        self.environments = environments
        self.graders = graders

    def process(self, entry: Path, reporter: Reporter, cancel: Cancelled) -> None:
        claim = reporter.claim
        if claim.custody_failure is not None:  # nothing of it is read while its client can change it
            self._invalid(reporter, [Problem("owner", claim.custody_failure)])
            return
        rerun_of = rerun_link(entry)
        if rerun_of is not None:
            reporter.note(rerun_of=rerun_of)
        intake = read_submission(entry, self.config, submitter=claim.submitter)
        if intake.plan is None:
            self._invalid(reporter, list(intake.problems))
            return
        plan = intake.plan
        if plan.submission.dependencies and self.environments is None:
            # The operator's to fix, not the submission's fault: retried (another executor may
            # have Nix), then `error` with this reason.
            raise SystemFailure(
                "it asks for dependencies, and this executor has no Nix configured: set `nix.nixpkgs` "
                "in spool.yaml (docs/nix.md) and restart the executors, or run one that has it"
            )
        grader, problems = choose(plan, self.graders)
        if grader is None or problems:
            self._invalid(reporter, problems)
            return
        self.run(plan, grader, entry, reporter, cancel)

    def run(self, plan: Plan, grader: Grader, source: Path, reporter: Reporter, cancel: Cancelled) -> None:
        """A planned job in a slot's sandbox: its files from `source` into /work, its dependencies,
        its compile, then `grader` (a submission's, or a deployment's build or invocation, whose
        plans come from elsewhere: runner/invocations/)."""
        if plan.submission.dependencies and self.environments is None:
            self._invalid(reporter, [Problem("dependencies", "this executor has no Nix builder configured")])
            return
        with self.sandbox(reporter) as sandbox:
            problems = materialise(plan, source, sandbox.workdir, sandbox.slot.uid, sandbox.slot.gid)
            if problems:
                self._invalid(reporter, problems)
                return
            runner = StageRunner(plan, sandbox, reporter, cancel)
            helpers = functools.partial(self.helper_sandbox, reporter=reporter)
            self._stages(grader, GradingContext(runner, source, helpers))

    @contextmanager
    def sandbox(self, reporter: Reporter) -> Iterator[Sandbox]:
        """A free slot's fresh sandbox for one claim, closed and released afterwards."""
        with self._slot_sandbox(reporter.claim.entry_id, reporter) as sandbox:
            yield sandbox

    @contextmanager
    def helper_sandbox(self, label: str, reporter: Reporter | None = None) -> Iterator[Sandbox]:
        """A second free slot's sandbox beside a submission's (an interactor's: another uid),
        recorded by the submission's `reporter` under the label's last part (`interactor`)."""
        with self._slot_sandbox(label, reporter, helper=True) as sandbox:
            yield sandbox

    @contextmanager
    def _slot_sandbox(self, label: str, reporter: Reporter | None, *, helper: bool = False) -> Iterator[Sandbox]:
        """A slot and its sandbox for the block; the slot released clean (no scan of /proc by its
        next holder) only when the block and the sandbox's close ended without an exception."""
        slot = self.slots.acquire()
        clean, cpu = False, slot.cpu
        try:
            if reporter is not None and helper:
                reporter.helper_slot(label.rpartition("/")[2], slot.uid, cpu)
            elif reporter is not None:
                reporter.slot_taken(slot.uid, slot.cpu)
            sandbox = self.backend.open(slot, label)
            try:
                yield sandbox
            finally:
                sandbox.close()
            clean = True
        finally:
            self.slots.release(slot, clean=clean)
            if reporter is not None and helper:
                reporter.helper_slot(label.rpartition("/")[2], slot.uid, cpu, taken=False)

    def probe(self) -> str | None:
        """Can this host run a stage at all? `true` in a fresh sandbox of a free slot, with the
        run stage's default limits and nothing of any submission: None if it ran (whatever its
        exit), else why not. Tells a broken host from a submission that breaks its own sandbox
        (see health.py)."""
        limits = self.config.limits.stage_default(StageKind.RUN)
        try:
            with self._slot_sandbox("probe", None) as sandbox:
                output = sandbox.run(StageSpec(name="probe", command=("true",), limits=limits))
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

    def _stages(self, grader: Grader, context: GradingContext) -> None:
        for step in (self._dependencies, self._compile):
            stop = step(context)
            if stop is not None:
                grader.stopped(context, stop)
                context.reporter.finish(State.DONE, stop.outcome, message=stop.message)
                return
        grader.grade(context)

    def _dependencies(self, context: GradingContext) -> Stopped | None:
        plan, runner, reporter = context.plan, context.runner, context.reporter
        if not plan.submission.dependencies or self.environments is None:
            return None
        reporter.transition(State.INSTALLING_DEPENDENCIES)
        result = self.environments.prepare(plan, context.entry, context.cancel.event)
        context.cancel.check()
        reporter.dependencies(result.record)
        if not result.ok:
            return Stopped("dependencies", Outcome.DEPENDENCY_FAILURE, result.message)
        runner.env = result.environment
        reporter.transition(State.DEPENDENCIES_INSTALLED)
        return None

    def _compile(self, context: GradingContext) -> Stopped | None:
        plan, runner, reporter = context.plan, context.runner, context.reporter
        if plan.compile is None:
            return None
        reporter.transition(State.COMPILING, defer=True)
        command, files = runner.script_command(plan.compile)
        output = runner.run(runner.spec("compile", command, plan.limits[StageKind.COMPILE], files=files))
        reporter.stage("compile", output)
        reporter.transition(State.COMPILED, success=output.ok)
        if output.ok:
            return None
        return Stopped("compile", Outcome.COMPILE_ERROR, _tail(output), output.stderr, output.wall_time)


def _tail(output: StageOutput, limit: int = 500) -> str:
    text = (output.stderr or output.stdout).decode("utf-8", "replace").strip()
    return text[-limit:]
