"""The problem's own programs besides the checker: a test generator (`generator`) and a function
problem's grader (`function`). Like a checker they are problem data: their files are copied from
the spool entry into the slot's *aux* directory (a tmpfs the submission's stages never see,
mounted at /work for the problem's stages only) and built and run there, sandboxed, with the slot's
uid and no network. Their scripts run with /bin/sh (a file of theirs by name, or inline text)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cutor_spool.config import StageKind
from cutor_spool.errors import SpoolIOError
from cutor_spool.limits import Limits
from cutor_spool.runner.intake import Script
from cutor_spool.runner.stage import StageOutput
from cutor_spool.runner.stagerunner import StageRunner
from cutor_spool.runner.tree import copy_file
from cutor_spool.submission import ProblemProgram, ScriptFile


def problem_script(value: str | ScriptFile | None, names: tuple[str, ...]) -> Script | None:
    """A program's script: `{file: NAME}` or a bare name of one of its files runs that file with
    /bin/sh; anything else is a shell script."""
    if value is None:
        return None
    if isinstance(value, ScriptFile):
        return Script(file=value.file)
    return Script(file=value.strip()) if value.strip() in names else Script(text=value)


@dataclass
class AuxPrograms:
    """Places the problem's program files in aux, once per claim, and runs their stages there."""

    runner: StageRunner
    entry: Path  # the spool entry: files are read from here, never from /work
    placed: bool = field(default=False)

    def place(self) -> None:
        if self.placed:
            return
        plan, slot = self.runner.plan, self.runner.sandbox.slot
        for name in plan.program_files:
            try:
                copy_file(
                    self.entry,
                    name,
                    slot.aux,
                    size_limit=plan.tree.files[name].size,
                    executable=plan.tree.files[name].executable,
                    uid=slot.uid,
                    gid=slot.gid,
                )
            except OSError as exc:  # the entry changed under us: retry from a fresh intake
                raise SpoolIOError(f"problem file {name} cannot be copied: {exc}") from exc
        self.placed = True

    def limits(self, program: ProblemProgram) -> Limits:
        return self.runner.plan.limits[StageKind.COMPILE].over(program.limits)

    def stage(self, name: str, program: ProblemProgram, script: Script, args: tuple[str, ...] = ()) -> StageOutput:
        """Runs one of the program's scripts in aux (after placing its files)."""
        self.place()
        command, files = self.runner.script_command(script, args)
        spec = self.runner.spec(name, command, self.limits(program), files=files, workdir="aux", env={}, network=False)
        return self.runner.run(spec)
