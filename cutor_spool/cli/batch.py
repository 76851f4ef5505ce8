"""Many submissions at once: `submit DIR…`, `submit --batch FILE.jsonl`, and `wait ID…`.

Each submission is dropped atomically on its own (as `submit` drops one); a bad one is reported
with where it came from and does not stop the others. `--batch` reads one JSON object a line:

    {"id": "optional-id", "submission": {…submission.yaml as JSON…}, "files": {"main.c": "…"}}

(`files` are UTF-8 texts; for binary data use submission.yaml's inline `files` with base64.) The
exit code of a set is the highest of its members' (see `submit --help`): 0 only when all are fine.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cutor_spool.cli.output import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OK, emit_json, exit_code, say, summary
from cutor_spool.config import SpoolConfig
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.intake import read_submission
from cutor_spool.runner.judge.graders import checked
from cutor_spool.watcher import client
from cutor_spool.watcher.client import SubmitError

BATCH_KEYS = {"id", "submission", "files"}
MAX_LINE = 16 << 20


@dataclass
class Dropped:
    source: str  # the directory, or FILE:LINE
    id: str | None = None
    problems: list[str] | None = None


Source = tuple[str, Path | None, str | None, list[str]]  # where from, its directory, its id, problems so far


def drop_all(paths: SpoolPaths, sources: Iterator[Source], *, config: SpoolConfig, check: bool) -> list[Dropped]:
    """Drops each source; returns what happened to each."""
    results: list[Dropped] = []
    for source, directory, entry_id, found in sources:
        problems = list(found)
        if directory is not None and check and not problems:
            problems = [str(p) for p in checked(read_submission(directory, config)).problems]
        if problems or directory is None:
            results.append(Dropped(source, entry_id, problems or ["unreadable"]))
            continue
        try:
            results.append(Dropped(source, client.submit(paths, directory, entry_id)))
        except SubmitError as exc:
            results.append(Dropped(source, entry_id, [str(exc)]))
    return results


def directories(dirs: tuple[Path, ...]) -> Iterator[Source]:
    for directory in dirs:
        yield str(directory), directory, None, []


def batch_lines(file: Path, staging: Path) -> Iterator[Source]:
    """Each line of a JSONL batch made into a submission directory under `staging`."""
    with open(file, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            source = f"{file}:{number}"
            if not raw.strip():
                continue
            item, problems = _parse_line(raw)
            if problems:
                yield source, None, None, problems
                continue
            directory = staging / f"line-{number}"
            problems = _materialise(item, directory)
            yield source, None if problems else directory, item.get("id"), problems


def _parse_line(raw: bytes) -> tuple[dict[str, Any], list[str]]:
    if len(raw) > MAX_LINE:
        return {}, [f"line longer than {MAX_LINE} bytes"]
    try:
        item = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return {}, [f"not JSON: {exc}"]
    if not isinstance(item, dict):
        return {}, ["expected an object with `submission` (and optionally `id`, `files`)"]
    problems = [f"{key}: unknown key (expected id, submission, files)" for key in sorted(set(item) - BATCH_KEYS)]
    if not isinstance(item.get("submission"), dict):
        problems.append("submission: required, an object (submission.yaml as JSON)")
    if "id" in item and not isinstance(item["id"], str):
        problems.append("id: must be a string")
    files = item.get("files", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        problems.append("files: must map file names to UTF-8 texts")
    return item, problems


def _materialise(item: dict[str, Any], directory: Path) -> list[str]:
    directory.mkdir(parents=True)
    (directory / "submission.yaml").write_text(yaml.safe_dump(item["submission"], allow_unicode=True))
    problems = []
    for name, text in item.get("files", {}).items():
        target = (directory / name).resolve()
        if name == "submission.yaml" or not target.is_relative_to(directory.resolve()):
            problems.append(f"files: {name!r} is not a plain relative name")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return problems


def staging_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="cutor-batch-")


def report_drops(results: list[Dropped], *, as_json: bool, quiet: bool) -> None:
    if as_json and quiet:
        return
    if as_json:
        emit_json([{"source": r.source, "id": r.id, **({"errors": r.problems} if r.problems else {})} for r in results])
        return
    for r in results:
        if r.problems:
            for problem in r.problems:
                say(f"{r.source}: invalid: {problem}", err=True)
        else:
            say(r.id or "")


def wait_set(paths: SpoolPaths, ids: list[str], *, timeout: float | None, as_json: bool) -> int:
    """Follows every id to its end (one deadline for all); prints each as it ends; the highest code."""
    deadline = None if timeout is None else time.monotonic() + timeout
    codes, documents = [], []
    for entry_id in ids:
        if client.locate(paths, entry_id) is None:
            say(f"{entry_id}: not in the spool", err=True)
            codes.append(EXIT_NOT_FOUND)
            continue
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        status = client.follow(paths, entry_id, timeout=left)
        codes.append(exit_code(status))
        if status is None:
            say(f"{entry_id}: still not finished", err=True)
        elif as_json:
            documents.append(status.dump())
        else:
            say(summary(status))
    if as_json:
        emit_json(documents)
    return max(codes, default=EXIT_OK)


def set_code(results: list[Dropped]) -> int:
    return EXIT_INVALID if any(r.problems for r in results) else EXIT_OK
