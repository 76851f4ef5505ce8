"""A submission's stage limits, and whether its stages can be started with them.

`resolved_limits`: each stage's limits, the spool's defaults (spool.yaml `limits`) under the
submission's own, an explicit cpu_time without a wall_time given room to finish; `exec_checks`:
the stages whose `args` and `env` the kernel would refuse at exec with their stack limit
(execsize.py). Both are applied at intake (intake.py); an invocation resolves its limits the same
way (invocations/run.py).
"""

from __future__ import annotations

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.limits import Limits
from cutor_spool.runner.execsize import exec_problems
from cutor_spool.runner.tree import Problem
from cutor_spool.submission import Submission

__all__ = ["exec_checks", "resolved_limits"]


def resolved_limits(sub: Submission, config: SpoolConfig) -> tuple[dict[StageKind, Limits], tuple[Limits, ...]]:
    lim = config.limits
    maximum = lim.resolved_maximum()

    def widened(limits: Limits, *layers: object) -> Limits:
        # An explicit cpu_time with no explicit wall_time gets room to finish: 2x + 1s.
        asks_cpu = any(getattr(layer, "cpu_time", None) is not None for layer in layers)
        asks_wall = any(getattr(layer, "wall_time", None) is not None for layer in layers)
        if asks_cpu and not asks_wall and limits.wall_time < 2 * limits.cpu_time + 1:
            wall = min(2 * limits.cpu_time + 1, maximum.wall_time)
            return Limits(**{**limits.to_json(), "wall_time": max(wall, limits.wall_time)})  # type: ignore[arg-type]
        return limits

    s = sub.limits
    stages = {
        StageKind.DEPENDENCIES: widened(lim.stage_default(StageKind.DEPENDENCIES).over(s.dependencies), s.dependencies),
        StageKind.COMPILE: widened(lim.stage_default(StageKind.COMPILE).over(s.compile), s.compile),
        StageKind.RUN: widened(lim.stage_default(StageKind.RUN).over(s.run), s.run),
        StageKind.CHECKER: widened(lim.stage_default(StageKind.CHECKER).over(s.checker), s.checker),
    }
    tests = tuple(
        widened(lim.stage_default(StageKind.TEST).over(s.run, s.tests, t.limits), s.run, s.tests, t.limits)
        for t in sub.tests or []
    )
    return stages, tests


def exec_checks(
    sub: Submission, stages: dict[StageKind, Limits], tests: tuple[Limits, ...], *, compiled: bool
) -> list[Problem]:
    """Stages whose `args` and `env` the kernel would refuse at exec (see execsize.py): the
    compile stage gets `env`, the run stage or each test `args` and `env`."""
    checks: list[tuple[str, tuple[str, ...], int]] = []
    if compiled:
        checks.append(("compile", (), stages[StageKind.COMPILE].stack))
    if sub.tests is None:
        checks.append(("run", tuple(sub.args), stages[StageKind.RUN].stack))
    else:
        smallest = min(tests, key=lambda limits: limits.stack)  # the test with the least room
        checks.append(("test", tuple(sub.args), smallest.stack))
    found: dict[tuple[str, str], None] = {}
    for stage, args, stack in checks:
        for where, message in exec_problems(stage, args, sub.env, stack):
            found.setdefault((where, message))
    return [Problem(where, message) for where, message in found]
