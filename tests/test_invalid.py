"""Bad input gets a clear error and loses nothing: every broken submission ends `invalid` in done/
with each of its problems listed (with the field's path), and the worker carries on."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, drop, hold, make_submission, result, stage, wait_done, write_config

Builder = Callable[[Path], Path]


def yaml_only(text: str | bytes) -> Builder:
    def build(parent: Path) -> Path:
        directory = parent
        directory.mkdir(parents=True)
        target = directory / "submission.yaml"
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        return directory

    return build


def with_entry(make: Callable[[Path], None], yaml_text: str = "run: echo hi\n") -> Builder:
    def build(parent: Path) -> Path:
        parent.mkdir(parents=True)
        (parent / "submission.yaml").write_text(yaml_text)
        make(parent)
        return parent

    return build


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(7)
)

# (id, how to build it, [(where, part of the message)]) -- each problem must be listed.
CASES: list[tuple[str, Builder, list[tuple[str, str]]]] = [
    ("malformed-yaml", yaml_only("run: [unclosed\nargs: {\n"), [("submission.yaml", "not valid YAML")]),
    ("not-a-mapping", yaml_only("- run\n- echo\n"), [("submission.yaml", "must be a mapping")]),
    ("duplicate-key", yaml_only("run: echo a\nrun: echo b\n"), [("submission.yaml", "duplicate key 'run'")]),
    ("alias-bomb", yaml_only(BOMB + "run: echo hi\n"), [("submission.yaml", "expands to more than")]),
    ("bad-utf8-yaml", yaml_only(b"run: echo \xff\xfe\n"), [("submission.yaml", "not valid UTF-8")]),
    ("missing-yaml", with_entry(lambda d: (d / "submission.yaml").unlink()), [("submission.yaml", "missing")]),
    (
        "wrong-types",
        yaml_only("run: 42\nargs: notalist\nnetwork: maybe\nlimits: {run: {memory: -5, processes: many}}\n"),
        [
            ("run", "string"),
            ("args", "list"),
            ("network", "bool"),
            ("limits.run.memory", "negative"),
            ("limits.run.processes", "integer"),
        ],
    ),
    (
        "unknown-keys",
        yaml_only("run: echo hi\nbogus: 1\nlimits: {run: {ram: 1GiB}}\n"),
        [("bogus", "unknown key"), ("limits.run.ram", "unknown key")],
    ),
    (
        "escaping-names",
        yaml_only(
            "run: echo hi\nfiles: [{name: ../../etc/evil, content: x}, {name: /abs, content: x}]\n"
            "stdin_file: ../outside\n"
        ),
        [("files.0.name", "escapes"), ("files.1.name", "absolute"), ("stdin_file", "escapes")],
    ),
    ("symlink", with_entry(lambda d: os.symlink("/etc/shadow", d / "link")), [("file link", "symbolic link")]),
    ("fifo", with_entry(lambda d: os.mkfifo(d / "pipe")), [("file pipe", "FIFO")]),
    (
        "device",
        with_entry(lambda d: os.mknod(d / "mem", stat.S_IFCHR | 0o600, os.makedev(1, 1))),
        [("file mem", "device file")],
    ),
    (
        "nested-symlink",
        with_entry(lambda d: ((d / "sub").mkdir(), os.symlink("/root", d / "sub" / "home"))),
        [("file sub/home", "symbolic link")],
    ),
    (
        "bad-name-encoding",
        with_entry(lambda d: Path(os.fsdecode(bytes(d) + b"/caf\xe9.txt")).write_text("x")),
        [("file caf", "not valid UTF-8")],
    ),
    (
        "huge-file",
        with_entry(lambda d: (d / "big.bin").write_bytes(b"\0" * (3 << 20))),
        [("file big.bin", "size limit")],
    ),
    (
        "above-maximum",
        yaml_only("run: echo hi\nlimits: {run: {memory: 64GiB, cpu_time: 1h}}\n"),
        [("limits.run.memory", "above the spool's maximum"), ("limits.run.cpu_time", "above the spool's maximum")],
    ),
    ("nothing-to-run", yaml_only("args: [a]\n"), [("run", "nothing to run")]),
    ("network-denied", yaml_only("run: echo hi\nnetwork: true\n"), [("network", "does not allow")]),
    (
        "bad-inline-encoding",
        yaml_only("run: echo hi\nfiles: [{name: a.bin, content: '%%%not base64', encoding: base64}]\n"),
        [("files.0.content", "not valid base64")],
    ),
    (
        "missing-referenced",
        yaml_only("run: {file: nope.sh}\nstdin_file: input.txt\n"),
        [("run.file", "not a file"), ("stdin_file", "not a file")],
    ),
]


@pytest.fixture
def small_spool(spool: Path) -> Path:
    write_config(spool, max_submission_size="2MiB")
    return spool


def test_every_bad_submission_ends_invalid_with_every_problem_listed(
    small_spool: Path, tmp_path: Path, executors: Any
) -> None:
    spool = small_spool
    worker = executors(spool, "--concurrency", "2")
    for name, build, _ in CASES:
        directory = build(tmp_path / "src" / name)
        staging = spool / "tmp" / name
        shutil.move(directory, staging)
        (staging / ".ready").write_text("")
        os.rename(staging, spool / "incoming" / name)
    drop(spool, make_submission(tmp_path, "fine", {"run": "echo still working"}), "fine-after")
    wait_done(spool, [c[0] for c in CASES] + ["fine-after"], timeout=120)
    for name, _, expected in CASES:
        status = result(spool, name)
        assert status["state"] == "invalid", name
        errors = status["errors"]
        for where, message in expected:
            assert any(e["where"].startswith(where) and message.lower() in e["message"].lower() for e in errors), (
                f"{name}: no problem at {where!r} mentioning {message!r} in {errors}"
            )
        assert len(errors) >= len(expected)
    assert stage(spool, "fine-after", "run")["stdout"] == "still working\n"
    assert worker.proc is not None and worker.proc.poll() is None


def test_bad_ids_plain_files_and_duplicates_are_finalised_not_skipped(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    source = make_submission(tmp_path, "ok", {"run": "echo original"})
    drop(spool, source, "taken")
    executors(spool)
    wait_done(spool, "taken")
    # A second submission with the same id, a name that is not an id, and a stray plain file.
    (source / "submission.yaml").write_text("run: echo impostor\n")
    drop(spool, source, "taken")
    shutil.copytree(source, spool / "tmp" / "bad name.v2")
    os.rename(spool / "tmp" / "bad name.v2", spool / "incoming" / "bad name.v2")
    (spool / "incoming" / "notes.txt").write_text("oops")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(list((spool / "done").iterdir())) < 4:
        time.sleep(0.05)
    done = sorted(p.name for p in (spool / "done").iterdir())
    assert len(done) == 4 and list((spool / "incoming").iterdir()) == []
    assert stage(spool, "taken", "run")["stdout"] == "original\n"  # the first one is untouched
    duplicate = next(n for n in done if n.startswith("taken.duplicate-"))
    status = result(spool, duplicate)
    assert status["state"] == "invalid" and status["duplicate_of"] == "taken"
    assert not (spool / "done" / duplicate / "result" / "run.json").exists()  # never run
    originals = {}
    for name in done:
        if name.startswith("badname-"):
            status = result(spool, name)
            assert status["state"] == "invalid" and "not a valid id" in status["errors"][0]["message"]
            originals[status["original_name"]] = name
    assert set(originals) == {"bad name.v2", "notes.txt"}
    assert (spool / "done" / originals["notes.txt"] / "notes.txt").read_text() == "oops"  # nothing lost


def test_cp_r_into_incoming_is_claimed_once_it_settles_and_dot_names_are_ignored(
    spool: Path, tmp_path: Path, executors: Any
) -> None:
    source = make_submission(tmp_path, "plain", {"run": "cat data/input.txt"}, {"data/input.txt": "copied by hand\n"})
    executors(spool)
    (spool / "incoming" / ".partial-rsync").mkdir()
    (spool / "incoming" / ".partial-rsync" / "submission.yaml").write_text("run: echo never\n")
    subprocess.run(["cp", "-r", str(source), str(spool / "incoming" / "by-hand")], check=True)
    started = time.monotonic()
    wait_done(spool, "by-hand", timeout=30)
    assert time.monotonic() - started >= 0.4  # waited for `settle` (0.5 s in tests): no .ready
    assert stage(spool, "by-hand", "run")["stdout"] == "copied by hand\n"
    # A dot name is never claimed: an absence, so watched for a fixed 1.5 s, the 0.5 s settle a
    # claim would wait plus a full rescan (1 s in tests) that lists it again.
    hold(
        lambda: (spool / "incoming" / ".partial-rsync").is_dir() and not (spool / "done" / ".partial-rsync").exists(),
        1.5,
        "a dot name in incoming/ was claimed",
    )
    assert (spool / "incoming" / ".partial-rsync").is_dir()
    assert not (spool / "done" / ".partial-rsync").exists()


def test_validate_command_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    directory = yaml_only("run: 42\nbogus: true\nlimits: {run: {memory: 100GiB}}\n")(tmp_path / "bad")
    os.symlink("/etc/passwd", directory / "pw")
    proc = subprocess.run([*CLI, "validate", str(directory)], capture_output=True, text=True)
    assert proc.returncode == 3
    for part in ("run:", "bogus: unknown key", "limits.run.memory", "file pw: is a symbolic link"):
        assert part in proc.stdout, proc.stdout


def test_validate_finds_a_stage_that_names_a_missing_file(tmp_path: Path) -> None:
    """`run: run.sh` without run.sh would run as a shell command and fail as "not found" at run
    time; validation says so first. A command, `./x` made by compile, and a present file pass."""
    missing = yaml_only("compile: build.sh\nrun: run.sh\n")(tmp_path / "missing")
    proc = subprocess.run([*CLI, "validate", str(missing)], capture_output=True, text=True)
    assert proc.returncode == 3
    assert "compile: 'build.sh' names no file of the submission" in proc.stdout, proc.stdout
    assert "run: 'run.sh' names no file of the submission" in proc.stdout
    for good in ("run: python3 -c 'print(1)'\n", "compile: cc -o x x.c\nrun: ./x\n", "run: python3.11\n"):
        ok = yaml_only(good)(tmp_path / f"ok-{len(good)}")
        (ok / "x.c").write_text("int main(void) { return 0; }\n")
        assert subprocess.run([*CLI, "validate", str(ok)], capture_output=True).returncode == 0, good
    present = yaml_only("run: run.sh\n")(tmp_path / "present")
    (present / "run.sh").write_text("echo hi\n")
    assert subprocess.run([*CLI, "validate", str(present)], capture_output=True).returncode == 0
