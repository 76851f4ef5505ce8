"""The permission model of a shared spool (docs/shared-spool.md, cutor_spool/sharing.py), tested with
real users: a spool made by `init --shared`, a real executor, and the CLI run as unprivileged uids.

    ALICE (65534)  a submitter: in the submitters' group
    BOB   (65533)  another submitter, same group: must read nothing of Alice's
    OLGA  (65532)  an operator: in the operators' group, not a submitter

The uids and gids are numbers without passwd or group entries (what a process's credentials are
made of; no account is added to this host). The CLI runs as each of them through a root Python
that imports the package first and then drops to the user's uid, gid and groups before it
touches the spool: the interpreter lives under /root, which the users cannot read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, wait_done, wait_until, write_config

from cutor_spool.deployments.keys import make_server_key
from cutor_spool.documents.states import ATTEMPTS_LOG
from cutor_spool.layout import SpoolPaths
from cutor_spool.sharing import ACCESS_ACL, USER, AclEntry, Sharing, decode_acl, encode_acl, entry_acl, named_readers
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

ALICE, BOB, OLGA = 65534, 65533, 65532
SUBMITTERS, OPERATORS = 64010, 64011
GROUPS = {ALICE: [SUBMITTERS], BOB: [SUBMITTERS], OLGA: [OPERATORS]}
SHARED = {"submitters": str(SUBMITTERS), "operators": str(OPERATORS)}
SOURCE_SECRET = "ALICE-SOURCE-7f3a"
OUTPUT_SECRET = "ALICE-OUTPUT-c41d"

# Runs the CLI as another user: everything it needs is imported while this (root) interpreter can
# read its own files, then the process becomes the user for good.
AS_USER = """
import os, sys
import cutor_spool.cli, cutor_spool.watcher.notify, cutor_spool.watcher.clock, watchdog.observers.inotify_c
import encodings.idna
uid, gid, groups = int(sys.argv[1]), int(sys.argv[2]), [int(g) for g in sys.argv[3].split(',') if g]
os.setgroups(groups)
os.setgid(gid)
os.setuid(uid)
sys.argv = ['cutor-spool', *sys.argv[4:]]
cutor_spool.cli.main()
"""

# Reads files as another user: prints, per path, its bytes or the error.
READ = """
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        out[path] = sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read()
    except OSError as exc:
        out[path] = 'error: ' + os.strerror(exc.errno)
print(json.dumps(out))
"""


def as_user(uid: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", AS_USER, str(uid), str(uid), ",".join(map(str, GROUPS[uid])), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def reads(uid: int, *paths: Path) -> dict[str, Any]:
    """What `uid` gets for each path: its text, its listing, or 'error: …'."""
    done = subprocess.run(
        ["/usr/bin/python3", "-c", READ, *map(str, paths)],
        user=uid,
        group=uid,
        extra_groups=GROUPS[uid],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        check=True,
    )
    return {Path(k): v for k, v in json.loads(done.stdout).items()}


def denied(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("error: ")


class Spool:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "spool"
        made = subprocess.run(
            [*CLI, "init", str(self.root), "--shared", str(SUBMITTERS), "--operators", str(OPERATORS)],
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        write_config(self.root, shared=SHARED)  # the tests' short timings, the same groups

    def source(self, owner: int, name: str) -> Path:
        """A submission directory of `owner`'s own, outside the spool."""
        home = self.base / f"home-{owner}"
        home.mkdir(mode=0o700, exist_ok=True)
        os.chown(home, owner, owner)
        directory = home / name
        directory.mkdir()
        (directory / "submission.yaml").write_text(f"run: cat secret.txt; echo {OUTPUT_SECRET}\n")
        (directory / "secret.txt").write_text(SOURCE_SECRET + "\n")
        for path in [directory, *directory.iterdir()]:
            os.chown(path, owner, owner)
        return directory

    def cli(self, uid: int, *args: str) -> subprocess.CompletedProcess[str]:
        return as_user(uid, "--spool", str(self.root), *args)

    def doctor(self) -> tuple[int, dict[str, Any]]:
        done = subprocess.run([*CLI, "doctor", str(self.root), "--json"], capture_output=True, text=True)
        return done.returncode, json.loads(done.stdout)


@pytest.fixture
def shared() -> Iterator[Spool]:
    base = Path(tempfile.mkdtemp(prefix="cutor-perm-", dir="/tmp"))
    base.chmod(0o755)  # the users traverse it to reach the spool (pytest's tmp_path is 0700)
    yield Spool(base)
    shutil.rmtree(base, ignore_errors=True)


def test_init_shared_sets_the_model_and_doctor_finds_nothing_unsafe(shared: Spool) -> None:
    modes = {
        name: (os.stat(shared.root / name).st_mode & 0o7777, os.stat(shared.root / name).st_gid)
        for name in ("incoming", "tmp", "active", "done", "status", "workers", "builds", "builds/done")
    }
    assert modes == {
        "incoming": (0o1730, SUBMITTERS),
        "tmp": (0o755, 0),
        "active": (0o755, 0),
        "done": (0o755, 0),
        "status": (0o2750, OPERATORS),
        "workers": (0o755, 0),
        "builds": (0o755, 0),
        "builds/done": (0o755, 0),
    }
    assert "shared:" in (shared.root / "spool.yaml").read_text()
    code, report = shared.doctor()
    assert (code, report["shared"], report["unsafe"]) == (0, True, 0), report


def test_a_drop_is_private_until_its_claim(shared: Spool) -> None:
    """No executor: Alice's submission waits in incoming/. Bob can neither list incoming/ nor,
    knowing its id, read anything in it."""
    submitted = shared.cli(ALICE, "submit", str(shared.source(ALICE, "job")), "--id", "alpha")
    assert submitted.returncode == 0, submitted.stderr
    queued = shared.root / "incoming" / "alpha"
    assert os.stat(queued).st_uid == ALICE
    seen = reads(BOB, shared.root / "incoming", queued, queued / "secret.txt", queued / "submission.yaml")
    assert all(denied(v) for v in seen.values()), seen
    assert reads(ALICE, queued / "secret.txt")[queued / "secret.txt"] == SOURCE_SECRET + "\n"


# Run as the submitter on its own finished entry: every way of changing what the spool wrote.
TAMPER = """
import os, sys
entry = sys.argv[1]
attempts = {
    'rewrite status.json': lambda: open(os.path.join(entry, 'result/status.json'), 'w').write('{}'),
    'rename result': lambda: os.rename(os.path.join(entry, 'result'), os.path.join(entry, 'mine')),
    'unlink run.json': lambda: os.unlink(os.path.join(entry, 'result/run.json')),
    'plant a file': lambda: open(os.path.join(entry, 'result/forged.json'), 'w'),
    'chmod the entry': lambda: os.chmod(entry, 0o777),
    'chmod status.json': lambda: os.chmod(os.path.join(entry, 'result/status.json'), 0o666),
}
for what, attempt in attempts.items():
    try:
        attempt()
        print(what, 'succeeded')
    except OSError as exc:
        print(what, 'refused', exc.errno)
"""


@pytest.mark.slow
def test_only_the_submitter_and_the_operators_read_a_result(shared: Spool, executors: Any, run_dir: Path) -> None:
    """Alice submits and waits with the CLI; once it is done, Bob can read none of its status,
    events, stage outputs or sources, neither by path nor with the CLI, nor the status page;
    Alice can, through `wait`, `status` and by path; Olga the operator can, and reads the page."""
    executors(shared.root, "--state-dir", str(run_dir))
    submitted = shared.cli(ALICE, "submit", str(shared.source(ALICE, "job")), "--id", "alpha", "--wait", "--json")
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["state"] == "done"
    wait_done(shared.root, "alpha")
    entry = shared.root / "done" / "alpha"
    result = entry / "result"
    private = [
        entry,
        result,
        result / "status.json",
        result / "run.json",
        result / "events.jsonl",
        entry / "secret.txt",
        entry / "submission.yaml",
    ]

    bob = reads(BOB, *private)
    assert all(denied(v) for v in bob.values()), bob
    for command in (["status", "alpha", "--json"], ["wait", "alpha", "--json", "--timeout", "5"]):
        seen = shared.cli(BOB, *command)
        assert seen.returncode != 0 and OUTPUT_SECRET not in seen.stdout + seen.stderr, seen

    for uid in (ALICE, OLGA):
        got = reads(uid, *private)
        assert not any(denied(v) for v in got.values()), (uid, got)
        assert json.loads(got[result / "run.json"])["stdout"] == f"{SOURCE_SECRET}\n{OUTPUT_SECRET}\n"
        assert json.loads(got[result / "status.json"])["submitter"] == ALICE
    for command in (["status", "alpha", "--json"], ["wait", "alpha", "--json", "--timeout", "30"]):
        mine = shared.cli(ALICE, *command)
        assert mine.returncode == 0, mine.stderr
        assert (json.loads(mine.stdout)["state"], json.loads(mine.stdout)["outcome"]) == ("done", "ok")

    tampering = subprocess.run(
        ["/usr/bin/python3", "-c", TAMPER, str(entry)],
        user=ALICE,
        group=ALICE,
        extra_groups=GROUPS[ALICE],
        capture_output=True,
        text=True,
        cwd="/",
        check=True,
    ).stdout
    assert "succeeded" not in tampering and tampering.count("refused") == 6, tampering
    assert json.loads((result / "status.json").read_text())["outcome"] == "ok"

    listed = {uid: json.loads(shared.cli(uid, "list", "--json").stdout)["done"] for uid in (ALICE, BOB)}
    (alice,) = listed[ALICE]
    assert (alice["id"], alice["state"], alice["outcome"], alice["reason"]) == ("alpha", "done", "ok", None)
    assert alice["ended"] is not None
    nothing = {"state": None, "outcome": None, "score": None, "max_score": None, "reason": None, "ended": None}
    assert listed[BOB] == [{"id": "alpha", **nothing}]

    page = shared.root / "status" / "s" / "alpha.html"
    wait_until(page.exists, 60, "the executor rendered alpha's page")
    assert OUTPUT_SECRET in reads(OLGA, page)[page]
    assert all(denied(v) for v in reads(BOB, page, shared.root / "status" / "index.html").values())
    assert all(denied(v) for v in reads(ALICE, page).values())  # the page is the operators'

    code, report = shared.doctor()
    assert (code, report["unsafe"]) == (0, 0), report


# Run as Bob: opens Alice's queued entry (she dropped it readable, as a plain `cp -r` does) and keeps
# the descriptor; told to (a line on stdin), reads through it.
HOLD = """
import os, sys
held = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
print('holding', flush=True)
sys.stdin.readline()
for name in ('result/status.json', 'result/run.json', 'secret.txt'):
    try:
        fd = os.open(name, os.O_RDONLY, dir_fd=held)
        print(name, 'read', os.read(fd, 1 << 16).decode(errors='replace'), flush=True)
    except OSError as exc:
        print(name, 'refused', exc.errno, flush=True)
"""
DROP = "import os, sys; os.rename(sys.argv[1], sys.argv[2])"


def test_a_descriptor_taken_before_the_claim_reads_nothing_after_it(
    shared: Spool, executors: Any, run_dir: Path
) -> None:
    """Alice drops a directory anyone may read (mode 0755) by renaming it into incoming/; Bob, who
    knows its name, opens it before the claim and keeps the descriptor. The claim shuts it before
    it makes result/: nothing of the result, nor the sources, reads through Bob's descriptor."""
    source = shared.source(ALICE, "job")
    source.chmod(0o755)
    source.parent.chmod(0o711)
    (source / ".ready").touch()
    os.chown(source / ".ready", ALICE, ALICE)
    drop = subprocess.run(
        ["/usr/bin/python3", "-c", DROP, str(source), str(shared.root / "incoming" / "alpha")],
        user=ALICE,
        group=ALICE,
        extra_groups=GROUPS[ALICE],
        cwd="/",
        check=False,
    )
    assert drop.returncode == 0
    bob = subprocess.Popen(
        ["/usr/bin/python3", "-c", HOLD, str(shared.root / "incoming" / "alpha")],
        user=BOB,
        group=BOB,
        extra_groups=GROUPS[BOB],
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert bob.stdout is not None and bob.stdout.readline().strip() == "holding"
    executors(shared.root, "--state-dir", str(run_dir))
    wait_done(shared.root, "alpha")
    report, _ = bob.communicate("now\n", timeout=30)
    assert " read " not in report and OUTPUT_SECRET not in report and SOURCE_SECRET not in report, report
    mine = shared.cli(ALICE, "status", "alpha", "--json")
    assert mine.returncode == 0 and json.loads(mine.stdout)["outcome"] == "ok", mine


def test_doctor_reports_each_planted_problem(shared: Spool) -> None:
    """A fresh shared spool, then: done/ and workers/ writable by everyone, incoming/ without its
    sticky bit, the server's private key inside the spool, spool.yaml writable by its group, the
    page and a result readable by everyone, a result's ACL naming a second user, a blob of cas/
    anyone may rewrite. Each is reported with its path, and the exit code says unsafe."""
    (shared.root / "done").chmod(0o777)
    (shared.root / "incoming").chmod(0o730)
    outside = shared.base / "server.key"
    make_server_key(shared.root, outside)
    os.rename(outside, shared.root / "keys" / "server.key")
    (shared.root / "spool.yaml").chmod(0o664)
    (shared.root / "status").chmod(0o2755)
    leaked = shared.root / "done" / "leaked"
    leaked.mkdir(mode=0o755)
    leaked.chmod(0o755)
    widened = shared.root / "done" / "widened"  # sealed, then an ACL entry for a second user
    widened.mkdir()
    os.chown(widened, 0, OPERATORS)
    widened.chmod(0o750)
    os.setxattr(widened, ACCESS_ACL, encode_acl([*decode_acl(entry_acl(ALICE)), AclEntry(USER, 5, BOB)]))
    assert named_readers(widened) == ([BOB, ALICE], [])
    (shared.root / "workers").chmod(0o777)
    blob = shared.root / "cas" / "ab" / "bafyblob"  # a blob anyone may rewrite
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"code every executor trusts")
    blob.chmod(0o666)
    code, report = shared.doctor()
    assert code == 1
    flagged = {(Path(f["path"]).relative_to(shared.root).as_posix(), f["severity"]) for f in report["findings"]}
    planted = ("done", "incoming", "keys/server.key", "spool.yaml", "status", "done/leaked", "done/widened")
    for name in (*planted, "workers", "cas/ab/bafyblob"):
        assert (name, "unsafe") in flagged, (name, report["findings"])
    assert report["unsafe"] == 9, report["findings"]
    text = subprocess.run([*CLI, "doctor", str(shared.root)], capture_output=True, text=True)
    assert text.returncode == 1 and "UNSAFE" in text.stdout and "fix: chmod +t" in text.stdout


def test_doctor_on_a_single_user_spool_that_others_can_submit_to(tmp_path: Path) -> None:
    """The old way of sharing (a plain spool whose incoming/ is world-writable, as
    test_shared_spool.py still makes it) is unsafe: every user reads every result."""
    root = tmp_path / "spool"
    subprocess.run([*CLI, "init", str(root)], check=True, capture_output=True)
    fresh = subprocess.run([*CLI, "doctor", str(root), "--json"], capture_output=True, text=True)
    assert (fresh.returncode, json.loads(fresh.stdout)["unsafe"]) == (0, 0), fresh.stdout
    (root / "incoming").chmod(0o1777)
    shared = subprocess.run([*CLI, "doctor", str(root), "--json"], capture_output=True, text=True)
    assert shared.returncode == 1
    # the one unsafe finding (a note may name the filesystem: test_spool_filesystem.py)
    [finding] = [f for f in json.loads(shared.stdout)["findings"] if f["severity"] == "unsafe"]
    assert "not shared" in finding["problem"] and "--shared" in finding["fix"]


def claim_as_alice(paths: SpoolPaths, sharing: Sharing, entry_id: str) -> SpoolQueue:
    entry = paths.submissions.incoming / entry_id
    entry.mkdir(mode=0o700)
    (entry / "submission.yaml").write_text("run: echo hi\n")
    for item in (entry, entry / "submission.yaml"):
        os.chown(item, ALICE, ALICE)
    return SpoolQueue(
        paths.submissions, WorkerIdentity("w1", "host", os.getpid()), log_name=ATTEMPTS_LOG, sharing=sharing
    )


def test_a_requeued_entry_stays_sealed_for_its_submitter(shared: Spool) -> None:
    """The claim strips every ACL of the entry (custody) and seals it again: a hand-back and a
    second claim keep it readable by its submitter (from the first claim's record) and nobody else."""
    paths = SpoolPaths(shared.root)
    queue = claim_as_alice(paths, Sharing(SUBMITTERS, OPERATORS), "again")
    for attempt in (1, 2):
        claim = queue.claim("again")
        assert claim is not None and claim.submitter == ALICE and claim.attempt == attempt
        st = os.stat(claim.path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, OPERATORS, 0o750)
        assert named_readers(claim.path) == ([ALICE], [])
        yaml_path = claim.path / "submission.yaml"
        assert not denied(reads(ALICE, yaml_path)[yaml_path]) and denied(reads(BOB, yaml_path)[yaml_path])
        assert claim.release("test")


def test_without_acls_the_seal_fails_closed(shared: Spool) -> None:
    """On a filesystem without POSIX ACLs (ramfs here) the entry is the operators' alone: its
    submitter cannot read it either, and doctor says why."""
    mount = shared.base / "ramfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "cutor-test", str(mount)], check=True)
    try:
        mount.chmod(0o755)
        made = subprocess.run(
            [*CLI, "init", str(mount / "spool"), "--shared", str(SUBMITTERS), "--operators", str(OPERATORS)],
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        paths = SpoolPaths(mount / "spool")
        claim = claim_as_alice(paths, Sharing(SUBMITTERS, OPERATORS), "bare").claim("bare")
        assert claim is not None and claim.submitter == ALICE
        yaml_path = claim.path / "submission.yaml"
        assert denied(reads(ALICE, yaml_path)[yaml_path]) and denied(reads(BOB, yaml_path)[yaml_path])
        assert not denied(reads(OLGA, yaml_path)[yaml_path])
        doctor = subprocess.run([*CLI, "doctor", str(paths.root), "--json"], capture_output=True, text=True)
        notes = [f["problem"] for f in json.loads(doctor.stdout)["findings"] if f["severity"] == "note"]
        assert any("no POSIX ACLs" in n for n in notes), doctor.stdout
    finally:
        subprocess.run(["umount", str(mount)], check=True)
