"""`result/junit.xml`: a judged submission's tests as CI pipelines show their own (GitLab, Jenkins,
GitHub test reporters all read this format).

One `<testsuite>` per subtask (a test in two subtasks appears in both, as it counts in both), and
one named after the submission for the tests in no subtask (all of them when there are none).
Accepted tests pass; `internal_error` is an `<error>` (the judge could not decide), `skipped` is
`<skipped>`, every other verdict is a `<failure>` whose type is the verdict. A failed test carries
the start of its stdout and stderr. Text is cleaned of characters XML 1.0 cannot hold (a program's
output may contain any byte), so the file always parses.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from cutor_spool.runner.judge.scoring import Score
from cutor_spool.runner.judge.verdicts import CaseResult, Verdict
from cutor_spool.submission import Submission

OUTPUT_EXCERPT = 8192
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean(text: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _excerpt(data: bytes) -> str:
    text = data[:OUTPUT_EXCERPT].decode("utf-8", "replace")
    return clean(text + ("\n[... cut]" if len(data) > OUTPUT_EXCERPT else ""))


def _seconds(value: float) -> str:
    return f"{value:.3f}"


def _testcase(parent: ET.Element, classname: str, result: CaseResult) -> None:
    output = result.output
    case = ET.SubElement(
        parent,
        "testcase",
        name=result.name,
        classname=classname,
        time=_seconds(output.wall_time if output else 0.0),
    )
    message = clean(f"{result.verdict.code}: {result.feedback}" if result.feedback else result.verdict.code)
    if result.verdict == Verdict.ACCEPTED:
        return
    if result.verdict == Verdict.SKIPPED:
        ET.SubElement(case, "skipped", message=clean(result.feedback))
        return
    kind = "error" if result.verdict == Verdict.INTERNAL_ERROR else "failure"
    detail = ET.SubElement(case, kind, message=message, type=str(result.verdict))
    lines = [f"verdict: {result.verdict}", f"score: {result.score:g} of {result.case.points:g}"]
    if result.feedback:
        lines.append(f"message: {result.feedback}")
    if output is not None:
        lines.append(f"status: {output.status}, exit code {output.exit_code}, cpu {output.cpu_time:.3f}s")
    detail.text = clean("\n".join(lines))
    if output is not None:
        if output.stdout:
            ET.SubElement(case, "system-out").text = _excerpt(output.stdout)
        if output.stderr:
            ET.SubElement(case, "system-err").text = _excerpt(output.stderr)


def _suite(
    root: ET.Element, name: str, results: Sequence[CaseResult], properties: dict[str, object]
) -> dict[str, float]:
    counts = {
        "tests": len(results),
        "failures": sum(r.verdict not in (Verdict.ACCEPTED, Verdict.SKIPPED, Verdict.INTERNAL_ERROR) for r in results),
        "errors": sum(r.verdict == Verdict.INTERNAL_ERROR for r in results),
        "skipped": sum(r.verdict == Verdict.SKIPPED for r in results),
        "time": sum(r.output.wall_time for r in results if r.output is not None),
    }
    attributes = {k: (_seconds(v) if k == "time" else str(int(v))) for k, v in counts.items()}
    suite = ET.SubElement(root, "testsuite", {"name": clean(name), **attributes})
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=key, value=clean(str(value)))
    classname = name.replace("/", ".")
    for result in results:
        _testcase(suite, classname, result)
    return counts


Group = tuple[str, list[CaseResult], dict[str, object]]  # a testsuite: its name, its tests, its properties


def _groups(name: str, sub: Submission, results: Sequence[CaseResult], score: Score | None) -> list[Group]:
    """The testsuites: one per subtask, after one named after the submission for the tests in no
    subtask (all of them when there are none)."""
    by_name = {r.name: r for r in results}
    subtask_scores = {s.name: s.score for s in score.subtasks} if score is not None else {}
    groups: list[Group] = []
    for subtask in sub.subtasks or []:
        props: dict[str, object] = {"points": f"{subtask.points:g}", "scoring": str(subtask.scoring or sub.scoring)}
        if subtask.name in subtask_scores:
            props["score"] = f"{subtask_scores[subtask.name]:g}"
        groups.append((f"{name}/{subtask.name}", [by_name[t] for t in subtask.tests], props))
    in_subtask = {t for s in sub.subtasks or [] for t in s.tests}
    loose = [r for r in results if r.name not in in_subtask]
    if loose or not groups:
        props = {}
        if score is not None:
            props = {"outcome": str(score.outcome), "score": f"{score.score:g}", "max_score": f"{score.max_score:g}"}
        groups.insert(0, (name, loose, props))
    return groups


def junit_xml(name: str, sub: Submission, results: Sequence[CaseResult], score: Score | None) -> bytes:
    """`score` is None when judging ended in error (no score was given)."""
    root = ET.Element("testsuites", name=clean(name))
    totals = {"tests": 0.0, "failures": 0.0, "errors": 0.0, "skipped": 0.0, "time": 0.0}
    for suite_name, members, props in _groups(name, sub, results, score):
        for key, value in _suite(root, suite_name, members, props).items():
            totals[key] += value
    for key, value in totals.items():
        root.set(key, _seconds(value) if key == "time" else str(int(value)))
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def junit_not_judged(
    name: str, sub: Submission, step: str, outcome: str, message: str, log: bytes, seconds: float = 0.0
) -> bytes:
    """A judged submission that ended before its tests (a compile error, a dependency failure): a
    failed `<testcase>` for the step that failed, with its log, and every test `<skipped>`, so
    that a CI pipeline shows the submission failing rather than no tests at all."""
    root = ET.Element("testsuites", name=clean(name))
    tests = sub.test_names()
    suite = ET.SubElement(
        root,
        "testsuite",
        name=clean(name),
        tests=str(len(tests) + 1),
        failures="1",
        errors="0",
        skipped=str(len(tests)),
        time=_seconds(seconds),
    )
    classname = name.replace("/", ".")
    case = ET.SubElement(suite, "testcase", name=step, classname=classname, time=_seconds(seconds))
    ET.SubElement(case, "failure", message=clean(f"{outcome}: {message}"[:1000]), type=outcome).text = clean(message)
    if log:
        ET.SubElement(case, "system-err").text = _excerpt(log)
    for test in tests:
        case = ET.SubElement(suite, "testcase", name=test, classname=classname, time=_seconds(0.0))
        ET.SubElement(case, "skipped", message=clean(f"not run: {outcome}"))
    for key in ("tests", "failures", "errors", "skipped", "time"):
        root.set(key, suite.get(key, "0"))
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"
