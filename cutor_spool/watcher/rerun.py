"""Running finished submissions again (`cutor-spool rerun`): after a checker fix, a new
environment, a new test set.

A rerun is a new submission made from the finished one's own files (its result, lease and marker
left out) with a `.rerun-of` file naming it; the executor records that link as `rerun_of` in the
new status.json, and the old entry stays in `done/` as it was. Its id is `<id>-r<n>` (the first
free n) unless one is given.

`rerun --problem DIR` rejudges a problem: DIR holds the problem as a submission.yaml that names
it (`problem: NAME`) with its `tests` (and checker, subtasks, scoring, limits) plus its files.
Every finished submission of that problem in `done/` (the ones that name it and are not reruns
themselves) is submitted again with its own solution (compile, run, dependencies, files) and the
problem's current judging: the judging keys are replaced by the problem's, the problem's limits
override the submission's, its `priority` (if it names one) is the reruns' lane, and the
problem's files are copied over the submission's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from cutor_spool.atomic import read_bytes
from cutor_spool.errors import CutorError
from cutor_spool.layout import SpoolPaths
from cutor_spool.watcher import client
from cutor_spool.watcher.ids import valid_id
from cutor_spool.yamlload import load_yaml

RERUN_OF = ".rerun-of"  # the same name as runner/tree.py's protocol name
SKIPPED = {".ready", ".lease", "result", RERUN_OF}
SKIPPED_PREFIXES = (".lease-foreign-", "result-foreign-")
JUDGING_KEYS = (
    "tests",
    "checker",
    "subtasks",
    "scoring",
    "short_circuit",
    "grader",
    "problem",
    "generator",
    "function",
)
MAX_YAML = 8 << 20


class RerunError(CutorError):
    """The submission cannot be run again (not finished, not found, not readable)."""


def next_id(paths: SpoolPaths, entry_id: str) -> str:
    base = entry_id[:120]
    n = 1
    while client.locate(paths, f"{base}-r{n}") is not None:
        n += 1
    return f"{base}-r{n}"


def _ignore(directory: str, names: list[str], *, top: str) -> set[str]:
    if directory != top:
        return set()
    return {n for n in names if n in SKIPPED or n.startswith(SKIPPED_PREFIXES)}


def _copy_sources(entry: Path, staging: Path) -> None:
    top = str(entry)
    shutil.copytree(entry, staging, symlinks=True, ignore=lambda d, n: _ignore(d, n, top=top))


def _yaml(path: Path) -> dict[str, Any]:
    try:
        data = load_yaml(read_bytes(path, MAX_YAML).decode())
    except (OSError, ValueError, CutorError) as exc:  # YamlProblem and UnicodeDecodeError are ValueErrors
        raise RerunError(f"{path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RerunError(f"{path}: not a mapping")
    return data


def rerun(paths: SpoolPaths, entry_id: str, *, new_id: str | None = None, problem: Path | None = None) -> str:
    """Submits finished submission `entry_id` again; returns the new id."""
    found = client.locate(paths, entry_id)
    if found is None:
        raise RerunError(f"{entry_id}: not in the spool")
    if found.where != "done":
        raise RerunError(f"{entry_id}: still {found.where}; wait for it (or cancel it) first")
    new_id = new_id or next_id(paths, entry_id)
    if not valid_id(new_id):
        raise RerunError(f"{new_id!r} is not a valid id")
    with tempfile.TemporaryDirectory(prefix="cutor-rerun-") as tmp:
        staging = Path(tmp) / "entry"
        try:
            _copy_sources(found.path, staging)
        except (OSError, shutil.Error) as exc:
            raise RerunError(f"{entry_id}: cannot copy its files: {exc}") from exc
        (staging / RERUN_OF).write_text(entry_id + "\n")
        if problem is not None:
            _apply_problem(problem, staging)
        return client.submit(paths, staging, new_id)


def _apply_problem(problem: Path, staging: Path) -> None:
    spec = _yaml(problem / "submission.yaml")
    sub = _yaml(staging / "submission.yaml")
    for key in JUDGING_KEYS:
        sub.pop(key, None)
        if key in spec:
            sub[key] = spec[key]
    if "priority" in spec:  # a rejudge may go in its own lane (low: new work goes first)
        sub["priority"] = spec["priority"]
    if isinstance(spec.get("limits"), dict):
        sub["limits"] = {**(sub.get("limits") or {}), **spec["limits"]}
    for root, _dirs, files in os.walk(problem):
        for name in files:
            source = Path(root) / name
            rel = source.relative_to(problem)
            if str(rel) == "submission.yaml":
                continue
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staging / rel, follow_symlinks=False)
    (staging / "submission.yaml").write_text(yaml.safe_dump(sub, allow_unicode=True, sort_keys=False))


def problem_name(problem: Path) -> str:
    name = _yaml(problem / "submission.yaml").get("problem")
    if not isinstance(name, str) or not valid_id(name):
        raise RerunError(f"{problem}/submission.yaml must name its problem (`problem: NAME`)")
    return name


def submissions_of(paths: SpoolPaths, name: str) -> list[str]:
    """The finished submissions of problem `name` that are not reruns, oldest first."""
    done = paths.submissions.done
    found = []
    for entry in sorted(os.scandir(done), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith(".") or not valid_id(entry.name) or (path / RERUN_OF).exists():
            continue
        try:
            spec = _yaml(path / "submission.yaml")
        except RerunError:
            continue
        if spec.get("problem") == name:
            found.append(entry.name)
    return found
