"""A spool on ext4 without a journal is named as slow (watcher/spool_fs.py) by `doctor` and in an
executor's log; a journalled ext4 and a tmpfs are not. Real filesystems: two ext4 images made
with mkfs.ext4, one with and one without a journal, loop-mounted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI, make_submission, need, unmount_under, write_config

from cutor_spool.watcher import spool_fs

SLOW = "ext4 without a journal"


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Mount points of two fresh ext4 filesystems: "journal" and "nojournal"."""
    need(os.geteuid() == 0, "mounting loop images needs root")
    need(shutil.which("mkfs.ext4") is not None and shutil.which("losetup") is not None, "e2fsprogs, mount")
    mounted: list[Path] = []
    points: dict[str, Path] = {}
    try:
        for kind, features in (("journal", []), ("nojournal", ["-O", "^has_journal"])):
            image, point = tmp_path / f"{kind}.img", tmp_path / kind
            with open(image, "wb") as fh:
                fh.truncate(64 << 20)
            subprocess.run(["mkfs.ext4", "-q", "-F", *features, str(image)], check=True, capture_output=True)
            point.mkdir()
            subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True, capture_output=True)
            mounted.append(point)
            points[kind] = point
        yield points
    finally:
        for point in mounted:
            unmount_under(point)
            subprocess.run(["umount", str(point)], check=False, capture_output=True)


def make_spool(where: Path) -> Path:
    root = where / "spool"
    subprocess.run([*CLI, "--spool", str(root), "init"], check=True, capture_output=True)
    write_config(root)
    return root


def test_only_the_journal_less_ext4_is_named(ext4: dict[str, Path]) -> None:
    device = spool_fs.journal_less_ext4(ext4["nojournal"])
    assert device is not None and device.startswith("loop"), device
    assert spool_fs.journal_less_ext4(ext4["journal"]) is None
    assert spool_fs.journal_less_ext4(Path("/dev/shm")) is None  # tmpfs
    message = spool_fs.advice(ext4["nojournal"] / "spool")
    assert message is not None and SLOW in message and "docs/deploy.md" in message


def test_doctor_notes_the_slow_filesystem_without_calling_it_unsafe(ext4: dict[str, Path]) -> None:
    for kind in ("journal", "nojournal"):
        root = make_spool(ext4[kind])
        done = subprocess.run([*CLI, "doctor", str(root), "--json"], capture_output=True, text=True)
        report = json.loads(done.stdout)
        slow = [f for f in report["findings"] if SLOW in f["problem"]]
        if kind == "nojournal":
            assert [f["severity"] for f in slow] == ["note"], report
            assert slow[0]["path"] == str(root)
        else:
            assert slow == [], report
        assert done.returncode == (1 if report["unsafe"] else 0)
        assert report["unsafe"] == 0, report  # a fresh spool: the note alone does not fail it


def test_an_executor_warns_once_on_the_slow_filesystem(ext4: dict[str, Path], tmp_path: Path, executors) -> None:  # type: ignore[no-untyped-def]
    need(shutil.which("bwrap") is not None, "bubblewrap")
    logs = {}
    for kind in ("journal", "nojournal"):
        root = make_spool(ext4[kind])
        proc = executors(root)
        source = make_submission(tmp_path, f"echo-{kind}", {"run": "echo hi"})
        done = subprocess.run(
            [*CLI, "--spool", str(root), "submit", str(source), "--wait", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["outcome"] == "ok"  # set up and working: its start is logged
        proc.stop()
        logs[kind] = proc.log.read_text()
    assert logs["nojournal"].count(SLOW) == 1, logs["nojournal"][-2000:]
    assert SLOW not in logs["journal"]
