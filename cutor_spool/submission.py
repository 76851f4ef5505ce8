"""`submission.yaml`: the schema of a submission, in one place.

Every field is optional unless said; unknown keys are an error. `cutor-spool schema` prints this
model as JSON Schema so that editors can check submission files as they are written. What the
fields *mean* for a directory on disk (which files exist, what is copied into the sandbox) is
decided in `intake.py`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from cutor_spool.limits import LimitsSpec

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)
# A nixpkgs attribute path: dot-separated identifiers, as Nix spells them (`python3Packages.numpy`,
# `gcc13`, `haskellPackages.QuickCheck_2_14`). Never spliced into Nix code: the builder passes the
# path as data and looks each part up with `builtins.getAttr`.
ATTR_PATH_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*(\.[A-Za-z_][A-Za-z0-9_'-]*){0,7}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_TEXT = 16 * 1024 * 1024


def _id(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid name: use letters, digits, '_' and '-' (at most 128)")
    return value


def _attr_path(value: str) -> str:
    if not ATTR_PATH_RE.match(value):
        raise ValueError(f"{value!r} is not a nixpkgs attribute path (like gcc or python3Packages.numpy)")
    return value


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not a valid environment variable name")
    return value


def relative_name(value: str) -> str:
    """A file name relative to the submission: normalised, never absolute, never escaping."""
    if not value or "\x00" in value:
        raise ValueError("a file name must be non-empty and contain no NUL")
    if value.startswith("/"):
        raise ValueError(f"{value!r} is absolute: names are relative to the submission directory")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"{value!r} names the directory itself")
    if ".." in parts:
        raise ValueError(f"{value!r} escapes the submission directory")
    if any(len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts) or len(value) > 4096:
        raise ValueError(f"{value!r} is too long")
    return "/".join(parts)


Id = Annotated[str, AfterValidator(_id)]
# A priority lane (watcher/priority.py): a name, or a number from -100 (last) to 100 (first).
Priority = Literal["high", "normal", "low"] | Annotated[int, Field(ge=-100, le=100, strict=True)]
AttrPath = Annotated[str, AfterValidator(_attr_path)]
Text = Annotated[str, Field(max_length=MAX_TEXT), AfterValidator(_no_nul)]
RelName = Annotated[str, AfterValidator(relative_name)]
EnvName = Annotated[str, AfterValidator(_env_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Encoding(StrEnum):
    UTF8 = "utf8"
    BASE64 = "base64"
    HEX = "hex"


class InlineFile(_Strict):
    name: RelName
    content: Annotated[str, Field(max_length=MAX_TEXT)]
    encoding: Encoding = Encoding.UTF8
    executable: bool = False

    def decoded(self) -> bytes:
        """The file's bytes (ValueError, binascii.Error is one, if not valid in its encoding)."""
        if self.encoding == Encoding.BASE64:
            return base64.b64decode(self.content.encode("ascii"), validate=True)
        if self.encoding == Encoding.HEX:
            return binascii.unhexlify("".join(self.content.split()))
        return self.content.encode("utf-8", "surrogatepass")


def _shape(value: object) -> str | None:
    """Which member of a string-or-mapping union a value is meant for (None: neither)."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict | BaseModel):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return None


class NixExpression(_Strict):
    nix: RelName = Field(description="a Nix file in the directory (for example cutor.nix)")


class ScriptFile(_Strict):
    file: RelName


# One clear error per union instead of one per member ("should be a valid string; or a valid
# dictionary or instance of ScriptFile"): the value's shape picks the member.
ScriptValue = Annotated[
    Annotated[Text, Tag("text")] | Annotated[ScriptFile, Tag("mapping")],
    Discriminator(
        _shape, custom_error_type="script", custom_error_message="expected a shell script (a string) or {file: NAME}"
    ),
]
Dependencies = Annotated[
    Annotated[list[AttrPath], Tag("list")] | Annotated[NixExpression, Tag("mapping")],
    Discriminator(
        _shape,
        custom_error_type="dependencies",
        custom_error_message="expected a list of nixpkgs attribute paths or {nix: FILE}",
    ),
]


class StageLimitsSpec(_Strict):
    dependencies: LimitsSpec | None = None
    compile: LimitsSpec | None = None
    run: LimitsSpec | None = None
    tests: LimitsSpec | None = Field(default=None, description="every test's limits, over the run limits")
    checker: LimitsSpec | None = None


class CheckerKind(StrEnum):
    EXACT = "exact"
    TOKENS = "tokens"
    LINES = "lines"
    FLOAT = "float"
    PROGRAM = "program"


# The default checker is `lines` (trailing whitespace and trailing blank lines ignored, as CMS's
# white-diff): `output: "3"` in YAML must accept a program that prints "3\n". `exact` is there for
# problems where every byte counts. Float tolerances default to 1e-6, DMOJ's default precision.
DEFAULT_CHECKER = CheckerKind.LINES


ZeroScore = Literal["accepted", "wrong_answer"]


class CheckerSpec(_Strict):
    type: CheckerKind = DEFAULT_CHECKER
    abs_tol: float = Field(default=1e-6, ge=0, description="float checker: absolute tolerance")
    rel_tol: float = Field(default=1e-6, ge=0, description="float checker: relative tolerance")
    compile: ScriptValue | None = Field(default=None, description="program checker: how to build it")
    run: ScriptValue | None = Field(default=None, description="program checker: how to run it")
    files: list[RelName] = Field(default_factory=list, description="program checker: its files")
    zero_score: ZeroScore = Field(
        default="accepted",
        description="program checker: exit 0 with a score of 0 is `accepted` with 0 points (DMOJ), or "
        "`wrong_answer` (CMS's comparators, which always exit 0)",
    )

    @model_validator(mode="after")
    def _program_has_run(self) -> CheckerSpec:
        if self.type == CheckerKind.PROGRAM and self.run is None:
            raise ValueError("a program checker needs `run`")
        if self.type != CheckerKind.PROGRAM and (self.run or self.compile or self.files):
            raise ValueError("`run`, `compile` and `files` belong to a program checker only")
        if self.type != CheckerKind.PROGRAM and self.zero_score != "accepted":
            raise ValueError("`zero_score` belongs to a program checker only")
        return self


Arg = Annotated[str, Field(max_length=65536), AfterValidator(_no_nul)]


class ProblemProgram(_Strict):
    """A program of the problem (a test generator, a function problem's grader): its files never
    enter /work; it is built and run in the slot's aux directory (docs/judge.md)."""

    files: list[RelName] = Field(default_factory=list, description="its files or directories")
    compile: ScriptValue | None = Field(default=None, description="how to build it (in aux)")
    run: ScriptValue | None = Field(default=None, description="generator: how to run it, with a test's `generate`")
    provides: list[RelName] = Field(
        default_factory=list, description="function grader: built files handed to `link` and each test at /run/cutor"
    )
    link: ScriptValue | None = Field(default=None, description="function grader: links them with the submission")
    limits: LimitsSpec | None = Field(default=None, description="its stages' limits, over the compile limits")


class TestCase(_Strict):
    name: Id | None = None
    input: Text | None = None
    input_file: RelName | None = None
    generate: list[Arg] | None = Field(
        default=None, max_length=4096, description="the input is the `generator`'s stdout with these arguments"
    )
    output: Text | None = None
    output_file: RelName | None = None
    points: float = Field(
        default=1.0, ge=0, description="its points outside subtasks; its weight inside a `sum` subtask"
    )
    limits: LimitsSpec | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> TestCase:
        if sum(x is not None for x in (self.input, self.input_file, self.generate)) > 1:
            raise ValueError("give one of `input`, `input_file` and `generate`")
        if self.output is not None and self.output_file is not None:
            raise ValueError("give `output` or `output_file`, not both")
        return self


class Scoring(StrEnum):
    SUM = "sum"
    GROUP_MIN = "group_min"


class Subtask(_Strict):
    name: Id
    points: float = Field(ge=0)
    tests: list[Id] = Field(min_length=1, description="names of the tests in this subtask")
    scoring: Scoring | None = Field(default=None, description="defaults to the submission's `scoring`")
    run_all: bool = Field(
        default=False, description="run every test, even once a `group_min` subtask already scores 0 (docs/judge.md)"
    )
    depends_on: list[Id] = Field(
        default_factory=list, max_length=1000, description="subtasks that must pass: if one fails, this scores 0"
    )


def _check_dependencies(subtasks: list[Subtask]) -> None:
    """Every `depends_on` names another subtask, and they form no cycle."""
    known = {s.name: s for s in subtasks}
    for subtask in subtasks:
        unknown = [d for d in subtask.depends_on if d not in known]
        if unknown:
            raise ValueError(f"subtask {subtask.name!r} depends on unknown subtasks: {', '.join(unknown)}")
        _unique(f"subtask {subtask.name!r} names a prerequisite twice", subtask.depends_on)
    done: set[str] = set()
    for start in subtasks:  # depth-first, iterative: 10,000 subtasks must not hit the recursion limit
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start.name, 0)]
        on_path: set[str] = set()
        while stack:
            name, at = stack.pop()
            if at == 0:
                if name in on_path:
                    cycle = [*path[path.index(name) :], name]
                    raise ValueError(f"subtasks depend on each other in a cycle: {' -> '.join(cycle)}")
                if name in done:
                    continue
                path.append(name)
                on_path.add(name)
            deps = known[name].depends_on
            if at < len(deps):
                stack.append((name, at + 1))
                stack.append((deps[at], 0))
            else:
                path.pop()
                on_path.discard(name)
                done.add(name)


def _check_generator(generator: ProblemProgram | None, tests: list[TestCase]) -> None:
    if generator is not None and generator.run is None:
        raise ValueError("a `generator` needs `run`")
    if generator is None and any(t.generate is not None for t in tests):
        raise ValueError("tests with `generate` need a `generator`")


def _unique(message: str, names: list[str]) -> None:
    """Raises `message: the repeated names` if any name is repeated. A Counter, not a pairwise
    scan: 10,000 tests must not cost a quadratic scan at intake."""
    repeated = sorted(n for n, k in Counter(names).items() if k > 1)
    if repeated:
        raise ValueError(f"{message}: {', '.join(repeated)}")


class Submission(_Strict):
    """A submission directory's `submission.yaml`."""

    language: Id | None = Field(
        default=None,
        description="a preset of the spool's `languages:` table (`cutor-spool languages`): its compile and run "
        "scripts, limits and dependencies, under this file's own",
    )
    dependencies: Dependencies = Field(default_factory=list, description="nixpkgs attribute paths, or {nix: FILE}")
    compile: ScriptValue | None = Field(
        default=None, description="a shell script, or the name of a file (compile.sh by convention)"
    )
    run: ScriptValue | None = Field(
        default=None, description="a shell script, or the name of a file (run.sh by convention)"
    )
    files: list[InlineFile] = Field(default_factory=list, max_length=10_000)
    stdin: Text | None = None
    stdin_file: RelName | None = None
    args: list[Annotated[str, Field(max_length=65536), AfterValidator(_no_nul)]] = Field(
        default_factory=list, max_length=4096
    )
    env: dict[EnvName, Annotated[str, Field(max_length=65536), AfterValidator(_no_nul)]] = Field(default_factory=dict)
    limits: StageLimitsSpec = StageLimitsSpec()
    network: bool = False
    tests: list[TestCase] | None = Field(
        default=None, min_length=1, max_length=10_000, description="judge mode: each test's input and expected output"
    )
    checker: CheckerKind | CheckerSpec | None = None
    subtasks: list[Subtask] | None = Field(default=None, max_length=10_000)
    scoring: Scoring = Field(
        default=Scoring.SUM, description="sum: partial credit per test; group_min: a group scores its worst test"
    )
    short_circuit: bool = Field(default=False, description="stop judging at the first failed test")
    grader: Id | None = Field(
        default=None, description="how it is run and judged (docs/judge.md, Graders): `batch` with `tests`, else `run`"
    )
    processes: int = Field(default=1, ge=1, le=8, description="communication: how many copies talk to the manager")
    generator: ProblemProgram | None = Field(default=None, description="makes the inputs of tests with `generate`")
    function: ProblemProgram | None = Field(default=None, description="`grader: function`: the problem's main")
    priority: Priority = Field(
        default="normal", description="its lane: high, normal, low or -100..100, up to the spool's max_priority"
    )
    notify: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="a URL that gets the final status.json (POST) when it ends, if the spool allows"
    )
    problem: Id | None = Field(
        default=None, description="the problem it answers: `cutor-spool rerun --problem DIR` rejudges all of them"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Submission:
        if self.stdin is not None and self.stdin_file is not None:
            raise ValueError("give `stdin` or `stdin_file`, not both")
        if self.tests is None:
            if self.subtasks is not None or self.checker is not None or self.generator is not None:
                raise ValueError("`subtasks`, `checker` and `generator` need `tests`")
            return self
        if self.stdin is not None or self.stdin_file is not None:
            raise ValueError("`stdin` and `stdin_file` are for plain runs: each test has its own `input`")
        _check_generator(self.generator, self.tests)
        names = self.test_names()
        _unique("test names must be unique", names)
        _unique("subtask names must be unique", [s.name for s in self.subtasks or []])
        known = set(names)
        for subtask in self.subtasks or []:
            unknown = [t for t in subtask.tests if t not in known]
            if unknown:
                raise ValueError(f"subtask {subtask.name!r} names unknown tests: {', '.join(unknown)}")
            _unique(f"subtask {subtask.name!r} names tests twice", subtask.tests)
        _check_dependencies(self.subtasks or [])
        return self

    def test_names(self) -> list[str]:
        return [t.name or str(i + 1) for i, t in enumerate(self.tests or [])]

    def checker_spec(self) -> CheckerSpec:
        if isinstance(self.checker, CheckerSpec):
            return self.checker
        return CheckerSpec(type=self.checker or DEFAULT_CHECKER)


def json_schema() -> dict[str, Any]:
    schema = Submission.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cutor-spool submission.yaml"
    return schema
