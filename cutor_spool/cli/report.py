"""What a user needs to act on a result, without opening its JSON: `submit --wait`, `wait` and
`status` print it under the summary line, and `--json` gives the same as a `report` object.

What is shown, by what went wrong:
- dependencies: the stage's status and the tail of the build log when it failed;
- compile: the compiler's message (the tail of its stderr, else stdout) when it failed;
- run: the tail of stdout and stderr when it did not end ok (a runtime error, a limit), and the
  stdout of a successful run on a terminal, as before;
- a judged run: every test that was not accepted, with its verdict, the checker's feedback and,
  when the test's expected output is in the submission as the submitter sent it, expected versus
  got (the first lines where they differ).

Every tail is byte-capped (`TAIL`), cut at a line start where it can be, and says how to see all of
it (the stage's file in the result). Nothing is read that the status does not point to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cutor_spool.atomic import read_bytes, read_json
from cutor_spool.documents.dependencies import DependenciesDocument
from cutor_spool.documents.stage import StageDocument, StageStatus, Verdict
from cutor_spool.documents.states import RESULT_DIR
from cutor_spool.documents.status import StatusDocument
from cutor_spool.errors import CutorError
from cutor_spool.submission import Submission
from cutor_spool.yamlload import load_yaml

TAIL = 2000  # bytes of a stream shown in the terminal
FAILED_TESTS_SHOWN = 10
DIFF_LINES = 3


@dataclass
class Report:
    """The parts of a result worth showing; `lines()` for people, `to_json()` for scripts."""

    result: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> {status, stdout, stderr, …}
    failed_tests: list[dict[str, Any]] = field(default_factory=list)
    failed_tests_total: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "result": str(self.result),
            "stages": self.stages,
            "failed_tests": self.failed_tests,
            "failed_tests_total": self.failed_tests_total,
        }

    def lines(self, *, show_ok_stdout: bool) -> list[str]:
        out: list[str] = []
        for name, part in self.stages.items():
            failed = part["status"] != StageStatus.OK
            if not failed and not (name == "run" and show_ok_stdout):
                continue
            for stream in ("stdout", "stderr"):
                text = part.get(stream) or ""
                if text and (failed or stream == "stdout"):
                    cut = " (tail; all of it: " + part["file"] + ")" if part.get(f"{stream}_cut") else ""
                    out.append(f"--- {name} {stream}{cut} ---")
                    out.append(text.rstrip("\n"))
            if failed and part.get("message"):
                out.append(f"--- {name}: {part['message']}")
        if self.failed_tests:
            shown = len(self.failed_tests)
            more = f", the first {shown} shown" if self.failed_tests_total > shown else ""
            out.append(f"--- failed tests: {self.failed_tests_total}{more} ---")
            for test in self.failed_tests:
                out.extend(_test_lines(test))
        return out


def _test_lines(test: dict[str, Any]) -> list[str]:
    head = f"  {test['test']}: {test['verdict_code']} {test['verdict']}"
    if test.get("feedback"):
        head += f": {test['feedback']}"
    lines = [head]
    for line_no, expected, got in test.get("differs", []):
        lines.append(f"    line {line_no}: expected {expected!r}, got {got!r}")
    if not test.get("differs") and test.get("stderr"):
        lines.append(f"    stderr: {test['stderr']!r}")
    return lines


def tail(text: str, limit: int = TAIL) -> tuple[str, bool]:
    """The last `limit` bytes of `text`, from a line start when one is near; and whether it was cut."""
    data = text.encode()
    if len(data) <= limit:
        return text, False
    cut = data[-limit:]
    newline = cut.find(b"\n")
    if 0 <= newline < limit // 2:
        cut = cut[newline + 1 :]
    return cut.decode(errors="replace"), True


def _read_doc(path: Path) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def _stage_part(doc: StageDocument | DependenciesDocument, file: Path) -> dict[str, Any]:
    part: dict[str, Any] = {"status": str(doc.status), "file": str(file)}
    if doc.exit_code is not None:
        part["exit_code"] = doc.exit_code
    if doc.message:
        part["message"] = doc.message
    for stream in ("stdout", "stderr"):
        text = getattr(doc, stream) or ""
        shown, cut = tail(text)
        part[stream] = shown
        part[f"{stream}_cut"] = cut or bool(doc.truncated and getattr(doc.truncated, stream))
    return part


def build_report(entry: Path, status: StatusDocument) -> Report:
    result = entry / RESULT_DIR
    report = Report(result=result)
    deps_file = result / "dependencies.json"
    deps = DependenciesDocument.read(_read_doc(deps_file)) if deps_file.exists() else None
    if deps is not None:
        report.stages["dependencies"] = _stage_part(deps, deps_file)
    for name in status.stages:
        file = result / f"{name}.json"
        doc = StageDocument.read(_read_doc(file))
        if doc is not None:
            report.stages[name] = _stage_part(doc, file)
    if status.tests:
        _failed_tests(entry, result, status, report)
    return report


def _failed_tests(entry: Path, result: Path, status: StatusDocument, report: Report) -> None:
    failed = [name for name, verdict in (status.tests or {}).items() if verdict not in (Verdict.ACCEPTED,)]
    failed = [name for name in failed if (status.tests or {})[name] != Verdict.SKIPPED] or failed
    report.failed_tests_total = len(failed)
    expected = _expected_outputs(entry)
    for name in failed[:FAILED_TESTS_SHOWN]:
        doc = StageDocument.read(_read_doc(result / "tests" / f"{name}.json"))
        verdict = (status.tests or {})[name]
        item: dict[str, Any] = {"test": name, "verdict": str(verdict), "verdict_code": verdict.code}
        if doc is not None:
            if doc.feedback:
                item["feedback"] = doc.feedback
            item["stderr"] = tail(doc.stderr, 300)[0]
            if verdict == Verdict.WRONG_ANSWER and name in expected:
                item["differs"] = differing_lines(expected[name], doc.stdout)
        report.failed_tests.append(item)


def differing_lines(expected: str, got: str, limit: int = DIFF_LINES) -> list[tuple[int, str, str]]:
    """The first lines (1-based) where the two texts differ, trailing spaces ignored as the default
    checker does; a missing line reads as ""."""
    want = expected.rstrip("\n").split("\n")
    have = got.rstrip("\n").split("\n")
    out: list[tuple[int, str, str]] = []
    for i in range(max(len(want), len(have))):
        a = want[i] if i < len(want) else ""
        b = have[i] if i < len(have) else ""
        if a.rstrip() != b.rstrip():
            out.append((i + 1, a[:200], b[:200]))
            if len(out) >= limit:
                break
    return out


def _expected_outputs(entry: Path) -> dict[str, str]:
    """test name -> expected output, from the submission as it was sent (inline `output:` or an
    `output_file` of the entry); tests without a readable one are left out."""
    try:
        sub = Submission.model_validate(load_yaml(read_bytes(entry / "submission.yaml", 1 << 20).decode()))
    except (CutorError, OSError, ValueError):  # not ours to judge here: the executor already did
        return {}
    out: dict[str, str] = {}
    for name, test in zip(sub.test_names(), sub.tests or [], strict=False):
        if test.output is not None:
            out[name] = test.output
        elif test.output_file is not None:
            try:
                out[name] = read_bytes(entry / test.output_file, 1 << 20, beneath=entry).decode(errors="replace")
            except (CutorError, OSError):
                continue
    return out
