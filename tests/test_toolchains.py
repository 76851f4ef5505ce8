"""The toolchains a judge installs from its distribution (Debian 12) compile and run real submissions
in the sandbox (issue 15): one case per language in tests/toolchains/, each a hello-world that reads
two integers from stdin and prints their sum, compiled and judged by a real executor on bubblewrap
(the host's /usr, the /etc rule of docs/security.md) and, for the languages its image has, on
Docker. Every case asserts the verdict and the bytes of its tests' stdout.

The toolchains are installed by scripts/setup.sh --tests; a missing one skips its case locally and
fails it in CI (conftest.need)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, ExecutorProcess, drop, make_submission, need, result, wait_done, write_config
from docker_image.fixtures import IMAGE, start_engine_and_build

SOURCES = Path(__file__).parent / "toolchains"


@dataclass(frozen=True)
class Language:
    tool: str  # the program that must be installed (an absolute path, or a name on PATH)
    compile: str | None
    run: str
    docker: bool = False  # does the Docker test image (tests/docker_image/build.sh) have it?


LANGUAGES = {
    "c": Language("gcc", "gcc -O2 -o main main.c", "./main", docker=True),
    "cpp": Language("g++", "g++ -O2 -o main main.cpp", "./main", docker=True),
    "python3": Language("python3", "python3 -m py_compile main.py", "python3 main.py", docker=True),
    "pypy3": Language("pypy3", "pypy3 -m py_compile main.py", "pypy3 main.py"),
    "java": Language("javac", "javac Main.java", "java -Xss64m Main"),
    "go": Language("go", "go build -o main main.go", "./main"),
    "pascal": Language("fpc", "fpc -O2 -omain main.pas", "./main"),
    "nodejs": Language("node", "node --check main.js", "node main.js"),
    "perl": Language("perl", "perl -c main.pl", "perl main.pl"),
    "ruby": Language("ruby", "ruby -c main.rb", "ruby main.rb"),
    # Debian's rustc, not a rustup one that may be first on PATH.
    "rust": Language("/usr/bin/rustc", "/usr/bin/rustc -O -o main main.rs", "./main"),
    "nasm": Language("nasm", "nasm -f elf64 -o main.o main.asm && gcc -o main main.o", "./main", docker=True),
}
TESTS = [
    {"name": "small", "input": "1 2\n", "output": "Hello, world!\n3\n"},
    {"name": "large", "input": "2000000000 2000000000\n", "output": "Hello, world!\n4000000000\n"},
]
BACKENDS = ["bubblewrap", pytest.param("docker", marks=pytest.mark.slow)]


def installed(language: Language) -> bool:
    return shutil.which(language.tool) is not None


@dataclass
class Run:
    spool: Path
    backend: str
    cases: list[str]
    executor: ExecutorProcess
    log: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module", params=BACKENDS)
def judged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Every installed language's case, judged at once by one executor."""
    backend = request.param
    if backend == "docker":
        need((problem := start_engine_and_build()) is None, problem or "")
    base = tmp_path_factory.mktemp(f"toolchains-{backend}")
    spool = base / "spool"
    subprocess.run([*CLI, "--spool", str(spool), "init"], check=True, capture_output=True)
    write_config(spool, backend=backend, docker={"image": IMAGE})
    cases = [name for name, lang in LANGUAGES.items() if installed(lang) and (backend == "bubblewrap" or lang.docker)]
    executor = ExecutorProcess(spool, ["executor", "--concurrency", "2"], base / "executor.log")
    for name in cases:
        lang = LANGUAGES[name]
        spec: dict[str, Any] = {"run": lang.run, "tests": TESTS}
        if lang.compile:
            spec["compile"] = lang.compile
        files = {p.name: p.read_bytes() for p in (SOURCES / name).iterdir()}
        drop(spool, make_submission(base / "cases", name, spec, files), name)
    try:
        wait_done(spool, cases, timeout=600)
    finally:
        executor.stop()
    yield Run(spool, backend, cases, executor)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first case waits for the whole matrix (the fixture)
@pytest.mark.parametrize("language", list(LANGUAGES))
def test_toolchain(judged: Run, language: str) -> None:
    lang = LANGUAGES[language]
    if judged.backend == "docker" and not lang.docker:
        pytest.skip(f"the Docker test image has no {language} (docs/docker.md)")
    need(installed(lang), f"{lang.tool} is not installed (scripts/setup.sh --tests installs it)")
    entry = judged.spool / "done" / language / "result"
    status = result(judged.spool, language)
    compiled = json.loads((entry / "compile.json").read_text()) if (entry / "compile.json").exists() else {}
    hint = f"compile stderr: {compiled.get('stderr', '')[-1500:]}"
    assert (status["state"], status.get("outcome")) == ("done", "accepted"), f"{language}: {status}; {hint}"
    assert status["tests"] == {"small": "accepted", "large": "accepted"}
    for test in TESTS:
        record = json.loads((entry / "tests" / f"{test['name']}.json").read_text())
        assert record["stdout"].encode() == test["output"].encode(), f"{language}/{test['name']}: {record}"
