"""The documents a real run writes fit the JSON Schemas that `cutor-spool schema` exports.

Clients in other languages validate status.json, the stage outputs, heartbeats and build records
against those schemas, so each document written by real workers is checked three ways: against
the exported schema (by the small validator below: `jsonschema` is not a dependency of the
project, and the validator refuses any keyword it does not know, so a schema it cannot check
fails the test instead of passing unchecked), against its model with no unknown field allowed
(writers never emit an undeclared field), and by dumping the parsed model again (the models keep
every field and value exactly as written). The page, which reads them through the same models,
shows what status.json tells.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, make_submission, wait_done
from nixtest import builders, need_nix, nix_config

from cutor_spool.config import StatusPageConfig
from cutor_spool.documents.build import BuildRecord
from cutor_spool.documents.dependencies import DependenciesDocument
from cutor_spool.documents.heartbeat import Heartbeat
from cutor_spool.documents.schemas import DRAFT
from cutor_spool.documents.stage import StageDocument
from cutor_spool.documents.states import ATTEMPTS_LOG, State
from cutor_spool.documents.status import StatusDocument
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.results import Reporter
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity
from cutor_spool.web_status import regenerate

__all__ = ["builders"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent
ANNOTATIONS = {"title", "description", "default", "$schema", "$id", "$defs", "examples"}
TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], where: str = "$") -> list[str]:
    """Errors of `value` against `schema` (the subset of draft 2020-12 that pydantic emits)."""
    unknown = set(schema) - ANNOTATIONS - {"$ref", "type", "properties", "required", "additionalProperties"}
    unknown -= {"items", "prefixItems", "minItems", "maxItems", "anyOf", "enum", "const"}
    assert not unknown, f"{where}: the test's validator does not know {unknown}"
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return validate(value, root["$defs"][name], root, where)
    if "anyOf" in schema:
        if all(validate(value, option, root, where) for option in schema["anyOf"]):
            return [f"{where}: {value!r} matches none of anyOf"]
        return []
    errors = []
    expected = schema.get("type")
    if expected is not None:
        kind = TYPES[expected]
        if not isinstance(value, kind) or (expected in ("integer", "number") and isinstance(value, bool)):
            return [f"{where}: {value!r} is not of type {expected}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} is not {schema['const']!r}")
    if isinstance(value, dict):
        errors += [f"{where}: {key} is required" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += validate(item, properties[key], root, f"{where}.{key}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, root, f"{where}.{key}")
    if isinstance(value, list):
        prefix = schema.get("prefixItems", [])
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{where}: {len(value)} items")
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                errors += validate(item, sub, root, f"{where}[{i}]")
    return errors


def exported(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every schema, as `cutor-spool schema --all DIR` writes them."""
    out = tmp_path / "schemas"
    subprocess.run([*CLI, "schema", "--all", str(out)], check=True, capture_output=True)
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text()) for p in out.glob("*.schema.json")}


def check(document: Path | dict[str, Any], schema: dict[str, Any], model: Any) -> None:
    data = json.loads(document.read_text()) if isinstance(document, Path) else document
    assert validate(data, schema, schema) == [], document
    parsed = model.model_validate(data)  # extra="forbid": nothing undeclared was written
    assert parsed.dump() == data, document


def test_schema_command_prints_each_document(tmp_path: Path) -> None:
    for name, title in (("status", "StatusDocument"), ("stage", "StageDocument"), ("heartbeat", "Heartbeat")):
        proc = subprocess.run([*CLI, "schema", name], capture_output=True, text=True, check=True)
        schema = json.loads(proc.stdout)
        named = schema.get("title") or schema["$ref"].removeprefix("#/$defs/")  # a recursive one is a $ref
        assert (schema["$schema"], named) == (DRAFT, title)
        assert '"additionalProperties": false' not in json.dumps(schema)  # a newer writer's fields are allowed
    schemas = exported(tmp_path)
    documents = {"status", "stage", "dependencies", "heartbeat", "build"}
    deployments = {"deployment", "deployment-build", "invocation", "response"}
    assert set(schemas) == {"submission", "spool"} | documents | deployments
    assert schemas["build"]["properties"]["status"]["$ref"] == "#/$defs/BuildStatus"
    assert schemas["submission"]["additionalProperties"] is False  # submission.yaml stays strict


def test_every_document_of_a_real_run_fits_its_schema(spool: Path, tmp_path: Path, executors: Any) -> None:
    schemas = exported(tmp_path)
    judge = ROOT / "judge" / "c-checker"
    subs = {
        "plain": make_submission(tmp_path, "plain", {"run": "printf 'ok\\377\\n'; echo warn >&2"}),
        "broken": make_submission(tmp_path, "broken", {"compile": "cc -o x missing.c", "run": "./x"}),
        "invalid": make_submission(tmp_path, "invalid", "run: echo hi\nbogus: 1\n"),
        "judged": make_submission(
            tmp_path,
            "judged",
            (judge / "submission.yaml").read_text(),
            {name: (judge / name).read_text() for name in ("checker.c", "sol.c")},
        ),
        "slow": make_submission(tmp_path, "slow", {"run": "sleep 2"}),
    }
    executor = executors(spool)
    for name, directory in subs.items():
        drop(spool, directory, name)
    heartbeat = None
    deadline = time.monotonic() + 60
    while heartbeat is None or not heartbeat["current"]:  # a heartbeat while it works on something
        assert time.monotonic() < deadline, executor.output()
        for path in (spool / "workers").glob("*.json"):
            heartbeat = json.loads(path.read_text())
        time.sleep(0.05)
    wait_done(spool, list(subs), timeout=120)

    check(heartbeat, schemas["heartbeat"], Heartbeat)
    documents = 0
    for name in subs:
        result = spool / "done" / name / "result"
        check(result / "status.json", schemas["status"], StatusDocument)
        for path in [*result.glob("*.json"), *result.glob("tests/*.json")]:
            if path.name != "status.json":
                check(path, schemas["stage"], StageDocument)
                documents += 1
    assert documents >= 6  # plain's run, broken's compile, judged's compile, checker and 3 tests
    judged = json.loads((spool / "done/judged/result/tests/half.json").read_text())
    assert judged["checker"]["stage"] == "tests/half/checker"  # the nested stage document was checked too


@pytest.mark.nix
def test_build_records_and_dependencies_fit_their_schemas(
    spool: Path, tmp_path: Path, executors: Any, builders: Any
) -> None:
    need_nix()
    schemas = exported(tmp_path)
    nix_config(spool)
    builders(spool)
    executors(spool)
    drop(spool, make_submission(tmp_path, "deps", {"dependencies": ["hello"], "run": "hello"}), "deps")
    wait_done(spool, "deps", timeout=180)
    check(spool / "done/deps/result/dependencies.json", schemas["dependencies"], DependenciesDocument)
    status = json.loads((spool / "done/deps/result/status.json").read_text())
    assert status["stages"]["dependencies"]["status"] == "ok" and "run" in status["stages"]
    (record,) = (spool / "builds" / "done").glob("*/result.json")
    check(record, schemas["build"], BuildRecord)


def test_the_page_shows_what_status_json_tells(tmp_path: Path) -> None:
    """The submission page reads status.json through its model: the judge's progress on a running
    submission, failed subtasks and the system's reason on a finished one."""
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    drop(paths.root, make_submission(tmp_path / "work", "job", {"run": "true"}), "job")
    identity = WorkerIdentity.make("executor", "testhost")
    claim = SpoolQueue(paths.submissions, identity, log_name=ATTEMPTS_LOG).claim("job")
    assert claim is not None
    reporter = Reporter(claim, identity)
    reporter.start()
    reporter.transition(State.TESTING, test="t2", tests_done=1, tests_total=3, verdicts={"accepted": 1})
    regenerate(paths, StatusPageConfig(interval=1.0, recent=50))
    assert 'id="progress">1 of 3, now t2<' in (paths.status / "live" / "job.html").read_text()

    reporter.finish(State.ERROR, reason="test t3: the checker crashed", failed_subtasks=["second"])
    claim.commit()
    regenerate(paths, StatusPageConfig(interval=1.0, recent=50))
    page = (paths.status / "s" / "job.html").read_text()
    assert "Reason: test t3: the checker crashed" in page and "<dd>second</dd>" in page
    status = json.loads((paths.submissions.done / "job" / "result" / "status.json").read_text())
    assert "test" not in status and status["tests_total"] == 3  # the test being judged is gone at the end
