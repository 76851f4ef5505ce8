"""Interactive problems (`grader: interactive`), through a real executor and bubblewrap: the
example's guessing game (examples/interactive, as a user drops it) and submissions that play it
well, badly, too long, not at all, or against a broken interactor; a hostile player. All are
dropped at once and judged by one executor; each test then reads the verdicts a user would."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ExecutorProcess, drop, make_submission, result, stage, wait_done, write_config

EXAMPLE = Path(__file__).parent.parent / "examples" / "interactive"
INTERACTOR = (EXAMPLE / "interactor.py").read_text()
CHECKER = {"type": "program", "files": ["interactor.py"], "run": 'python3 interactor.py "$@"'}


def game(run: str, tests: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"grader": "interactive", "run": run, "checker": CHECKER, "tests": tests, **more}


# A player that reads /run/cutor and /work for the secret, kills every process it can see, then
# floods its stdout with queries and never reads: were the interactor's input or process within
# reach, it would answer right (accepted); contained, it is judged on its queries.
HOSTILE = r"""
import os, signal, sys
secret = None
for path in ("/run/cutor/input", "/run/cutor/expected", "/work/transcript", "/work/interactor.py"):
    try:
        secret = open(path).read().split()[1]
    except (OSError, IndexError):
        pass
for top in ("/work", "/run", "/tmp", "/dev/shm"):
    for root, dirs, files in os.walk(top):
        if "interactor.py" in files or "input" in files:
            try:
                secret = open(os.path.join(root, "input")).read().split()[1]
            except (OSError, IndexError):
                pass
for pid in [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
if secret is not None:
    print("!", secret, flush=True)
    sys.exit(0)
while True:
    sys.stdout.write("? 1\n" * 4096)
"""

CASES: dict[str, tuple[dict[str, Any], dict[str, str | bytes]]] = {
    "wrong": (game("read n; echo '! 1'", [{"name": "t", "input": "10 7 4"}]), {}),
    "out-of-queries": (
        game('read n; i=1; while :; do echo "? $i"; read r; i=$((i+1)); done', [{"name": "t", "input": "10 7 3"}]),
        {},
    ),
    "spins": (
        game("read n; while :; do :; done", [{"name": "t", "input": "10 7 4", "limits": {"cpu_time": "500ms"}}]),
        {},
    ),
    "deadlock": (game("read n; read never", [{"name": "t", "input": "10 7 4"}]), {}),
    "closes-stdin": (game("exec <&-; sleep 0.2; echo '! 3'", [{"name": "t", "input": "10 7 4"}]), {}),
    "interactor-crashes": (
        {
            **game("read n; echo '! 7'", [{"name": "t", "input": "10 7 4"}]),
            "checker": {"type": "program", "files": ["crash.sh"], "run": "sh crash.sh"},
        },
        {"crash.sh": "echo 10; read answer; echo 'about to crash' >&2; kill -SEGV $$\n"},
    ),
    "points": (
        {
            **game("read n; echo '! 7'", [{"name": "t", "input": "10 7 4"}]),
            "checker": {"type": "program", "files": ["points.sh"], "run": "sh points.sh"},
        },
        {"points.sh": 'echo 10; read answer; echo "points 0.25 close: $answer" >&2; exit 7\n'},
    ),
    "domjudge": (
        {
            **game("read n; echo '! 7'", [{"name": "t", "input": "10 7 4"}]),
            "checker": {"type": "program", "files": ["dj.sh"], "run": "sh dj.sh"},
        },
        {"dj.sh": "echo 10; read answer; echo 'correct' >&2; exit 42\n"},
    ),
    "hostile": (game("python3 hostile.py", [{"name": "t", "input": "10 7 3"}]), {"hostile.py": HOSTILE}),
}


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("interactive")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool)
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    shutil.copytree(EXAMPLE, base / "example")
    drop(spool, base / "example", "example")
    for name, (yaml_doc, files) in CASES.items():
        drop(spool, make_submission(base, name, yaml_doc, {"interactor.py": INTERACTOR, **files}), name)
    try:
        wait_done(spool, ["example", *CASES], timeout=300)
    except AssertionError:
        raise AssertionError(f"executor log:\n{executor.output()[-4000:]}") from None
    finally:
        executor.stop()
    yield spool


def verdict_of(spool: Path, entry: str) -> tuple[str, str, dict[str, Any]]:
    test = stage(spool, entry, "tests/t")
    return test["verdict"], test["feedback"], test


def test_the_example_is_accepted_with_the_dialogue_in_its_transcript(spool: Path) -> None:
    status = result(spool, "example")
    assert (status["state"], status["outcome"]) == ("done", "accepted"), status
    assert status["tests"] == {"small": "accepted", "edge": "accepted", "large": "accepted"}
    small = stage(spool, "example", "tests/small")
    assert small["transcript"] == "> 10\n< ? 5\n> >\n< ? 8\n> <\n< ? 6\n> >\n< ! 7\n= found 7 in 3 queries\n"
    assert small["feedback"] == "found 7 in 3 queries"
    assert small["interactor"]["status"] == "ok" and small["status"] == "ok"
    # The interactor's slot is recorded beside the submission's own: another uid.
    assert set(status["helper_sandboxes"]) == {"interactor"}, status
    assert status["helper_sandboxes"]["interactor"]["uid"] not in (status["sandbox_uid"], 0)


def test_a_wrong_answer_is_the_interactors_verdict(spool: Path) -> None:
    assert verdict_of(spool, "wrong")[:2] == ("wrong_answer", "answered 1, the number was 7")
    assert result(spool, "wrong")["outcome"] == "rejected"


def test_too_many_queries_are_wrong(spool: Path) -> None:
    verdict, feedback, test = verdict_of(spool, "out-of-queries")
    assert (verdict, feedback) == ("wrong_answer", "more than 3 queries")
    assert test["transcript"].endswith("< ? 4\n= more than 3 queries\n")


def test_a_time_limit_while_the_interactor_waits_is_a_time_limit(spool: Path) -> None:
    verdict, feedback, test = verdict_of(spool, "spins")
    assert verdict == "time_limit", feedback
    assert test["status"] == "time_limit"
    # the interactor saw the end of its input and said so; the submission's own end wins
    assert test["interactor"]["exit_code"] == 1


def test_both_sides_waiting_on_each_other_is_an_idleness_limit(spool: Path) -> None:
    verdict, feedback, test = verdict_of(spool, "deadlock")
    assert verdict == "idleness_limit", feedback
    assert test["wall_time"] < 10
    assert result(spool, "deadlock")["state"] == "done"


def test_a_submission_that_closes_its_stdin_early_is_wrong(spool: Path) -> None:
    verdict, feedback, _ = verdict_of(spool, "closes-stdin")
    assert verdict == "wrong_answer", feedback
    assert feedback in ("answered 3, the number was 7", "the program stopped reading before the game was over")


def test_an_interactor_that_crashes_is_the_judges_failure(spool: Path) -> None:
    status = result(spool, "interactor-crashes")
    assert status["state"] == "error" and status["outcome"] is None, status
    assert "the interactor was killed by SIGSEGV: about to crash" in status["reason"]
    assert stage(spool, "interactor-crashes", "tests/t")["verdict"] == "internal_error"


def test_points_and_domjudges_exit_codes(spool: Path) -> None:
    assert verdict_of(spool, "points")[:2] == ("partial", "points 0.25 close: ! 7")
    assert result(spool, "points")["score"] == 0.25
    assert verdict_of(spool, "domjudge")[:2] == ("accepted", "correct")


def test_a_hostile_player_is_contained_and_judged(spool: Path) -> None:
    verdict, feedback, test = verdict_of(spool, "hostile")
    assert (verdict, feedback) == ("wrong_answer", "more than 3 queries"), test
    assert (test["interactor"]["exit_code"], test["interactor"]["signal"]) == (1, None)  # its own WA, not killed


MANAGER = r"""
import sys
args = sys.argv[2:]
pairs = [(args[i], args[i + 1]) for i in range(0, len(args), 2)]
numbers = list(map(int, sys.stdin.read().split()))
assert open(sys.argv[1]).read().split() == [str(n) for n in numbers]
outs = [open(to, "w") for _, to in pairs]
ins = [open(back) for back, _ in pairs]
for n, out in zip(numbers, outs):
    out.write(f"{n}\n")
    out.flush()
answers = [int(f.readline() or -1) for f in ins]
if answers == [2 * n for n in numbers]:
    print(1)
    print(f"{len(pairs)} processes doubled {numbers}", file=sys.stderr)
    sys.exit(0)
print(f"got {answers}", file=sys.stderr)
sys.exit(1)
"""
COMMUNICATION = {
    "grader": "communication",
    "processes": 3,
    "checker": {"type": "program", "files": ["manager.py"], "run": 'python3 manager.py "$@"'},
    "tests": [{"name": "t", "input": "5 6 7"}],
}


@pytest.fixture(scope="module")
def communication(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("communication")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool)
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    files = {"manager.py": MANAGER, "double.sh": 'read n; echo "process $1" >&2; echo $((n * 2 + $2))\n'}
    for name, extra in (("right", "0"), ("wrong", "$1")):
        doc = {**COMMUNICATION, "run": f'sh double.sh "$1" {extra}'}
        drop(spool, make_submission(base, name, doc, files), name)
    shutil.copytree(EXAMPLE.parent / "communication", base / "example")
    drop(spool, base / "example", "example")
    try:
        wait_done(spool, ["right", "wrong", "example"], timeout=120)
    except AssertionError:
        raise AssertionError(f"executor log:\n{executor.output()[-4000:]}") from None
    finally:
        executor.stop()
    yield spool


def test_a_three_process_communication_task(communication: Path) -> None:
    """The manager talks to three copies, each in its own sandbox with the compiled /work, through
    FIFOs; copy i gets its index (the wrong one adds it to its answer)."""
    status = result(communication, "right")
    assert (status["state"], status["outcome"]) == ("done", "accepted"), status
    test = stage(communication, "right", "tests/t")
    assert test["feedback"] == "3 processes doubled [5, 6, 7]"
    assert [test["stderr"], *(p["stderr"] for p in test["processes"])] == ["process 0\n", "process 1\n", "process 2\n"]
    wrong = stage(communication, "wrong", "tests/t")
    assert (wrong["verdict"], wrong["feedback"]) == ("wrong_answer", "got [10, 13, 16]")


def test_the_communication_example_is_accepted(communication: Path) -> None:
    status = result(communication, "example")
    assert (status["state"], status["outcome"], status["score"]) == ("done", "accepted", 2), status
    helpers = status["helper_sandboxes"]
    assert set(helpers) == {"manager", "process-1", "process-2"}, status  # copy 0 runs in its own slot
    assert len({h["uid"] for h in helpers.values()} | {status["sandbox_uid"]}) == 4
    negative = stage(communication, "example", "tests/negative")
    assert negative["feedback"] == "3 copies doubled [-5, 0, 40000]"
    assert negative["processes"][1]["stderr"] == "copy 2 got 40000\n"
