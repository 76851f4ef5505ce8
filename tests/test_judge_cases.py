"""The judge suite as data: every folder in tests/judge/ is a judged submission with the result it
must get (`expect.yaml`; see tests/judge/README.md). All of them go through a real executor at
once, on each backend. Besides the expected verdicts and score, every case is held to what a user
of any judged result relies on: the seeds' message flow in events.jsonl, tests/<name>.json per
test that ran, a junit.xml that parses and agrees, and score fields present exactly when the
seeds say so."""

from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLI, ExecutorProcess, drop, need, result, wait_done, write_config
from docker_image.fixtures import IMAGE, start_engine_and_build

from cutor_spool.config import StatusPageConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.web_status import regenerate

JUDGE = Path(__file__).parent / "judge"
CASES = sorted(p.name for p in JUDGE.iterdir() if (p / "expect.yaml").exists())
# The quick tier judges on bubblewrap only (on Docker, ~15 s more); test_docker_backend.py stays in it.
BACKENDS = ["bubblewrap", pytest.param("docker", marks=pytest.mark.slow)]
FLOW = {"claimed", "compiling", "compiled", "checker_compiled", "testing", "tested", "done", "error", "invalid"}


@dataclass
class Run:
    spool: Path
    executor: ExecutorProcess
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module", params=BACKENDS)
def judged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    backend = request.param
    if backend == "docker":
        need((problem := start_engine_and_build()) is None, problem or "")
    base = tmp_path_factory.mktemp(f"judge-{backend}")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, backend=backend, docker={"image": IMAGE})
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    for case in CASES:
        target = base / "cases" / case
        shutil.copytree(JUDGE / case, target, ignore=shutil.ignore_patterns("expect.yaml"))
        drop(spool, target, case)
    try:
        wait_done(spool, CASES, timeout=600)
    except AssertionError:
        executor.stop()
        raise AssertionError(f"executor log:\n{executor.output()[-4000:]}") from None
    run = Run(spool, executor, {case: result(spool, case) for case in CASES})
    yield run
    executor.stop()


def _events(entry: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (entry / "events.jsonl").read_text().splitlines()]
    last = max(i for i, e in enumerate(lines) if e["event"] == "claimed")
    return [e for e in lines[last:] if e["event"] in FLOW]


def _check_flow(case: str, entry: Path, sub: dict[str, Any], status: dict[str, Any]) -> None:
    """The seeds' (003) messages: executing (claimed), compiling, compiled {success}, then testing
    and tested {verdict} for each test, then done or error."""
    events = _events(entry)
    kinds = [e["event"] for e in events]
    expected = ["claimed"]
    if sub.get("compile"):
        expected += ["compiling", "compiled"]
    if status.get("outcome") == "compile_error":
        assert kinds == [*expected, "done"], f"{case}: {kinds}"
        assert events[2]["success"] is False
        return
    if isinstance(sub.get("checker"), dict) and sub["checker"].get("compile"):
        expected.append("checker_compiled")
    for name in status["tests"]:
        if (entry / "tests" / f"{name}.json").exists():
            expected.append("testing")
        expected.append("tested")
    expected.append(status["state"])
    assert kinds == expected, f"{case}: {kinds}"
    tested = [e for e in events if e["event"] == "tested"]
    assert [(e["test"], e["verdict"]) for e in tested] == list(status["tests"].items())
    testing = [e["test"] for e in events if e["event"] == "testing"]
    assert testing == [n for n in status["tests"] if (entry / "tests" / f"{n}.json").exists()]


def _check_junit(case: str, entry: Path, status: dict[str, Any]) -> None:
    root = ET.parse(entry / "junit.xml").getroot()  # it must parse
    assert root.tag == "testsuites"
    seen: dict[str, str] = {}
    for testcase in root.iter("testcase"):
        children = {child.tag: child for child in testcase}
        if "error" in children:
            kind = "internal_error"
        elif "skipped" in children:
            kind = "skipped"
        elif "failure" in children:
            kind = children["failure"].get("type", "")
        else:
            kind = "accepted"
        seen[testcase.get("name", "")] = kind
    assert seen == status["tests"], f"{case}: junit {seen} != {status['tests']}"
    failures = sum(v not in ("accepted", "skipped", "internal_error") for v in status["tests"].values())
    assert int(root.get("failures", "-1")) >= failures  # a test in two subtasks counts twice


@pytest.mark.timeout(900)  # the first case waits for the whole suite (the fixture)
@pytest.mark.parametrize("case", CASES)
def test_judge_case(judged: Run, case: str) -> None:
    expect = yaml.safe_load((JUDGE / case / "expect.yaml").read_text())
    sub = yaml.safe_load((JUDGE / case / "submission.yaml").read_text())
    status = judged.results[case]
    entry = judged.spool / "done" / case / "result"
    compile_out = entry / "compile.json"
    hint = json.loads(compile_out.read_text())["stderr"][-800:] if compile_out.exists() else ""
    assert status["state"] == expect["state"], f"{case}: {status}; compile: {hint}"
    if expect["state"] == "invalid":
        where = {e["where"] for e in status["errors"]}
        assert set(expect["errors_where"]) <= where, f"{case}: {status['errors']}"
        return
    assert status.get("outcome") == expect.get("outcome"), f"{case}: {status}"
    assert "test" not in status  # "the test being judged" means nothing once finished
    judged_to_the_end = status["state"] == "done" and status["outcome"] != "compile_error"
    for key in ("score", "max_score"):
        if judged_to_the_end:
            assert status[key] == pytest.approx(expect[key]), f"{case}: {key} {status[key]}"
        else:
            assert key not in status, f"{case}: {key} after {status['state']}/{status.get('outcome')}"
    if judged_to_the_end and sub.get("subtasks"):
        assert status["failed_subtasks"] == expect.get("failed_subtasks", [])
    else:
        assert "failed_subtasks" not in status
    if "reason_contains" in expect:
        assert expect["reason_contains"] in status["reason"], status["reason"]
    _check_flow(case, entry, sub, status)
    if status.get("outcome") == "compile_error":
        assert not (entry / "tests").exists()
        root = ET.parse(entry / "junit.xml").getroot()  # CI shows the submission failing, its tests not run
        cases = {c.get("name"): {child.tag: child for child in c} for c in root.iter("testcase")}
        assert cases.pop("compile")["failure"].get("type") == "compile_error"
        assert list(cases) == [str(t.get("name", i + 1)) for i, t in enumerate(sub["tests"])]
        assert all("skipped" in children for children in cases.values())
        assert (root.get("failures"), root.get("skipped")) == ("1", str(len(sub["tests"])))
        return
    assert status["tests"] == expect["tests"]
    assert status["tests_done"] == status["tests_total"] == len(expect["tests"])
    for name, verdict in status["tests"].items():
        path = entry / "tests" / f"{name}.json"
        if not path.exists():
            assert verdict in ("skipped", "internal_error"), f"{case}: test {name} has no result file"
            continue
        record = json.loads(path.read_text())
        assert (record["test"], record["verdict"]) == (name, verdict)
        assert record["limits"]["cpu_time"] > 0 and "stdout" in record
        if name in expect.get("feedback", {}):
            assert expect["feedback"][name] in record["feedback"], f"{case}/{name}: {record['feedback']!r}"
    events = {e["test"]: e for e in _events(entry) if e["event"] == "tested"}
    for name, part in expect.get("feedback", {}).items():
        assert part in events[name]["feedback"], f"{case}/{name}: {events[name]['feedback']!r}"
    _check_junit(case, entry, status)


def test_the_page_says_which_prerequisite_made_a_subtask_score_zero(judged: Run) -> None:
    """status.json's `skipped_for` (issue 15's subtask dependencies), as the status page shows it."""
    status = result(judged.spool, "subtask-batches")
    assert {n: s.get("skipped_for") for n, s in status["subtasks"].items()} == {
        "G": None, "K": None, "R": None, "S": None, "D": "G", "E": "D",
    }  # fmt: skip
    regenerate(SpoolPaths(judged.spool), StatusPageConfig(interval=1.0, recent=50), full=True)
    page = (judged.spool / "status" / "s" / "subtask-batches.html").read_text()
    row = page[page.index('data-subtask="E"') :].split("</tr>", 1)[0]
    assert "prerequisite D failed" in row


def test_the_executor_survived_the_suite(judged: Run) -> None:
    assert judged.executor.proc is not None and judged.executor.proc.poll() is None
    assert "Traceback" not in judged.executor.output()
