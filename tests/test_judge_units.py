"""The judge's pure parts, over values: built-in checkers, the checker program's protocol, scoring,
junit.xml, and what intake makes of judge-mode fields. The sandboxed parts are in
test_judge_cases.py and test_judge_flow.py."""

from __future__ import annotations

import fcntl
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import started_claim
from pydantic import ValidationError

from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.documents.states import Outcome, State
from cutor_spool.errors import CutorError
from cutor_spool.layout import SpoolPaths
from cutor_spool.limits import Limits, LimitsSpec
from cutor_spool.runner.intake import Script, read_submission
from cutor_spool.runner.judge import generated
from cutor_spool.runner.judge.batches import BatchPlan
from cutor_spool.runner.judge.checkers import BUILTIN
from cutor_spool.runner.judge.checkers.program import interpret
from cutor_spool.runner.judge.checkers.show import first_difference
from cutor_spool.runner.judge.junit import junit_not_judged, junit_xml
from cutor_spool.runner.judge.scoring import score
from cutor_spool.runner.judge.verdicts import Case, CaseResult, Verdict
from cutor_spool.runner.launcher import rlimit_options
from cutor_spool.runner.stage import StageOutput, StageStatus
from cutor_spool.runner.stagerunner import StageRunner, exec_simple, plain_argv
from cutor_spool.submission import CheckerKind, CheckerSpec, Submission

LIMITS = Limits(cpu_time=1, wall_time=2, memory=64 << 20, processes=8, file_size=1 << 20, open_files=16,
                stack=8 << 20, output=1 << 20)  # fmt: skip


def verdict(kind: CheckerKind, expected: bytes, actual: bytes, **spec: Any) -> str:
    return str(BUILTIN[kind](expected, actual, CheckerSpec(type=kind, **spec)).verdict)


@pytest.mark.parametrize(
    ("kind", "expected", "actual", "want"),
    [
        (CheckerKind.EXACT, b"3\n", b"3\n", "accepted"),
        (CheckerKind.EXACT, b"3\n", b"3", "wrong_answer"),
        (CheckerKind.EXACT, b"3\n", b"3\n\n", "wrong_answer"),
        (CheckerKind.EXACT, b"", b"", "accepted"),
        (CheckerKind.LINES, b"3", b"3\n", "accepted"),
        (CheckerKind.LINES, b"a b\nc\n", b"a b \t\r\nc\r\n\n\n", "accepted"),
        (CheckerKind.LINES, b"a b\nc\n", b" a b\nc\n", "wrong_answer"),
        (CheckerKind.LINES, b"a\n\nb\n", b"a\nb\n", "wrong_answer"),
        (CheckerKind.LINES, b"a b\n", b"a  b\n", "wrong_answer"),
        (CheckerKind.LINES, b"", b"\n\n", "accepted"),
        (CheckerKind.TOKENS, b"1 2 3", b"1\n2\t 3\n", "accepted"),
        (CheckerKind.TOKENS, b"1 2 3", b"1 2", "wrong_answer"),
        (CheckerKind.TOKENS, b"1 2 3", b"1 2 3 4", "wrong_answer"),
        (CheckerKind.TOKENS, b"1 2 3", b"1 2 03", "wrong_answer"),
        (CheckerKind.FLOAT, b"1 2 3", b"1.0 2.0000000001 3e0", "accepted"),
        (CheckerKind.FLOAT, b"yes 0.5", b"yes 0.5000009", "accepted"),
        (CheckerKind.FLOAT, b"yes 0.5", b"YES 0.5", "wrong_answer"),
        (CheckerKind.FLOAT, b"0.5", b"0.5000011", "wrong_answer"),
        (CheckerKind.FLOAT, b"1e12", b"1.0000009e12", "accepted"),  # relative
        (CheckerKind.FLOAT, b"1e12", b"1.0000011e12", "wrong_answer"),
        (CheckerKind.FLOAT, b"inf -inf nan", b"Infinity -INF NaN", "accepted"),
        (CheckerKind.FLOAT, b"inf", b"1e308", "wrong_answer"),
        (CheckerKind.FLOAT, b"2.5", b"nan", "wrong_answer"),
        (CheckerKind.FLOAT, b"1000", b"1_000", "wrong_answer"),  # Python's float() would take it
        (CheckerKind.FLOAT, b"16", b"0x10", "wrong_answer"),
        (CheckerKind.FLOAT, b".5 5.", b"0.5 5", "accepted"),
    ],
)
def test_builtin_checkers(kind: CheckerKind, expected: bytes, actual: bytes, want: str) -> None:
    assert verdict(kind, expected, actual) == want


def test_float_tolerances_are_the_submissions() -> None:
    assert verdict(CheckerKind.FLOAT, b"2", b"2.0009", abs_tol=1e-3, rel_tol=0) == "accepted"
    assert verdict(CheckerKind.FLOAT, b"2", b"2.0011", abs_tol=1e-3, rel_tol=0) == "wrong_answer"
    assert verdict(CheckerKind.FLOAT, b"2000", b"2001", abs_tol=0, rel_tol=1e-3) == "accepted"
    assert verdict(CheckerKind.FLOAT, b"2000", b"2003", abs_tol=0, rel_tol=1e-3) == "wrong_answer"
    assert verdict(CheckerKind.FLOAT, b"0", b"1e-300", abs_tol=0, rel_tol=0) == "wrong_answer"


def test_messages_say_where_and_never_quote_the_expected_output() -> None:
    expected = b"line one\nTHE-SECRET-ANSWER 42\n"
    for kind in (CheckerKind.EXACT, CheckerKind.LINES, CheckerKind.TOKENS, CheckerKind.FLOAT):
        result = BUILTIN[kind](expected, b"line one\nguess 41\n", CheckerSpec(type=kind))
        assert result.verdict == Verdict.WRONG_ANSWER
        assert "SECRET" not in result.message and "42" not in result.message, (kind, result.message)
        assert "guess" in result.message or "line 2" in result.message, (kind, result.message)
    lines = BUILTIN[CheckerKind.LINES](b"a\nb\nc\n", b"a\nb\nX\x1b[2J\n", CheckerSpec()).message
    assert lines == "line 3 differs: 'X\\\\x1b[2J'"  # escaped: safe to print on a terminal


def test_first_difference_across_blocks() -> None:
    a = bytes(200_000)
    for at in (0, 65_535, 65_536, 131_073, 199_999):
        b = bytearray(a)
        b[at] = 1
        assert first_difference(a, bytes(b)) == at
    assert first_difference(a, a) == len(a)
    assert first_difference(a, a[:70_000]) == 70_000
    message = BUILTIN[CheckerKind.EXACT](b"x" * 70_000 + b"\nab", b"x" * 70_000 + b"\naX", CheckerSpec()).message
    assert message.startswith("differs at line 2, column 2")


def checker_output(status: StageStatus, exit_code: int | None, stdout: bytes = b"", stderr: bytes = b"") -> StageOutput:
    return StageOutput(
        stage="tests/1/checker", status=status, exit_code=exit_code, signal=11 if status == "signaled" else None,
        stdout=stdout, stderr=stderr, output=stdout + stderr, stdout_truncated=False, stderr_truncated=False,
        cpu_time=0.01, wall_time=0.01, memory=1 << 20, limits=LIMITS,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "code", "stdout", "want", "fraction"),
    [
        (StageStatus.OK, 0, b"", Verdict.ACCEPTED, 1.0),
        (StageStatus.OK, 0, b"1\n", Verdict.ACCEPTED, 1.0),
        (StageStatus.OK, 0, b"0.25\nnotes\n", Verdict.PARTIAL, 0.25),
        (StageStatus.OK, 0, b"0", Verdict.ACCEPTED, 0.0),  # passed with 0 points (DMOJ)
        (StageStatus.RUNTIME_ERROR, 7, b"0", Verdict.WRONG_ANSWER, 0.0),
        (StageStatus.OK, 0, b"1.5", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.OK, 0, b"nan", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.OK, 0, b"ok", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.RUNTIME_ERROR, 1, b"1", Verdict.WRONG_ANSWER, 0.0),
        (StageStatus.RUNTIME_ERROR, 2, b"", Verdict.WRONG_ANSWER, 0.0),
        (StageStatus.RUNTIME_ERROR, 7, b"0.5", Verdict.PARTIAL, 0.5),
        (StageStatus.RUNTIME_ERROR, 7, b"1", Verdict.ACCEPTED, 1.0),
        (StageStatus.RUNTIME_ERROR, 7, b"", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.RUNTIME_ERROR, 3, b"", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.RUNTIME_ERROR, 127, b"", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.SIGNALED, None, b"", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.TIME_LIMIT, None, b"1", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.MEMORY_LIMIT, None, b"1", Verdict.INTERNAL_ERROR, 0.0),
        (StageStatus.OUTPUT_LIMIT, 0, b"1", Verdict.INTERNAL_ERROR, 0.0),
    ],
)
def test_checker_program_protocol(
    status: StageStatus, code: int | None, stdout: bytes, want: Verdict, fraction: float
) -> None:
    result = interpret(checker_output(status, code, stdout, b"  the message \n"))
    assert (result.verdict, result.fraction) == (want, fraction)
    if want != Verdict.INTERNAL_ERROR:
        assert result.message == "the message"
    else:
        assert "checker" in result.message


def submission(data: dict[str, Any]) -> Submission:
    return Submission.model_validate({"run": "cat", **data})


def results(sub: Submission, fractions: dict[str, float]) -> dict[str, CaseResult]:
    out = {}
    for i, (name, test) in enumerate(zip(sub.test_names(), sub.tests or [], strict=True)):
        f = fractions.get(name, 1.0)
        verdict = Verdict.ACCEPTED if f == 1 else Verdict.WRONG_ANSWER if f == 0 else Verdict.PARTIAL
        out[name] = CaseResult(Case(i, name, test.points, LIMITS), verdict, f, "")
    return out


def make_tests(*points: float) -> list[dict[str, Any]]:
    return [{"name": f"t{i}", "output": "", "points": p} for i, p in enumerate(points, start=1)]


def test_scoring_sum_without_subtasks() -> None:
    sub = submission({"tests": make_tests(1, 2, 3)})
    s = score(sub, results(sub, {"t2": 0.5, "t3": 0}))
    assert (s.score, s.max_score, s.outcome, s.subtasks, s.failed_subtasks) == (2.0, 6.0, Outcome.PARTIAL, (), [])
    s = score(sub, results(sub, {}))
    assert (s.score, s.outcome) == (6.0, Outcome.ACCEPTED)
    s = score(sub, results(sub, {"t1": 0, "t2": 0, "t3": 0}))
    assert (s.score, s.outcome) == (0.0, Outcome.REJECTED)


def test_scoring_group_min_without_subtasks_is_all_or_nothing() -> None:
    sub = submission({"tests": make_tests(1, 2, 3), "scoring": "group_min"})
    assert score(sub, results(sub, {"t3": 0})).score == 0.0
    assert score(sub, results(sub, {"t2": 0.5})).score == 3.0  # CMS: points x the worst fraction
    assert score(sub, results(sub, {})).score == 6.0


def test_scoring_with_subtasks() -> None:
    sub = submission(
        {
            "tests": make_tests(1, 1, 2, 0, 5),
            "scoring": "group_min",
            "subtasks": [
                {"name": "easy", "points": 30, "tests": ["t1", "t2", "t3"], "scoring": "sum"},
                {"name": "hard", "points": 70, "tests": ["t3", "t4"]},  # t3 in both
                {"name": "free", "points": 0, "tests": ["t4"]},
            ],
        }
    )
    s = score(sub, results(sub, {"t2": 0, "t3": 0.5}))
    easy, hard, free = s.subtasks
    assert easy.score == pytest.approx(30 * (1 + 0 + 2 * 0.5) / 4)
    assert hard.score == 35.0 and hard.scoring == "group_min"
    assert free.score == 0.0 and free.passed
    assert s.failed_subtasks == ["easy", "hard"]
    assert s.loose == ("t5",)  # in no subtask: scores its own 5 points
    assert (s.score, s.max_score) == (15.0 + 35.0 + 5.0, 105.0)
    assert s.outcome == Outcome.PARTIAL


def test_scoring_zero_weights_and_rounding() -> None:
    sub = submission({"tests": make_tests(0, 0), "subtasks": [{"name": "s", "points": 10, "tests": ["t1", "t2"]}]})
    assert score(sub, results(sub, {"t1": 0})).score == 5.0  # equal weights rather than 0/0
    sub = submission({"tests": make_tests(0.1, 0.2)})
    assert score(sub, results(sub, {})).score == 0.3


def test_a_failed_zero_point_test_is_not_accepted() -> None:
    sub = submission({"tests": make_tests(0, 1)})
    s = score(sub, results(sub, {"t1": 0}))
    assert (s.score, s.max_score, s.outcome) == (1.0, 1.0, Outcome.PARTIAL)


def run_output(stdout: bytes, stderr: bytes = b"") -> StageOutput:
    return checker_output(StageStatus.OK, 0, stdout, stderr)


def test_junit_is_valid_xml_whatever_the_program_printed() -> None:
    sub = submission({"tests": make_tests(1, 1, 1, 1), "subtasks": [{"name": "s", "points": 2, "tests": ["t1", "t2"]}]})
    ugly = b"\x00\x01\x1b[31mred\xff\xfe <tag> & ]]> \xed\xa0\x80 \xf0\x9f\x98\x80"
    cases = [Case(i, f"t{i + 1}", 1.0, LIMITS) for i in range(4)]
    rs = [
        CaseResult(cases[0], Verdict.ACCEPTED, 1.0, "", run_output(b"fine")),
        CaseResult(cases[1], Verdict.WRONG_ANSWER, 0.0, "line 1 differs: '\\x00'", run_output(ugly, ugly)),
        CaseResult(cases[2], Verdict.INTERNAL_ERROR, 0.0, "the checker failed \x07", run_output(b"")),
        CaseResult(cases[3], Verdict.SKIPPED, 0.0, "not run"),
    ]
    data = junit_xml("id-1", sub, rs, None)
    root = ET.fromstring(data)
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "1", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"id-1", "id-1/s"}
    assert [t.get("name") for t in suites["id-1/s"].iter("testcase")] == ["t1", "t2"]
    wrong = next(t for t in root.iter("testcase") if t.get("name") == "t2")
    failure = wrong.find("failure")
    assert failure is not None and failure.get("type") == "wrong_answer"
    out = wrong.find("system-out")
    assert out is not None and out.text is not None and "red" in out.text and "<tag> & ]]>" in out.text
    assert "\\x00" in out.text and "\\x1b" in out.text
    err = next(t for t in root.iter("testcase") if t.get("name") == "t3").find("error")
    assert err is not None and "\\x07" in (err.get("message") or "")


def test_junit_of_a_submission_that_ended_before_its_tests() -> None:
    sub = submission({"tests": make_tests(1, 1, 1)})
    data = junit_not_judged("id-2", sub, "dependencies", "dependency_failure", "attribute 'nope' missing", b"")
    root = ET.fromstring(data)
    assert (root.get("tests"), root.get("failures"), root.get("skipped")) == ("4", "1", "3")
    cases = {t.get("name"): t for t in root.iter("testcase")}
    assert list(cases) == ["dependencies", *sub.test_names()]
    failure = cases["dependencies"].find("failure")
    assert failure is not None and failure.get("type") == "dependency_failure" and "nope" in (failure.text or "")
    assert all(cases[name].find("skipped") is not None for name in sub.test_names())


def write_dir(root: Path, spec: dict[str, Any], files: dict[str, str]) -> Path:
    root.mkdir()
    (root / "submission.yaml").write_text(yaml.safe_dump(spec))
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_intake_keeps_checker_and_test_files_out_of_work(tmp_path: Path) -> None:
    spec = {
        "run": "run.sh",
        "tests": [{"input_file": "data/1.in", "output_file": "data/1.out"}],
        "checker": {"type": "program", "files": ["chk"], "compile": "build.sh", "run": "chk/check"},
    }
    files = {"run.sh": "cat", "data/1.in": "1", "data/1.out": "1", "build.sh": "#!/bin/sh\n", "chk/check": "x",
             "chk/lib/helper.py": "", "notes.txt": ""}  # fmt: skip
    intake = read_submission(write_dir(tmp_path / "sub", spec, files), SpoolConfig())
    assert intake.plan is not None, intake.problems
    plan = intake.plan
    assert plan.workdir_files == ("notes.txt", "run.sh")
    assert plan.checker_files == ("build.sh", "chk/check", "chk/lib/helper.py")
    assert plan.checker_compile is not None and plan.checker_compile.file == "build.sh"
    assert plan.checker_compile.shebang
    assert plan.checker_run is not None and plan.checker_run.file == "chk/check"


def test_intake_refuses_a_submission_script_that_is_test_data(tmp_path: Path) -> None:
    spec = {"run": "answer.txt", "tests": [{"input": "", "output_file": "answer.txt"}]}
    intake = read_submission(write_dir(tmp_path / "sub", spec, {"answer.txt": "42"}), SpoolConfig())
    assert intake.plan is None
    assert [p.where for p in intake.problems] == ["run"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tests": []}, "at least 1"),
        ({"tests": [{"output": ""}], "stdin": "x"}, "each test has its own `input`"),
        ({"tests": [{"output": ""}], "subtasks": [{"name": "a", "points": 1, "tests": ["1", "1"]}]}, "twice"),
        (
            {"tests": [{"output": ""}], "subtasks": [{"name": "a", "points": 1, "tests": ["1"]}] * 2},
            "subtask names must be unique",
        ),
        ({"tests": [{"output": ""}, {"name": "1", "output": ""}]}, "test names must be unique"),
        ({"tests": [{"output": ""}], "checker": {"type": "program"}}, "needs `run`"),
        ({"tests": [{"output": ""}], "checker": {"type": "lines", "run": "x"}}, "program checker only"),
        ({"checker": "exact"}, "need `tests`"),
    ],
)
def test_schema_refuses_judge_mistakes(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("`", ".")):
        submission(data)


def test_schema_defaults() -> None:
    spec = submission({"tests": [{"output": ""}]}).checker_spec()
    assert (spec.type, spec.abs_tol, spec.rel_tol) == (CheckerKind.LINES, 1e-6, 1e-6)


def test_a_new_attempt_starts_without_the_last_attempts_test_results(spool: Path) -> None:
    """A worker that died after writing some tests' results (or junit.xml) must not leave them
    to the next attempt, which may end otherwise (a compile error writes no junit.xml)."""
    paths = SpoolPaths(spool)
    entry = paths.submissions.incoming / "again"
    (entry / "result" / "tests").mkdir(parents=True)
    (entry / "submission.yaml").write_text("run: cat\n")
    for stale in ("result/junit.xml", "result/compile.json", "result/tests/1.json"):
        (entry / stale).write_text("from attempt 1")
    claim, reporter = started_claim(spool, "again")
    left = sorted(p.relative_to(claim.path).as_posix() for p in (claim.path / "result").rglob("*") if p.is_file())
    assert left == ["result/attempts.jsonl"]  # `claimed` is held back until the next write
    reporter.transition(State.RUNNING)
    status = json.loads((claim.path / "result" / "status.json").read_text())
    assert status["state"] == "running" and list(status["states"]) == ["queued", "claimed", "running"]
    events = [json.loads(line)["event"] for line in (claim.path / "result" / "events.jsonl").read_text().splitlines()]
    assert events == ["claimed", "running"]


def test_a_test_result_written_in_the_background_is_on_disk_before_the_end_and_its_failure_is_the_ends(
    spool: Path,
) -> None:
    """A judged test's file is written by a thread while the next test runs: the terminal state
    waits for every one, and a write that failed (here the claim's tests/ directory is replaced by
    a file, as a lost claim or a full disk would fail it) fails the end, which is then not written."""
    paths = SpoolPaths(spool)
    limits = SpoolConfig().limits.stage_default(StageKind.TEST)
    for name, sabotage in (("fine", False), ("broken", True)):
        entry = paths.submissions.incoming / name
        entry.mkdir()
        (entry / "submission.yaml").write_text("run: cat\n")
        claim, reporter = started_claim(spool, name)
        tests = claim.path / "result" / "tests"
        for i in range(50):
            if sabotage and i == 25:
                os.rename(tests, claim.path / "result" / "moved")
                tests.write_text("not a directory")
            out = StageOutput(f"tests/{i}", StageStatus.OK, 0, None, b"x", b"", b"x", False, False, 0.0, 0.0, 0, limits)
            reporter.stage(f"tests/{i}", out, later=True, test=str(i), verdict="accepted")
            reporter.event("tested", defer=True, test=str(i))
        if not sabotage:
            reporter.finish(State.DONE, Outcome.OK)
            result = claim.commit() / "result"
            written = sorted(int(p.stem) for p in (result / "tests").iterdir())
            assert written == list(range(50))
            assert json.loads((result / "tests" / "49.json").read_text())["verdict"] == "accepted"
            events = [json.loads(line) for line in (result / "events.jsonl").read_text().splitlines()]
            assert [e.get("test") for e in events if e["event"] == "tested"] == [str(i) for i in range(50)]
            assert json.loads((result / "status.json").read_text())["state"] == "done"
        else:
            with pytest.raises(CutorError):
                reporter.finish(State.DONE, Outcome.OK)
            status = claim.path / "result" / "status.json"
            assert not status.exists() or json.loads(status.read_text())["state"] != "done"


@pytest.mark.parametrize(
    ("script", "run"),
    [
        (b"./sol", b"exec ./sol\n"),
        (b'python3 sol.py "$@"\n', b'exec python3 sol.py "$@"\n'),
        (b"./sol < in.txt", b"exec ./sol < in.txt\n"),
        (b"gcc -o sol sol.c && ./sol", None),
        (b"./a\n./b", None),
        (b"A=1 ./sol", None),
        (b"exit 3", None),
        (b". ./env.sh", None),
        (b"echo $(cat x)", None),
        (b"./a | ./b", None),
        (b"if true; then ./sol; fi", None),
    ],
)
def test_a_one_command_script_is_execd_so_its_end_is_the_programs(script: bytes, run: bytes | None) -> None:
    """A shell reports its child's SIGSEGV as its own exit 139 (issue 15): the one command of a
    one-line script replaces the shell; anything else is left to the shell as written."""
    assert exec_simple(script) == (script if run is None else run)


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("./sol", ("./sol",)),
        ("cat\n", ("cat",)),
        ("python3 sol.py --fast", ("python3", "sol.py", "--fast")),
        ("gcc -O2 -o sol sol.c", ("gcc", "-O2", "-o", "sol", "sol.c")),
        ("echo hi", ("echo", "hi")),
        ("echo -e 'x'", None),  # dash's builtin prints "-e", coreutils' echo would not
        ("echo -n hi", None),
        ("printf '%s' x", None),
        ("true", None),
        ('python3 sol.py "$@"', None),
        ("./sol < in.txt", None),
        ("ls *.c", None),
        ("A=1 ./sol", None),
        ("exec ./sol", None),
        ("./a\n./b", None),
        ("cd /tmp", None),
        ("./sol # comment", None),
        ("~/sol", None),
    ],
)
def test_a_script_of_plain_words_is_execd_with_no_shell(script: str, argv: tuple[str, ...] | None) -> None:
    """Issue 18: a shell's exec is a tenth of a trivial stage. A script a shell would pass on word
    for word runs as an argv; whatever a shell would interpret keeps the shell."""
    assert plain_argv(script) == argv
    command, files = StageRunner.script_command(Script(text=script), ("arg",))
    assert (command, files) == ((argv, {}) if argv else (("/bin/sh", "/run/cutor/script", "arg"), files))


def test_address_space_is_off_by_default_and_checked_against_the_spools_maximum() -> None:
    """`address_space` (RLIMIT_AS) is off (0) unless asked for; an operator who caps it must also
    give a default, and then a submission cannot turn it off; below 16 MiB nothing would load."""
    assert SpoolConfig().limits.stage_default(StageKind.RUN).address_space == 0
    assert not any(o.startswith("as=") for o in rlimit_options(LIMITS, 8))
    assert f"as={64 << 20}" in rlimit_options(LIMITS.over(LimitsSpec(address_space="64MiB")), 8)
    with pytest.raises(ValidationError, match="below the smallest allowed 16MiB"):
        LimitsSpec(address_space="1MiB")
    capped = LIMITS.over(LimitsSpec(address_space="1GiB"))
    with pytest.raises(ValidationError, match="above the spool's maximum of 1GiB"):
        LimitsSpec.model_validate({"address_space": "2GiB"}, context={"maximum": capped})
    with pytest.raises(ValidationError, match=r"off \(0\) is above the spool's maximum"):
        LimitsSpec.model_validate({"address_space": 0}, context={"maximum": capped})
    LimitsSpec.model_validate({"address_space": "64GiB"}, context={"maximum": LIMITS})  # 0: no ceiling
    with pytest.raises(ValidationError, match=r"above limits\.maximum\.address_space"):
        SpoolConfig.model_validate({"limits": {"maximum": {"address_space": "1GiB"}}})
    SpoolConfig.model_validate({"limits": {"maximum": {"address_space": "1GiB"}, "default": {"address_space": "1GiB"}}})


def test_a_checker_passing_with_zero_points_is_accepted_unless_it_says_otherwise() -> None:
    """DMOJ's semantics by default; `zero_score: wrong_answer` for CMS's comparators (always exit 0)."""
    output = checker_output(StageStatus.OK, 0, b"0\n", b"worth nothing")
    assert (interpret(output).verdict, interpret(output).fraction) == (Verdict.ACCEPTED, 0.0)
    assert interpret(output, "wrong_answer").verdict == Verdict.WRONG_ANSWER
    spec = {"type": "program", "run": "./c", "zero_score": "wrong_answer"}
    assert submission({"tests": make_tests(1), "checker": spec}).checker_spec().zero_score == "wrong_answer"
    with pytest.raises(ValidationError, match="`zero_score` belongs to a program checker only"):
        submission({"tests": make_tests(1), "checker": {"type": "lines", "zero_score": "wrong_answer"}})


def _batch_run(sub: Submission, fractions: dict[str, float]) -> dict[str, str]:
    """The tests in order through a BatchPlan: what grading.py would run ("ran") or skip (reason)."""
    plan, seen = BatchPlan(sub), {}
    every = results(sub, fractions)
    for name in sub.test_names():
        reason = plan.skip(name)
        result = every[name] if reason is None else CaseResult(every[name].case, Verdict.SKIPPED, 0.0, reason)
        plan.record(result)
        seen[name] = "ran" if reason is None else reason
    return seen


def test_batches_skip_only_what_cannot_change_a_score() -> None:
    sub = submission(
        {
            "tests": make_tests(1, 1, 1, 1, 1, 1, 1, 1, 1),
            "scoring": "group_min",
            "subtasks": [
                {"name": "g", "points": 10, "tests": ["t1", "t2", "t3"]},
                {"name": "k", "points": 10, "tests": ["t3"]},  # t3 is needed here
                {"name": "half", "points": 10, "tests": ["t4", "t5"]},
                {"name": "all", "points": 10, "tests": ["t6", "t7"], "run_all": True},
                {"name": "sum", "points": 10, "tests": ["t8", "t9"], "scoring": "sum"},
            ],
        }
    )
    seen = _batch_run(sub, {"t1": 0, "t4": 0.5, "t6": 0, "t8": 0})
    assert seen.pop("t2") == "not run: subtask g already scores 0 (test t1 failed)"
    assert set(seen.values()) == {"ran"}  # a partial t4 does not settle `half`; run_all; sum; k needs t3


def test_a_subtask_after_a_failed_prerequisite_is_skipped_and_scores_zero() -> None:
    sub = submission(
        {
            "tests": make_tests(1, 1, 1, 1),
            "subtasks": [
                {"name": "a", "points": 10, "tests": ["t1"]},
                {"name": "b", "points": 20, "tests": ["t2"], "depends_on": ["a"]},
                {"name": "c", "points": 30, "tests": ["t3"], "depends_on": ["b"]},
                {"name": "d", "points": 40, "tests": ["t4"], "depends_on": ["a", "b"]},
            ],
        }
    )
    seen = _batch_run(sub, {"t1": 0})
    assert seen == {
        "t1": "ran",
        "t2": "not run: subtask b's prerequisite a failed (test t1)",
        "t3": "not run: subtask c's prerequisite a failed (test t1)",
        "t4": "not run: subtask d's prerequisite a failed (test t1)",
    }
    # Scored from results alone, wherever the prerequisite's tests stand in the order: here they all
    # ran and passed but `a`'s, and b, c, d still score 0.
    s = score(sub, results(sub, {"t1": 0}))
    assert (s.score, s.failed_subtasks) == (0.0, ["a", "b", "c", "d"])
    assert [sc.skipped_for for sc in s.subtasks] == [None, "a", "b", "a"]
    assert s.subtasks[1].to_json() == {
        "score": 0.0,
        "points": 20,
        "scoring": "sum",
        "passed": False,
        "skipped_for": "a",
    }
    assert score(sub, results(sub, {})).score == 100.0


@pytest.mark.parametrize(
    ("subtasks", "error"),
    [
        ([{"name": "a", "points": 1, "tests": ["t1"], "depends_on": ["a"]}], "a cycle: a -> a"),
        (
            [
                {"name": "a", "points": 1, "tests": ["t1"], "depends_on": ["b"]},
                {"name": "b", "points": 1, "tests": ["t1"], "depends_on": ["a"]},
            ],
            "a cycle: a -> b -> a",
        ),
        ([{"name": "a", "points": 1, "tests": ["t1"], "depends_on": ["zz"]}], "depends on unknown subtasks: zz"),
    ],
)
def test_subtask_dependencies_are_checked_at_intake(subtasks: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        submission({"tests": make_tests(1), "subtasks": subtasks})


def test_a_long_chain_of_prerequisites_needs_no_recursion() -> None:
    chain = [{"name": "s0", "points": 1, "tests": ["t1"]}]
    chain += [{"name": f"s{i}", "points": 1, "tests": ["t1"], "depends_on": [f"s{i - 1}"]} for i in range(1, 5000)]
    sub = submission({"tests": make_tests(1), "subtasks": chain})
    assert score(sub, results(sub, {"t1": 0})).subtasks[-1].skipped_for == "s4998"


def test_the_generated_inputs_cache_keeps_under_its_cap_dropping_the_least_recently_used(tmp_path: Path) -> None:
    cache = tmp_path / "generated"
    cache.mkdir()
    now = time.time()
    for age, name in enumerate(["newest", "middle", "oldest", "used"]):
        (cache / name).write_bytes(b"x" * 1000)
        os.utime(cache / name, (now - 100 * age, now - 100 * age))
        (cache / f"{name}.lock").touch()
    assert generated._cached(cache / "used", 2000) == b"x" * 1000  # a hit: used now, the last to go
    (cache / ".stale.tmp").write_bytes(b"half")  # a killed generator's temporary
    os.utime(cache / ".stale.tmp", (now - 2 * generated.ABANDONED,) * 2)
    (cache / ".fresh.tmp").write_bytes(b"being written")
    (cache / "gone.lock").touch()  # its entry was pruned; nobody holds it
    held = os.open(cache / "made-now.lock", os.O_RDWR | os.O_CREAT)  # a generator at work
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert generated.prune(cache, 2500) == 2
        left = sorted(p.name for p in cache.iterdir())
    finally:
        os.close(held)
    assert left == [".fresh.tmp", "made-now.lock", "newest", "newest.lock", "used", "used.lock"], left
    assert generated.prune(cache, 2500) == 0 and generated.prune(tmp_path / "none", 0) == 0
