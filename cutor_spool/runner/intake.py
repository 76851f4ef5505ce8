"""From a submission directory to a `Plan`, or to the complete list of what is wrong with it.

Every problem is collected, not just the first: the YAML's fields (with their paths), the files
of the directory, the limits against the spool's maximum, the files the YAML refers to. A bad
submission never raises: it yields problems, and the executor finalises it as `invalid`.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from cutor_spool import languages
from cutor_spool.config import SpoolConfig, StageKind
from cutor_spool.limits import Limits
from cutor_spool.runner.stage_limits import exec_checks, resolved_limits
from cutor_spool.runner.tree import Problem, Tree, read_file, walk
from cutor_spool.submission import NixExpression, ScriptFile, Submission
from cutor_spool.watcher.callbacks import url_problem
from cutor_spool.watcher.priority import lane_value
from cutor_spool.yamlload import YamlProblem, load_yaml

YAML_NAME = "submission.yaml"
MAX_YAML = 16 * 1024 * 1024
CONVENTIONAL = {"compile": "compile.sh", "run": "run.sh"}
# pydantic names the member of a union in an error's location (`compile.str`, `compile.ScriptFile`);
# a reader wants the field's path only.
_UNION_TAG = re.compile(
    r"^(str|int|float|bool|text|mapping|list|list\[.*|dict\[.*|function-.*|constrained-.*|literal\[.*|enum|"
    r"ScriptFile|NixExpression|CheckerSpec|CheckerKind|LimitsSpec|TestCase|Subtask|InlineFile)$"
)


@dataclass(frozen=True)
class Script:
    """A stage's script: inline text, or a file of the submission (run from /work). `shebang` is
    decided here, from the spool entry, so that nothing later has to look inside /work (which the
    job controls once a stage has run) with root's privileges."""

    text: str | None = None
    file: str | None = None
    shebang: bool = False


@dataclass(frozen=True)
class Plan:
    submission: Submission
    tree: Tree
    workdir_files: tuple[str, ...]  # directory files copied into /work
    inline_files: tuple[tuple[str, bytes, bool], ...]  # (name, content, executable)
    compile: Script | None
    run: Script | None
    stdin: bytes
    limits: dict[StageKind, Limits]
    test_limits: tuple[Limits, ...] = ()
    hidden: frozenset[str] = field(default_factory=frozenset)  # spool-side files: never in /work
    # A program checker: its scripts and every file it needs (copied into the slot's aux directory
    # from the spool entry, never through /work).
    checker_compile: Script | None = None
    checker_run: Script | None = None
    checker_files: tuple[str, ...] = ()
    # The files of the problem's generator and function grader (copied into aux, never into /work).
    program_files: tuple[str, ...] = ()

    def executable(self, name: str) -> bool:
        """Scripts with `#!` get the exec bit when copied in (never chmod inside /work later)."""
        return any(s is not None and s.file == name and s.shebang for s in (self.compile, self.run))

    @property
    def judged(self) -> bool:
        return self.submission.tests is not None


@dataclass(frozen=True)
class Intake:
    plan: Plan | None
    problems: tuple[Problem, ...]
    raw: dict[str, object] | None = None


def _loc(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, str) and _UNION_TAG.match(item) and not (i and loc[i - 1] == "env"):
            continue
        parts.append(str(item))
    return ".".join(parts) or "(top level)"


def validation_problems(exc: ValidationError) -> list[Problem]:
    grouped: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of submission.yaml)"
        grouped.setdefault(_loc(err["loc"]), []).append(msg)
    problems = []
    for where, messages in grouped.items():
        unique = list(dict.fromkeys(messages))
        text = unique[0] if len(unique) == 1 else "expected one of the accepted forms: " + "; or ".join(unique)
        problems.append(Problem(where, text))
    return problems


# A one-word stage value with a script's extension and no directory: meant as a file's name (a
# command on PATH rarely ends in .sh or .py, and a shell would not find one in /work anyway).
_LOOKS_LIKE_A_SCRIPT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.(?:sh|bash|py|pl|rb|js|lua|php|R|jl)")


def _script(value: str | ScriptFile | None, stage: str, names: set[str], problems: list[Problem]) -> Script | None:
    if isinstance(value, ScriptFile):
        if value.file not in names:
            problems.append(Problem(f"{stage}.file", f"{value.file!r} is not a file of the submission"))
        return Script(file=value.file)
    if value is None:
        conventional = CONVENTIONAL.get(stage)
        return Script(file=conventional) if conventional in names else None
    stripped = value.strip()
    if "\n" not in stripped and stripped in names:
        return Script(file=stripped)  # `run: run.sh` names a file of the submission
    if _LOOKS_LIKE_A_SCRIPT.fullmatch(stripped):  # `run: run.sh` with no run.sh: it would fail as "not found"
        problems.append(
            Problem(
                stage,
                f"{stripped!r} names no file of the submission (name an existing file, write "
                f"`./{stripped}` if an earlier stage makes it, or `{{file: {stripped}}}`)",
            )
        )
    return Script(text=value)


def _with_shebang(script: Script | None, head: Callable[[str], bytes]) -> Script | None:
    if script is None or script.file is None:
        return script
    return Script(file=script.file, shebang=head(script.file) == b"#!")


def read_submission(root: Path, config: SpoolConfig, *, submitter: int | None = None) -> Intake:
    """`submitter`: the uid the files are read for (see tree.py: what it could not read is refused)."""
    problems: list[Problem] = []
    limits = {"max_files": config.max_files, "max_size": config.max_submission_size}
    tree = walk(root, **limits, problems=problems, submitter=submitter)
    names = set(tree.files)
    raw: object = None
    if YAML_NAME not in names:
        problems.append(Problem(YAML_NAME, "is missing: every submission needs one"))
        return Intake(None, tuple(problems))
    try:
        text = read_file(root, YAML_NAME, MAX_YAML).decode("utf-8")
        raw = load_yaml(text)
    except UnicodeDecodeError as exc:
        problems.append(Problem(YAML_NAME, f"is not valid UTF-8 (byte {exc.start})"))
    except YamlProblem as exc:
        problems.append(Problem(YAML_NAME, f"is not valid YAML: {exc}"))
    except OSError as exc:
        problems.append(Problem(YAML_NAME, f"cannot be read: {exc}"))
    if problems and raw is None:
        return Intake(None, tuple(problems))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(Problem(YAML_NAME, f"must be a mapping of keys to values, not a {type(raw).__name__}"))
        return Intake(None, tuple(problems))
    try:
        sub = Submission.model_validate(raw, context={"maximum": config.limits.resolved_maximum()})
    except ValidationError as exc:
        problems.extend(validation_problems(exc))
        return Intake(None, tuple(problems), raw)
    plan = _plan(root, sub, tree, config, problems)
    return Intake(None if problems else plan, tuple(problems), raw)


def plan_directory(root: Path, sub: Submission, config: SpoolConfig, *, hidden: frozenset[str] = frozenset()) -> Intake:
    """A plan for a directory whose settings come from elsewhere than its own submission.yaml (a
    deployment's bundle, unpacked, with its spec's manifest): the same walk and checks. `hidden`
    names files that never enter /work (the deployment's own deployment.yaml)."""
    problems: list[Problem] = []
    tree = walk(root, max_files=config.max_files, max_size=config.max_submission_size, problems=problems)
    plan = _plan(root, sub, tree, config, problems, also_hidden=hidden)
    return Intake(None if problems else plan, tuple(problems))


@dataclass
class _Files:
    """The directory's files as the YAML refers to them: which exist (a missing one is a problem)
    and which are spool-side only (`hidden`: the YAML, test data, the checker's files)."""

    names: set[str]
    problems: list[Problem]
    hidden: set[str] = field(default_factory=lambda: {YAML_NAME})

    def must_exist(self, where: str, name: str | None, *, hide: bool = True) -> None:
        if name is None:
            return
        if name not in self.names:
            self.problems.append(Problem(where, f"{name!r} is not a file of the submission"))
        elif hide:
            self.hidden.add(name)


def _inline_files(sub: Submission, tree: Tree, problems: list[Problem]) -> list[tuple[str, bytes, bool]]:
    names = set(tree.files)
    inline: list[tuple[str, bytes, bool]] = []
    for i, item in enumerate(sub.files):
        try:
            data = item.decoded()
        except (ValueError, binascii.Error) as exc:
            problems.append(Problem(f"files.{i}.content", f"is not valid {item.encoding}: {exc}"))
            continue
        if item.name in names or any(item.name == n for n, _, _ in inline):
            problems.append(Problem(f"files.{i}.name", f"{item.name!r} is given twice"))
        elif any(item.name.startswith(d + "/") for d in names) or item.name in tree.dirs:
            problems.append(Problem(f"files.{i}.name", f"{item.name!r} collides with a file or directory"))
        inline.append((item.name, data, item.executable))
    return inline


def _data_files(sub: Submission, files: _Files) -> None:
    """The files that the dependencies, stdin and tests name."""
    if isinstance(sub.dependencies, NixExpression):
        files.must_exist("dependencies.nix", sub.dependencies.nix)
    files.must_exist("stdin_file", sub.stdin_file, hide=False)
    for i, test in enumerate(sub.tests or []):
        files.must_exist(f"tests.{i}.input_file", test.input_file)
        files.must_exist(f"tests.{i}.output_file", test.output_file)
        if test.output is None and test.output_file is None and sub.checker_spec().type != "program":
            files.problems.append(Problem(f"tests.{i}", "needs `output` or `output_file` (or a program checker)"))


def _program_files(sub: Submission, tree: Tree, files: _Files, where: str) -> set[str]:
    """The files of a problem's program (`where`: the `checker`, the `generator`, the `function`
    grader), all hidden from the submission's own stages."""
    program = sub.checker_spec() if where == "checker" else getattr(sub, where)
    found: set[str] = set()
    for i, name in enumerate(program.files if program is not None else []):
        if name in tree.dirs:  # a directory stands for every file under it
            inside = {n for n in files.names if n.startswith(name + "/")}
            files.hidden.update(inside)
            found.update(inside)
        else:
            files.must_exist(f"{where}.files.{i}", name)
            found.add(name)
    return found


def _language(sub: Submission, config: SpoolConfig, every: set[str], problems: list[Problem]) -> Submission:
    """`sub` with its `language:` preset under it (languages.py); an unknown one is a problem."""
    if sub.language is None:
        return sub
    table = config.languages.table()
    found = table.resolve(sub.language)
    if found is None:
        known = ", ".join(table.known())
        problems.append(Problem("language", f"{sub.language!r} is not a language of this spool; it knows: {known}"))
        return sub
    lang, preset = found
    own_files = {stage for stage, name in CONVENTIONAL.items() if name in every}
    applied = languages.apply(sub, preset, own_files=own_files, maximum=config.limits.resolved_maximum())
    if applied.source_needed and preset.source not in every:
        problems.append(
            Problem(
                "language",
                f"{lang} compiles or runs {preset.source!r}, which is no file of the submission (name the "
                f"program {preset.source}, or give your own compile and run)",
            )
        )
    return applied.submission


def _policy_problems(sub: Submission, config: SpoolConfig) -> list[Problem]:
    """What the spool's settings refuse: network, a notify URL, a priority above its maximum."""
    problems = []
    if sub.network and not config.allow_network:
        problems.append(Problem("network", "this spool does not allow network access"))
    notify_problem = url_problem(sub.notify, config.notify) if sub.notify is not None else None
    if notify_problem is not None:
        problems.append(Problem("notify", notify_problem))
    if lane_value(sub.priority) > lane_value(config.max_priority):
        problems.append(
            Problem("priority", f"{sub.priority!r} is above this spool's max_priority ({config.max_priority})")
        )
    return problems


def _plan(
    root: Path,
    sub: Submission,
    tree: Tree,
    config: SpoolConfig,
    problems: list[Problem],
    *,
    also_hidden: frozenset[str] = frozenset(),
) -> Plan:
    names = set(tree.files)
    files = _Files(names, problems)
    files.hidden.update(also_hidden & names)
    inline = _inline_files(sub, tree, problems)
    _data_files(sub, files)
    checker = sub.checker_spec()
    checker_files = _program_files(sub, tree, files, "checker")
    program_files = _program_files(sub, tree, files, "generator") | _program_files(sub, tree, files, "function")
    program_files -= checker_files  # shared with the checker: placed in aux once, by the checker
    hidden = files.hidden

    every = names | {n for n, _, _ in inline}
    heads = {n: d[:2] for n, d, _ in inline}
    sub = _language(sub, config, every, problems)

    def head(name: str) -> bytes:
        if name in heads:
            return heads[name]
        try:
            return read_file(root, name, tree.files[name].size)[:2]
        except (OSError, KeyError):
            return b""

    compile_script = _with_shebang(_script(sub.compile, "compile", every, problems), head)
    run_script = _with_shebang(_script(sub.run, "run", every, problems), head)
    # an output-only task runs nothing; with a language, it has run (or the language is the problem)
    if run_script is None and sub.grader != "output_only" and sub.language is None:
        problems.append(Problem("run", "nothing to run: give `run` (a script or a file name) or add run.sh"))
    # The checker's scripts may only name files of the directory: inline `files` go to /work.
    checker_compile = _with_shebang(_script(checker.compile, "checker.compile", names, problems), head)
    checker_run = _with_shebang(_script(checker.run, "checker.run", names, problems), head)
    for script in (checker_compile, checker_run):
        if script is not None and script.file is not None and script.file in names:
            hidden.add(script.file)
            checker_files.add(script.file)
    for stage, script in (("compile", compile_script), ("run", run_script)):
        if script is not None and script.file in hidden:
            problems.append(Problem(stage, f"{script.file!r} is test data or the checker's: it never enters /work"))
    problems.extend(_policy_problems(sub, config))
    stdin = b"" if sub.stdin is None else sub.stdin.encode("utf-8", "surrogatepass")
    stages, test_limits = resolved_limits(sub, config)
    problems.extend(exec_checks(sub, stages, test_limits, compiled=compile_script is not None))
    return Plan(
        submission=sub,
        tree=tree,
        workdir_files=tuple(sorted(n for n in names if n not in hidden)),
        inline_files=tuple(inline),
        compile=compile_script,
        run=run_script,
        stdin=stdin,
        limits=stages,
        test_limits=test_limits,
        hidden=frozenset(hidden),
        checker_compile=checker_compile,
        checker_run=checker_run,
        checker_files=tuple(sorted(checker_files)),
        program_files=tuple(sorted(program_files)),
    )
