"""Language presets (issue 15): `language: ID` in submission.yaml takes a compile and a run script,
limits and dependencies from the spool's table (the shipped cutor_spool/languages.yaml with
spool.yaml's `languages:` over it); the submission's own fields win, field by field; an unknown id
is `invalid` with the ids the spool knows. The resolution is tested through the intake every
executor and `cutor-spool submit` use, the listing through the real CLI, and the shipped presets
by real submissions that give nothing but `language:` and the source, judged by a real executor on
bubblewrap (the sources of tests/toolchains/)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLI, ROOT, ExecutorProcess, drop, make_submission, need, result, stage, wait_done, write_config
from test_toolchains import SOURCES, TESTS

from cutor_spool.config import StageKind, load_config
from cutor_spool.errors import ConfigError
from cutor_spool.languages import shipped_table
from cutor_spool.runner.intake import Intake, read_submission

SHIPPED = ["c11", "c17", "cpp17", "cpp20", "python3", "pypy3", "java17", "go", "pascal"]
SHIPPED += ["node", "perl", "ruby", "rust", "nasm"]
# Each shipped preset and the tests/toolchains/ case whose source it runs.
CASES = {
    "c11": "c",
    "c17": "c",
    "cpp17": "cpp",
    "cpp20": "cpp",
    "python3": "python3",
    "pypy3": "pypy3",
    "java17": "java",
    "go": "go",
    "pascal": "pascal",
    "node": "nodejs",
    "perl": "perl",
    "ruby": "ruby",
    "rust": "rust",
    "nasm": "nasm",
}
# The program each needs on the host (as the stage's PATH finds it).
TOOLS = {"c11": "gcc", "c17": "gcc", "cpp17": "g++", "cpp20": "g++", "java17": "javac", "pascal": "fpc"}
TOOLS |= {"python3": "/usr/bin/python3", "pypy3": "pypy3", "go": "go", "node": "node", "perl": "perl"}
TOOLS |= {"ruby": "ruby", "rust": "/usr/bin/rustc", "nasm": "nasm"}


def spool_with(tmp_path: Path, languages: dict[str, Any] | None = None, **config: Any) -> Path:
    root = tmp_path / "spool"
    root.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"version": 1, **config, **({"languages": languages} if languages is not None else {})})
    (root / "spool.yaml").write_text(text)
    return root


def intake(tmp_path: Path, spec: dict[str, Any], files: dict[str, str], spool: Path | None = None) -> Intake:
    config = load_config(spool or spool_with(tmp_path))
    directory = make_submission(tmp_path / "subs", f"s{len(list(tmp_path.glob('subs/*')))}", spec, files)
    return read_submission(directory, config)


def planned(tmp_path: Path, spec: dict[str, Any], files: dict[str, str], spool: Path | None = None) -> Any:
    got = intake(tmp_path, spec, files, spool)
    assert not got.problems, got.problems
    assert got.plan is not None
    return got.plan


# -- the table -------------------------------------------------------------------------------


def test_the_shipped_table_has_the_matrix_and_its_aliases() -> None:
    table = shipped_table()
    assert list(table.presets) == SHIPPED
    for alias, target in {"c": "c17", "cpp": "cpp17", "java": "java17", "python": "python3", "nodejs": "node"}.items():
        found = table.resolve(alias)
        assert found is not None and found[0] == target
    for lang, case in CASES.items():  # each names the file its toolchain case has
        assert (SOURCES / case / table.presets[lang].source).is_file(), lang
    java = table.presets["java17"]
    assert java.limits.run is not None and java.limits.run.address_space == 0  # the JVM reserves eagerly
    assert all(not p.dependencies for p in table.presets.values())  # Debian's packages, the host's /usr


def test_spool_yaml_adds_changes_replaces_and_removes(tmp_path: Path) -> None:
    root = spool_with(
        tmp_path,
        {
            "cpp23": {"base": "cpp20", "name": "C++23", "compile": "g++ -std=c++23 -O2 -o main main.cpp"},
            "java17": {"base": "java17", "limits": {"run": {"memory": "1GiB"}}},  # deep-merged: one key
            "python3": {"source": "sol.py", "run": "python3 sol.py"},  # no base: the whole entry replaced
            "pypy3": None,
            "cpp": {"alias": "cpp20"},
            "kotlin": {
                "source": "main.kt",
                "compile": "kotlinc main.kt -d main.jar",
                "run": "java -jar main.jar",
                "dependencies": ["kotlin"],
            },
        },
    )
    table = load_config(root).languages.table()
    cpp23 = table.presets["cpp23"]
    assert (cpp23.name, cpp23.source, cpp23.run) == ("C++23", "main.cpp", "./main")
    assert cpp23.compile == "g++ -std=c++23 -O2 -o main main.cpp"
    java = table.presets["java17"].limits.run
    assert java is not None and (java.memory, java.processes, java.address_space) == (2**30, 256, 0)
    python3 = table.presets["python3"]
    assert (python3.compile, python3.run, python3.source, python3.version_command) == (
        None,
        "python3 sol.py",
        "sol.py",
        None,
    )
    assert "pypy3" not in table.presets and table.resolve("pypy") is None  # its shipped alias goes with it
    assert table.resolve("cpp") == ("cpp20", table.presets["cpp20"])
    assert table.presets["kotlin"].dependencies == ["kotlin"]
    assert load_config(spool_with(tmp_path / "none")).languages.table() == shipped_table()


@pytest.mark.parametrize(
    ("languages", "message"),
    [
        ({"x": {"source": "a.x", "run": "./a", "sourc": "b"}}, "languages.x.sourc: Extra inputs are not permitted"),
        ({"x": {"source": "a.x", "compile": "make"}}, "x: run: missing: a preset needs it"),
        ({"x": {"run": "./a"}}, "x: source: missing"),
        ({"x": {"alias": "cobol"}}, "x: alias of 'cobol', which is no language here"),
        ({"cpp": {"alias": "c", "run": "./a"}}, "an alias gives nothing but `alias`"),
        ({"cobol": None}, "cobol: null removes a shipped language, but there is none of that id"),
        ({"x": {"base": "cobol", "run": "./a"}}, "x: base 'cobol' is not a shipped language"),
        ({"x": {"source": "/etc/passwd", "run": "./a"}}, "is absolute"),
        ({"x": {"source": "a", "run": "./a", "dependencies": ["not a path"]}}, "not a nixpkgs attribute path"),
        ({"x": {"source": "a", "run": "./a", "limits": {"run": {"memory": "lots"}}}}, "languages.x.limits.run.memory"),
        ({"bad id!": {"source": "a", "run": "./a"}}, "not a valid name"),
    ],
)
def test_a_bad_table_is_a_clear_configuration_error(tmp_path: Path, languages: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(spool_with(tmp_path, languages))
    assert message in str(caught.value)


# -- a submission's language ---------------------------------------------------------------


def test_language_alone_gives_the_presets_scripts_and_limits(tmp_path: Path) -> None:
    java = (SOURCES / "java" / "Main.java").read_text()
    plan = planned(tmp_path, {"language": "java", "tests": TESTS}, {"Main.java": java})
    assert (plan.compile.text, plan.run.text) == ("javac Main.java", "java -Xss64m Main")
    assert plan.submission.language == "java"
    for limits in (plan.limits[StageKind.COMPILE], plan.limits[StageKind.RUN], *plan.test_limits):
        assert (limits.processes, limits.address_space) == (256, 0)
    assert plan.limits[StageKind.COMPILE].cpu_time == 30  # the spool's compile default is still under it


def test_the_submissions_own_fields_win_field_by_field(tmp_path: Path) -> None:
    source = {"main.cpp": "int main(){}"}
    own_run = planned(tmp_path, {"language": "cpp17", "run": "./main --fast"}, source)
    assert (own_run.compile.text, own_run.run.text) == ("g++ -std=c++17 -O2 -o main main.cpp", "./main --fast")
    own_compile = planned(tmp_path, {"language": "cpp17", "compile": "g++ -O0 -o main main.cpp"}, source)
    assert (own_compile.compile.text, own_compile.run.text) == ("g++ -O0 -o main main.cpp", "./main")
    # compile.sh by convention is the submission's own compile too
    conventional = planned(tmp_path, {"language": "cpp17"}, {**source, "compile.sh": "make\n"})
    assert (conventional.compile.file, conventional.run.text) == ("compile.sh", "./main")
    # own compile that makes the source: the preset's run needs no main.py in the directory
    made = planned(tmp_path, {"language": "python3", "compile": "cp gen.py main.py"}, {"gen.py": "print(1)"})
    assert made.run.text == "python3 main.py"
    # limits key by key: the submission's processes, the preset's address_space
    java = {"Main.java": "class Main {}"}
    mixed = planned(tmp_path, {"language": "java17", "limits": {"run": {"processes": 100, "memory": "1GiB"}}}, java)
    run = mixed.limits[StageKind.RUN]
    assert (run.processes, run.memory, run.address_space) == (100, 2**30, 0)


def test_dependencies_come_from_the_preset_unless_the_submission_names_its_own(tmp_path: Path) -> None:
    root = spool_with(tmp_path, {"gcc13": {"base": "c17", "dependencies": ["gcc13"]}})
    source = {"main.c": "int main(void){return 0;}"}
    assert planned(tmp_path, {"language": "gcc13"}, source, root).submission.dependencies == ["gcc13"]
    own = planned(tmp_path, {"language": "gcc13", "dependencies": ["gcc12"]}, source, root)
    assert own.submission.dependencies == ["gcc12"]
    host = planned(tmp_path, {"language": "gcc13", "dependencies": []}, source, root)
    assert host.submission.dependencies == []


def test_a_presets_limits_stay_within_the_spools_maximum(tmp_path: Path) -> None:
    root = spool_with(
        tmp_path,
        limits={"maximum": {"processes": 128, "address_space": "2GiB"}, "default": {"address_space": "1GiB"}},
    )
    java = {"Main.java": "class Main {}"}
    plan = planned(tmp_path, {"language": "java17"}, java, root)
    # lowered to the maximum: 128 processes; address_space cannot be off under a capped maximum
    assert (plan.limits[StageKind.RUN].processes, plan.limits[StageKind.RUN].address_space) == (128, 2 * 2**30)
    asked = intake(tmp_path, {"language": "java17", "limits": {"run": {"processes": 200}}}, java, root)
    assert asked.plan is None and [p.where for p in asked.problems] == ["limits.run.processes"]
    assert "above the spool's maximum" in asked.problems[0].message


def test_an_unknown_language_is_invalid_with_the_known_ids(tmp_path: Path) -> None:
    got = intake(tmp_path, {"language": "cobol"}, {"main.cob": "x"})
    assert got.plan is None
    assert [p.where for p in got.problems] == ["language"]  # and no "nothing to run" beside it
    message = got.problems[0].message
    assert message.startswith("'cobol' is not a language of this spool; it knows: ")
    assert all(lang in message for lang in [*SHIPPED, "cpp", "java"])


def test_a_missing_source_file_is_invalid(tmp_path: Path) -> None:
    got = intake(tmp_path, {"language": "java"}, {"main.java": "class Main {}"})
    assert [str(p) for p in got.problems] == [
        "language: java17 compiles or runs 'Main.java', which is no file of the submission (name the program "
        "Main.java, or give your own compile and run)"
    ]
    inline = planned(tmp_path, {"language": "java", "files": [{"name": "Main.java", "content": "class Main {}"}]}, {})
    assert inline.compile.text == "javac Main.java"


# -- the command line ------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_cli_lists_the_spools_languages(tmp_path: Path) -> None:
    root = spool_with(
        tmp_path, {"c99": {"base": "c17", "name": "C99", "compile": "gcc -std=c99 -o main main.c"}, "pypy3": None}
    )
    done = cli("languages", "--json", "--spool", str(root))
    assert done.returncode == 0, done.stderr
    listed = {row["id"]: row for row in json.loads(done.stdout)}
    assert list(listed) == [*SHIPPED[:5], *SHIPPED[6:], "c99"]
    assert listed["c99"]["compile"] == "gcc -std=c99 -o main main.c" and listed["c99"]["run"] == "./main"
    assert listed["cpp17"]["aliases"] == ["cpp"] and listed["cpp17"]["source"] == "main.cpp"
    assert listed["java17"]["limits"]["run"] == {"processes": 256, "address_space": 0}
    assert "version" not in listed["c17"]
    text = cli("--spool", str(tmp_path / "elsewhere"), "languages")  # no spool.yaml: the shipped table
    assert text.returncode == 0, text.stderr
    assert "cpp17      C++17 (GCC) (also: cpp)" in text.stdout
    assert "           compile: javac Main.java" in text.stdout
    assert "14 language(s)" in text.stdout


def test_cli_versions_are_the_hosts_toolchains(tmp_path: Path) -> None:
    need(shutil.which("g++") is not None, "g++ is not installed")
    expected = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    root = spool_with(tmp_path, {"ghost": {"source": "a", "run": "./a", "version_command": "no-such-compiler -v"}})
    done = cli("--spool", str(root), "languages", "--json", "--versions")
    assert done.returncode == 0, done.stderr
    listed = {row["id"]: row for row in json.loads(done.stdout)}
    assert listed["cpp17"]["version"] == expected
    assert listed["ghost"]["version"].startswith("not available (")


def test_validate_and_submit_refuse_an_unknown_language_locally(tmp_path: Path) -> None:
    root = spool_with(tmp_path, {"cpp": None, "c": None})
    subprocess.run([*CLI, "--spool", str(root), "init"], check=True, capture_output=True)
    directory = make_submission(tmp_path, "sub", {"language": "cpp"}, {"main.cpp": "int main(){}"})
    done = cli("--spool", str(root), "validate", str(directory), "--json")
    assert done.returncode == 3
    (problem,) = json.loads(done.stdout)["errors"]
    assert problem["where"] == "language" and "'cpp' is not a language of this spool" in problem["message"]
    assert "cpp17" in problem["message"]
    done = cli("--spool", str(root), "submit", str(directory))
    assert done.returncode == 3 and "invalid: language: 'cpp' is not a language" in done.stderr
    assert list((root / "incoming").iterdir()) == []  # nothing dropped
    directory.joinpath("submission.yaml").write_text("language: cpp17\n")
    done = cli("--spool", str(root), "validate", str(directory))
    assert done.returncode == 0 and "valid (run, language cpp17;" in done.stdout, done.stdout


def test_cli_refuses_a_bad_table_with_the_entry(tmp_path: Path) -> None:
    root = spool_with(tmp_path, {"x": {"source": "a.x", "compile": "make"}})
    done = cli("--spool", str(root), "languages")
    assert done.returncode == 78
    assert done.stderr == f"configuration error: {root}/spool.yaml: languages: x: run: missing: a preset needs it\n"


# -- real submissions, judged on bubblewrap --------------------------------------------------


@dataclass
class Judged:
    spool: Path
    cases: list[str]


OPERATORS = {"c99": {"base": "c17", "name": "C99", "compile": "gcc -std=c99 -O2 -o main main.c"}}


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judged]:
    """Every shipped preset whose toolchain is installed, plus an operator's own, an unknown
    language, and a submission whose own run wins over its preset's: judged at once."""
    base = tmp_path_factory.mktemp("languages")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, languages=OPERATORS)
    cases = [lang for lang in SHIPPED if shutil.which(TOOLS[lang]) is not None]
    subs = base / "subs"
    for lang in cases:
        files = {p.name: p.read_bytes() for p in (SOURCES / CASES[lang]).iterdir()}
        drop(spool, make_submission(subs, lang, {"language": lang, "tests": TESTS}, files), lang)
    c_source = {"main.c": (SOURCES / "c" / "main.c").read_bytes()}
    drop(spool, make_submission(subs, "c99", {"language": "c99", "tests": TESTS}, c_source), "c99")
    drop(spool, make_submission(subs, "cobol", {"language": "cobol"}, {"main.cob": "DISPLAY 'HI'."}), "cobol")
    py = {"main.py": (SOURCES / "python3" / "main.py").read_bytes()}
    own = {"language": "python", "stdin": "20 22\n", "run": "python3 main.py && echo own-run"}
    drop(spool, make_submission(subs, "own-run", own, py), "own-run")
    drop(spool, ROOT / "examples" / "language-java", "example")
    everything = [*cases, "c99", "cobol", "own-run", "example"]
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    try:
        wait_done(spool, everything, timeout=600)
    finally:
        executor.stop()
    yield Judged(spool, cases)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first case waits for the whole matrix (the fixture)
@pytest.mark.parametrize("lang", [*SHIPPED, "c99"])
def test_a_submission_with_only_a_language_is_compiled_and_judged(judged: Judged, lang: str) -> None:
    if lang != "c99":
        need(lang in judged.cases, f"{TOOLS[lang]} is not installed (scripts/setup.sh --tests installs it)")
    status = result(judged.spool, lang)
    entry = judged.spool / "done" / lang / "result"
    compiled = json.loads((entry / "compile.json").read_text()) if (entry / "compile.json").exists() else {}
    hint = f"compile stderr: {compiled.get('stderr', '')[-1500:]}"
    assert (status["state"], status.get("outcome")) == ("done", "accepted"), f"{lang}: {status}; {hint}"
    assert status["tests"] == {"small": "accepted", "large": "accepted"}
    for test in TESTS:
        record = json.loads((entry / "tests" / f"{test['name']}.json").read_text())
        assert record["stdout"].encode() == test["output"].encode(), f"{lang}/{test['name']}: {record}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_unknown_language_ends_invalid_and_the_worker_carries_on(judged: Judged) -> None:
    status = result(judged.spool, "cobol")
    assert status["state"] == "invalid"
    (problem,) = status["errors"]
    assert problem["where"] == "language"
    assert problem["message"].startswith("'cobol' is not a language of this spool; it knows: asm, c, c11, c17, c99,")
    assert (judged.spool / "done" / "cobol" / "main.cob").read_text() == "DISPLAY 'HI'."  # nothing lost
    assert result(judged.spool, "own-run")["state"] == "done"  # and the others ran


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_submissions_own_run_wins_in_the_sandbox(judged: Judged) -> None:
    status = result(judged.spool, "own-run")
    assert (status["state"], status.get("outcome")) == ("done", "ok"), status
    assert stage(judged.spool, "own-run", "run")["stdout"] == "Hello, world!\n42\nown-run\n"
    assert stage(judged.spool, "own-run", "compile")["exit_code"] == 0  # the preset's py_compile ran


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_example_is_accepted(judged: Judged) -> None:
    need(shutil.which("javac") is not None, "javac is not installed")
    status = result(judged.spool, "example")
    assert (status["state"], status.get("outcome"), status["tests"]) == (
        "done",
        "accepted",
        {"small": "accepted", "large": "accepted"},
    ), status
    assert (
        json.loads((judged.spool / "done" / "example" / "result" / "tests" / "large.json").read_text())["stdout"]
        == "2000000000000\n"
    )
