"""A spool shared by users who do not trust each other: the client is not root.

Each submission here is dropped by uid 65534 into a world-writable incoming/, run by a real
executor with bubblewrap, and attacked from outside the sandbox by the same uid: it swaps a
directory of its claimed entry for a symlink to a root-only directory (the "vault") while the
executor is between two reads, or ships a hard link to a root-only file. Every race is made
deterministic: the compile stage waits for a file `go` in its /work, which the test creates only
once the client's swap has been tried. Nothing may be written into the vault, the vault's bytes
may appear nowhere in the result, and the submission must end in a clear state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, result, stage, wait_done, write_config

from cutor_spool.atomic import append_line, write_json
from cutor_spool.documents.states import ATTEMPTS_LOG
from cutor_spool.errors import SpoolIOError
from cutor_spool.layout import SpoolPaths
from cutor_spool.runner.tree import read_file
from cutor_spool.watcher.queue import SpoolQueue, WorkerIdentity

CLIENT = 65534
SHARED = Path(__file__).parent / "hostile" / "shared"
DECOY = (SHARED / "stdin-file" / "d" / "data").read_bytes()
SECRET = b"VAULT-SECRET-".ljust(len(DECOY) - 1, b"x") + b"\n"  # the decoy's size: a size check cannot tell

# Run as the client: rename `path` away and put a symlink to `target` in its place (`path` "-":
# read it from stdin, so that a client started early swaps within a millisecond of being told).
SWAP = """
import os, sys
target, path = sys.argv[1], sys.argv[2]
if path == '-':
    path = sys.stdin.readline().strip()
try:
    os.rename(path, path + '-away')
    os.symlink(target, path)
    print('swapped', flush=True)
except OSError as exc:
    print('refused:', exc, flush=True)
"""
DROP = "import os, sys; os.rename(sys.argv[1], sys.argv[2])"


def as_client(*args: str, **kwargs: Any) -> Any:
    return subprocess.Popen(
        ["/usr/bin/python3", "-c", *args],
        user=CLIENT,
        group=CLIENT,
        extra_groups=[],
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


class Shared:
    """A spool whose incoming/ anyone may drop into, a client's own staging directory, and a
    root-only vault."""

    def __init__(self, base: Path, state_dir: Path) -> None:
        self.base, self.state_dir = base, state_dir
        self.spool = base / "spool"
        subprocess.run([*CLI, "--spool", str(self.spool), "init"], check=True, capture_output=True)
        write_config(self.spool)
        (self.spool / "incoming").chmod(0o1777)
        self.staging = base / "client"
        self.staging.mkdir()
        os.chown(self.staging, CLIENT, CLIENT)
        self.vault = base / "vault"
        self.vault.mkdir(mode=0o700)
        (self.vault / "data").write_bytes(SECRET)
        (self.vault / "precious").write_text("keep me\n")
        for path in self.vault.iterdir():
            path.chmod(0o600)

    def prepare(self, case: str, entry_id: str) -> Path:
        """The case's folder as the client's own directory (every file and directory its)."""
        source = self.staging / entry_id
        shutil.copytree(SHARED / case, source)
        (source / ".ready").write_text("")
        for path in [source, *source.rglob("*")]:
            os.chown(path, CLIENT, CLIENT)
        return source

    def drop(self, source: Path, entry_id: str) -> None:
        client = as_client(DROP, str(source), str(self.spool / "incoming" / entry_id))
        client.communicate(timeout=30)
        assert client.returncode == 0, "the client could not drop into incoming/"

    def active(self, entry_id: str) -> Path:
        [entry] = (self.spool / "active").glob(f"{entry_id}.*")
        return entry

    def work_file(self, name: str, timeout: float = 60.0) -> Path:
        """Waits until a stage's /work holds `name` (the slot's work directory, seen from the host)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list((self.state_dir / "slots").glob(f"*/work/{name}"))
            if found:
                return found[0]
            time.sleep(0.001)
        raise AssertionError(f"no stage ever had /work/{name}")

    def swap(self, path: Path) -> str:
        client = as_client(SWAP, str(self.vault), str(path))
        out, _ = client.communicate(timeout=30)
        return out.strip()

    def assert_vault_kept(self) -> None:
        assert sorted(os.listdir(self.vault)) == ["data", "precious"], "the executor wrote into the vault"
        assert (self.vault / "data").read_bytes() == SECRET
        assert (self.vault / "precious").read_text() == "keep me\n"

    def assert_no_secret(self, entry_id: str) -> None:
        """Not in anything the spool produced (the client's own files stay what it dropped)."""
        done = self.spool / "done" / entry_id
        assert not (done / "result").is_symlink(), "the result is a client's symlink"
        for directory, _, files in os.walk(done / "result"):
            for name in files:
                path = Path(directory) / name
                if path.is_symlink():
                    continue
                assert SECRET.strip() not in path.read_bytes(), f"the vault's bytes are in {path}"


@pytest.fixture
def shared(run_dir: Path) -> Iterator[Shared]:
    base = Path(tempfile.mkdtemp(prefix="cutor-shared-", dir="/tmp"))
    base.chmod(0o755)  # the client traverses it to reach the spool and its staging directory
    yield Shared(base, run_dir)
    shutil.rmtree(base, ignore_errors=True)


def start(executors: Any, shared: Shared) -> Any:
    return executors(shared.spool, "--state-dir", str(shared.state_dir))


def test_the_client_cannot_swap_the_result_directory_for_a_symlink(shared: Shared, executors: Any) -> None:
    """After the claim the client renames result/ away and puts a symlink to the vault in its
    place: the executor, as root, would write status.json and run.json there."""
    source = shared.prepare("result-swap", "swapper")
    start(executors, shared)
    shared.drop(source, "swapper")
    go = shared.work_file("started").with_name("go")
    swapped = shared.swap(shared.active("swapper") / "result")
    go.touch()
    wait_done(shared.spool, "swapper", timeout=60)
    shared.assert_vault_kept()
    shared.assert_no_secret("swapper")
    assert swapped.startswith("refused"), swapped
    status = result(shared.spool, "swapper")
    assert (status["state"], status["outcome"]) == ("done", "ok"), status
    assert status["submitter"] == CLIENT
    assert stage(shared.spool, "swapper", "run")["stdout"] == "hi\n"


READ_PATHS = ["stdin-file", "test-input", "test-output", "checker-file"]


@pytest.mark.parametrize("case", READ_PATHS)
def test_a_directory_swapped_during_the_compile_is_never_read_through(
    case: str, shared: Shared, executors: Any
) -> None:
    """While the compile runs, the client swaps d/ for a symlink to the vault, whose d/data has
    the decoy's size; the executor then reads d/data (stdin, a test's input or expected output,
    a checker's file). It must read the client's own bytes or nothing, never the vault's."""
    source = shared.prepare(case, case)
    start(executors, shared)
    shared.drop(source, case)
    go = shared.work_file("started").with_name("go")
    swapped = shared.swap(shared.active(case) / "d")
    go.touch()
    wait_done(shared.spool, case, timeout=60)
    shared.assert_no_secret(case)
    shared.assert_vault_kept()
    assert swapped.startswith("refused"), swapped
    status = result(shared.spool, case)
    if case == "stdin-file":
        assert status["state"] == "done" and stage(shared.spool, case, "run")["stdout"] == DECOY.decode()
    else:
        assert (status["state"], status["outcome"]) == ("done", "accepted"), status


def test_a_directory_swapped_during_the_copy_into_work_is_never_read_through(shared: Shared, executors: Any) -> None:
    """The files are copied into /work in order of their names: a/ (thousands of them) first, z/
    last. Once the copy has begun, the client swaps z/ for a symlink to the vault."""
    source = shared.prepare("work-copy", "copier")
    (source / "a").mkdir()
    for i in range(6000):
        (source / "a" / f"f{i:05d}").write_bytes(b"")
    for path in [source / "a", *(source / "a").iterdir()]:
        os.chown(path, CLIENT, CLIENT)
    start(executors, shared)
    client = as_client(SWAP, str(shared.vault), "-")
    shared.drop(source, "copier")
    shared.work_file("a/f00000", timeout=60)
    swapped, _ = client.communicate(f"{shared.active('copier') / 'z'}\n", timeout=30)
    wait_done(shared.spool, "copier", timeout=60)
    shared.assert_no_secret("copier")
    assert swapped.startswith("refused"), swapped
    status = result(shared.spool, "copier")
    assert status["state"] == "done" and stage(shared.spool, "copier", "run")["stdout"] == DECOY.decode()


def test_hard_links_and_files_the_submitter_cannot_read_are_refused(shared: Shared, executors: Any) -> None:
    """A hard link to a root-only file (what any client can make where the kernel's
    protected_hardlinks is off; this host has it on, so the test makes the link as root instead
    of flipping a host-wide setting), and a root-only file with one link moved into the client's
    directory: both are refused as invalid, and neither's bytes reach the job."""
    linked = shared.prepare("hardlink", "linked")
    os.link(shared.vault / "data", linked / "linked")
    theirs = shared.prepare("unreadable", "theirs")
    loose = shared.base / "loose"
    loose.write_bytes(SECRET)
    loose.chmod(0o600)
    os.rename(loose, theirs / "theirs")
    start(executors, shared)
    shared.drop(linked, "linked")
    shared.drop(theirs, "theirs")
    wait_done(shared.spool, ["linked", "theirs"], timeout=60)
    for entry_id, reason in (("linked", "hard links"), ("theirs", "not readable by its submitter")):
        shared.assert_no_secret(entry_id)
        status = result(shared.spool, entry_id)
        assert status["state"] == "invalid", status
        assert any(reason in e["message"] for e in status["errors"]), status["errors"]
        assert status["submitter"] == CLIENT
    shared.assert_vault_kept()


# Run as the client before the drop: a process whose working directory is d/ of its submission and
# which holds a descriptor of d/; told to (one line on stdin), it tries every way of changing d/.
INSIDE = """
import os, struct, sys
os.chdir(sys.argv[1])
held = os.open('.', os.O_RDONLY | os.O_DIRECTORY)
# An ACL naming the client itself (rwx) outlives a chown: custody must drop it.
ANY = 0xFFFFFFFF
acl = [(0x01, 7, ANY), (0x02, 7, os.getuid()), (0x04, 5, ANY), (0x10, 7, ANY), (0x20, 5, ANY)]
blob = struct.pack('<I', 2) + b''.join(struct.pack('<HHI', *entry) for entry in acl)
try:
    os.setxattr('.', 'system.posix_acl_access', blob)
except OSError:
    pass  # a filesystem without ACLs
print('ready', flush=True)
sys.stdin.readline()
attempts = {
    'rename by cwd': lambda: os.rename('data', 'data-away'),
    'create by cwd': lambda: os.close(os.open('planted', os.O_WRONLY | os.O_CREAT, 0o644)),
    'symlink by fd': lambda: os.symlink(sys.argv[2], 'planted-link', dir_fd=held),
    'unlink by fd': lambda: os.unlink('data', dir_fd=held),
    'chmod by fd': lambda: os.chmod(held, 0o777),
    'rename .. by cwd': lambda: os.rename('../submission.yaml', '../moved.yaml'),
}
for what, attempt in attempts.items():
    try:
        attempt()
        print(what, 'succeeded', flush=True)
    except OSError as exc:
        print(what, 'refused', exc.errno, flush=True)
"""


def test_a_client_inside_its_entry_cannot_change_it_after_the_claim(shared: Shared, executors: Any) -> None:
    """The client keeps a process whose working directory is inside its submission and which holds
    a descriptor of that directory, to which it gave itself an ACL entry: after the claim, none of
    it may change any name in it."""
    source = shared.prepare("stdin-file", "inside")
    inside = as_client(INSIDE, str(source / "d"), str(shared.vault))
    assert inside.stdout.readline().strip() == "ready"
    start(executors, shared)
    shared.drop(source, "inside")
    go = shared.work_file("started").with_name("go")
    report, _ = inside.communicate("now\n", timeout=30)
    go.touch()
    wait_done(shared.spool, "inside", timeout=60)
    assert "succeeded" not in report, report
    shared.assert_no_secret("inside")
    assert stage(shared.spool, "inside", "run")["stdout"] == DECOY.decode()
    assert sorted(os.listdir(shared.spool / "done" / "inside" / "d")) == ["data"]
    with pytest.raises(OSError):  # ENODATA: the ACL is gone
        os.getxattr(shared.spool / "done" / "inside" / "d", "system.posix_acl_access")


def test_a_requeued_entry_keeps_its_submitter(tmp_path: Path) -> None:
    """A hand-back returns an entry that is the worker's now: its submitter comes from the log of
    the claim that took it, which only the spool writes."""
    paths = SpoolPaths(tmp_path / "spool")
    paths.init()
    queue = SpoolQueue(paths.submissions, WorkerIdentity("w1", "host", os.getpid()), log_name=ATTEMPTS_LOG)
    path = paths.submissions.incoming / "mine"
    path.mkdir()
    (path / "submission.yaml").write_text("run: echo hi\n")
    for item in (path, path / "submission.yaml"):
        os.chown(item, CLIENT, CLIENT)
    first = queue.claim("mine")
    assert first is not None and first.submitter == CLIENT and first.custody_failure is None
    assert os.stat(first.path).st_uid == os.geteuid()
    assert os.stat(first.path / "submission.yaml").st_uid == CLIENT  # files keep their owner
    assert first.release("test")
    second = queue.claim("mine")
    assert second is not None and second.submitter == CLIENT


def test_no_component_below_the_anchor_is_followed(tmp_path: Path) -> None:
    """Without the custody above (a worker that could not take the entry, or a client quicker
    than the claim): a symlinked directory anywhere below the spool's own directory is refused,
    for reading the submission's files and for writing results."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_bytes(SECRET)
    active = tmp_path / "active"
    entry = active / "x.token"
    entry.mkdir(parents=True)
    os.symlink(outside, entry / "d")
    os.symlink(outside, entry / "result")
    with pytest.raises(OSError):
        read_file(entry, "d/data", len(SECRET))
    with pytest.raises(SpoolIOError):
        write_json(entry / "result" / "status.json", {"forged": True}, beneath=active)
    with pytest.raises(SpoolIOError):
        append_line(entry / "result" / "events.jsonl", {"forged": True}, beneath=active)
    assert sorted(os.listdir(outside)) == ["data"]
