"""Generated tests, function problems and output-only tasks (docs/judge.md), through a real
executor on bubblewrap: the three examples as a new user drops them, and the ways each goes wrong.

One spool and one executor (two slots, so two submissions of one problem can generate at once) for
the module; the state directory is the test's own, so the generated-test cache can be looked at.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLI, ExecutorProcess, drop, result, unmount_under, wait_done, write_config

EXAMPLES = Path(__file__).parent.parent / "examples"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

MISSING_SUM = "long long total(int n, const long long *a) { return n ? a[0] : 0; }\n"
INCLUDES_GRADER = '#include "grader/grader.c"\n'
PY_GRADER = (
    "import sys\nsys.path.insert(0, '/work')\nimport solution\n"
    "a, b = map(int, sys.stdin.read().split())\nprint(solution.add(a, b))\n"
)


@dataclass
class Kinds:
    spool: Path
    state: Path
    base: Path


def _variant(
    base: Path, example: str, name: str, files: dict[str, str | None], yaml_edit: dict[str, Any] | None = None
) -> Path:
    """A copy of an example with some files replaced (None content: removed) and keys changed."""
    target = base / "cases" / name
    shutil.copytree(EXAMPLES / example, target, symlinks=True)
    for rel, content in files.items():
        path = target / rel
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
    if yaml_edit:
        sub = yaml.safe_load((target / "submission.yaml").read_text())
        sub.update(yaml_edit)
        (target / "submission.yaml").write_text(yaml.safe_dump(sub))
    return target


def _cases(base: Path) -> dict[str, Path]:
    (python := base / "cases" / "func-py-missing").mkdir(parents=True)
    (python / "submission.yaml").write_text(
        yaml.safe_dump(
            {
                "grader": "function",
                "run": "python3 /run/cutor/grader.py",
                "function": {"files": ["problem"], "provides": ["problem/grader.py"]},
                "tests": [{"name": "t", "input": "2 3", "output": "5"}],
            }
        )
    )
    (python / "problem").mkdir()
    (python / "problem" / "grader.py").write_text(PY_GRADER)
    (python / "solution.py").write_text("def plus(a, b):\n    return a + b\n")
    symlinked = _variant(base, "output-only", "oo-symlink", {})
    (symlinked / "outputs" / "a.out").unlink()
    (symlinked / "outputs" / "a.out").symlink_to("/etc/passwd")
    return {
        "gen-a": EXAMPLES / "generated-tests",
        "gen-a2": EXAMPLES / "generated-tests",
        "gen-fails": _variant(base, "generated-tests", "gen-fails", {"problem/gen.py": "import sys\nsys.exit(3)\n"}),
        "gen-missing": _variant(
            base, "generated-tests", "gen-missing", {}, {"generator": {"files": ["nope"], "run": "./nope"}}
        ),
        "func-ok": EXAMPLES / "function-grader",
        "func-missing": _variant(base, "function-grader", "func-missing", {"sum.c": MISSING_SUM}),
        "func-include": _variant(base, "function-grader", "func-include", {"sum.c": INCLUDES_GRADER}),
        "func-bad-grader": _variant(base, "function-grader", "func-bad-grader", {"grader/grader.c": "int main( {\n"}),
        "func-py-missing": python,
        "oo-full": EXAMPLES / "output-only",
        "oo-partial": _variant(base, "output-only", "oo-partial", {"outputs/b.out": "999\n", "outputs/c.out": None}),
        "oo-large": _variant(
            base, "output-only", "oo-large", {"outputs/a.out": "4" * 2000}, {"limits": {"tests": {"output": 1024}}}
        ),
        "oo-symlink": symlinked,
    }


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kinds]:
    base = tmp_path_factory.mktemp("kinds")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool)
    state = Path(tempfile.mkdtemp(prefix="cutor-test-", dir="/run"))  # slot uids must traverse it
    state.chmod(0o755)
    args = ["executor", "--concurrency", "2", "--state-dir", str(state)]
    executor = ExecutorProcess(spool, args, base / "executor.log")
    cases = _cases(base)
    try:
        for name, directory in cases.items():
            drop(spool, directory, name)
        try:
            wait_done(spool, list(cases), timeout=240)
            drop(spool, EXAMPLES / "generated-tests", "gen-b")  # later, from the same problem
            wait_done(spool, "gen-b", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nexecutor log:\n{executor.output()[-4000:]}") from None
        yield Kinds(spool, state, base)
        assert "Traceback" not in executor.output(), executor.output()[-4000:]
    finally:
        executor.stop()
        unmount_under(state)
        shutil.rmtree(state, ignore_errors=True)


def _test(kinds: Kinds, entry: str, name: str) -> dict[str, Any]:
    return json.loads((kinds.spool / "done" / entry / "result" / "tests" / f"{name}.json").read_text())


def _scored(kinds: Kinds, entry: str) -> tuple[str, str | None, float | None, dict[str, str]]:
    status = result(kinds.spool, entry)
    return status["state"], status.get("outcome"), status.get("score"), status.get("tests", {})


def test_generated_tests_are_generated_once_per_host(kinds: Kinds) -> None:
    for entry in ("gen-a", "gen-a2", "gen-b"):
        assert _scored(kinds, entry) == (
            "done", "accepted", 100, {"sample": "accepted", "big-1": "accepted", "big-2": "accepted"}
        ), entry  # fmt: skip
    # gen-a and gen-a2 ran at once on two slots: each input was generated by one of them only.
    for test in ("big-1", "big-2"):
        made = sorted(_test(kinds, e, test)["generated"] for e in ("gen-a", "gen-a2"))
        assert made == ["cached", "generated"], test
        assert _test(kinds, "gen-b", test)["generated"] == "cached"
    assert "generated" not in _test(kinds, "gen-a", "sample")
    # gen-b, later, compiled and ran nothing of the generator; the cache holds the two inputs.
    entries = sorted(p.name for p in (kinds.state / "generated").iterdir() if not p.name.endswith(".lock"))
    assert len(entries) == 2 and all(len(n) == 64 for n in entries), entries
    sizes = sorted((kinds.state / "generated" / n).stat().st_size for n in entries)
    assert sizes[0] > 100_000 * 2  # 100,000 numbers: the input the generator printed, whole


def test_a_generator_that_fails_is_the_problems_fault(kinds: Kinds) -> None:
    status = result(kinds.spool, "gen-fails")
    assert status["state"] == "error"
    assert "the generator failed on test big-1" in status["reason"], status["reason"]
    assert status["tests"] == {"sample": "accepted", "big-1": "internal_error", "big-2": "internal_error"}


def test_a_missing_generator_file_is_refused(kinds: Kinds) -> None:
    status = result(kinds.spool, "gen-missing")
    assert status["state"] == "invalid"
    assert "generator.files.0" in {e["where"] for e in status["errors"]}, status["errors"]


def test_a_function_problem_links_the_graders_main(kinds: Kinds) -> None:
    assert _scored(kinds, "func-ok") == ("done", "accepted", 2, {"small": "accepted", "large": "accepted"})
    assert _test(kinds, "func-ok", "large")["stdout"] == "2000000000000\n"


def test_a_missing_function_is_a_compile_error(kinds: Kinds) -> None:
    status = result(kinds.spool, "func-missing")
    assert (status["state"], status["outcome"]) == ("done", "compile_error")
    assert status["success"] is False, status  # the compile stage succeeded; the build as a whole did not
    link = json.loads((kinds.spool / "done" / "func-missing" / "result" / "link.json").read_text())
    assert link["status"] != "ok" and "undefined reference to `sum'" in link["stderr"], link
    junit = (kinds.spool / "done" / "func-missing" / "result" / "junit.xml").read_text()
    assert 'name="link"' in junit and "undefined reference" in junit


def test_the_submission_cannot_include_the_graders_source(kinds: Kinds) -> None:
    """#include of the grader's path at compile time: its source was never where the compile runs."""
    status = result(kinds.spool, "func-include")
    assert (status["state"], status["outcome"]) == ("done", "compile_error")
    compiled = json.loads((kinds.spool / "done" / "func-include" / "result" / "compile.json").read_text())
    assert "grader/grader.c: No such file or directory" in compiled["stderr"], compiled["stderr"]


def test_a_grader_that_does_not_compile_is_the_problems_fault(kinds: Kinds) -> None:
    status = result(kinds.spool, "func-bad-grader")
    assert status["state"] == "error"
    assert "the problem's grader did not compile" in status["reason"], status["reason"]


def test_a_python_function_problem_without_the_function_is_a_runtime_error(kinds: Kinds) -> None:
    assert _scored(kinds, "func-py-missing") == ("done", "rejected", 0, {"t": "runtime_error"})
    assert "has no attribute 'add'" in _test(kinds, "func-py-missing", "t")["stderr"]


def test_an_output_only_task_runs_nothing_and_checks_its_files(kinds: Kinds) -> None:
    assert _scored(kinds, "oo-full") == ("done", "accepted", 30, {"a": "accepted", "b": "accepted", "c": "accepted"})
    assert not (kinds.spool / "done" / "oo-full" / "result" / "compile.json").exists()
    assert _test(kinds, "oo-full", "c")["stdout"] == "351364182882014\n"


def test_an_output_only_task_scores_partial_points(kinds: Kinds) -> None:
    assert _scored(kinds, "oo-partial") == (
        "done", "partial", 15, {"a": "accepted", "b": "partial", "c": "wrong_answer"}
    )  # fmt: skip
    status = result(kinds.spool, "oo-partial")
    assert status["tests"]["c"] == "wrong_answer"
    events = [json.loads(line) for line in (kinds.spool / "done" / "oo-partial" / "result" / "events.jsonl").open()]
    feedback = {e["test"]: e["feedback"] for e in events if e["event"] == "tested"}
    assert "no output file: the submission has no outputs/c.out" in feedback["c"]
    assert "off by one" in feedback["b"]


def test_an_output_file_over_the_output_limit_is_refused(kinds: Kinds) -> None:
    state, outcome, score, tests = _scored(kinds, "oo-large")
    assert (state, outcome, score, tests["a"]) == ("done", "partial", 20, "output_limit")
    assert not (kinds.spool / "done" / "oo-large" / "result" / "tests" / "a.json").exists()


def test_an_output_file_that_is_a_symlink_is_refused(kinds: Kinds) -> None:
    status = result(kinds.spool, "oo-symlink")
    assert status["state"] == "invalid"
    assert any("outputs/a.out" in f"{e['where']} {e['message']}" for e in status["errors"]), status["errors"]
