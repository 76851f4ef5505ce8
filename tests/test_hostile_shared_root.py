"""A host whose root mount is shared (systemd's default) sees none of a stage's mounts.

On such a host every mount namespace copied from the host's joins its peer groups: a mount made
in one appears in all the others unless the copy was made private (or a slave) first. This
machine's root mount is private, so the executor runs here in a mount namespace of its own whose
root was made `rshared`, beside a peer namespace (another copy, as the host's and its services'
would be): what the peer sees is what the host would see.

While a stage runs (it has mounted its /tmp, /dev/shm, /dev/pts, /proc, /work and /run/cutor) and
after the slot is released, the peer and the executor's own namespace may show only the mounts the
executor makes on the host on purpose: the slot's `work`, `io` (and `aux`) tmpfs and the prepared
/etc. A later stage finds nothing of the earlier one. Both constructions: warm slots (the launcher
enters a tree made once, runner/keeper.py) and a fresh bwrap per stage.

Seen failing: a launcher built from launcher.c without the `MS_REC | MS_PRIVATE` remount of "/"
in `make_root` (named in $CUTOR_SPOOL_LAUNCHER) makes the warm tree's tmpfs and everything in it
(the binds of /usr, the prepared /etc and the launcher, the device nodes) appear in the peer under
the state directory's `trees/`, and stay there after the slot is released.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATE = Path("/run/cutor-spool-test-shared-root")
UID_BASE = 61950  # a range of its own
# What the executor mounts on the host on purpose: a slot's tmpfs (slots/<uid>/work, io, aux)
# and the prepared /etc (tmpfs_once on etc.d/).
EXPECTED = re.compile(rf"^{re.escape(str(STATE))}/(slots/\d+/(work|io|aux)|etc\.d)$")


def _mounts(pid: int | str) -> list[str]:
    """Mount points of a process's mount namespace, with their filesystem type."""
    found = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields, _, after = line.partition(" - ")
        point = fields.split()[4].encode().decode("unicode_escape")
        found.append(f"{point} {after.split()[0]}")
    return found


def _helper(mode: str) -> None:
    """Runs in the namespace made by the test (root rshared): two stages on one slot, the mounts
    of this namespace and of a peer before, during the first stage, and after; JSON on stdout."""
    sys.path.insert(0, str(ROOT))
    peer = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "unchanged", "sleep", "300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _observe(mode, peer.pid)
    finally:
        peer.kill()


def _observe(mode: str, peer: int) -> None:
    from cutor_spool.limits import Limits
    from cutor_spool.runner.bwrap import BubblewrapBackend
    from cutor_spool.runner.slots import SlotPool
    from cutor_spool.runner.stage import StageOutput, StageSpec

    own_ns = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + 10
    while os.readlink(f"/proc/{peer}/ns/mnt") == own_ns:
        if time.monotonic() > deadline:
            raise SystemExit("the peer namespace was not made")
        time.sleep(0.01)
    seen: dict[str, object] = {"own_before": _mounts("self"), "peer_before": _mounts(peer)}
    limits = Limits(
        cpu_time=10, wall_time=60, memory=256 << 20, processes=32, file_size=16 << 20, open_files=64,
        stack=8 << 20, output=1 << 20,
    )  # fmt: skip
    backend = BubblewrapBackend(state_dir=STATE, uid_base=UID_BASE, slots=1, tmp_size=16 << 20, warm=mode == "warm")
    seen["warm"] = backend.trees is not None
    pool = SlotPool(uid_base=UID_BASE, count=1, work_size=32 << 20, state_dir=STATE)
    slot = pool.acquire()
    box = backend.open(slot, "shared-root")
    first: dict[str, StageOutput] = {}
    plant = (
        "echo planted > /tmp/p && echo planted > /dev/shm/p && : > /work/inside && "
        "while [ ! -e /work/go ]; do sleep 0.01; done; echo one"
    )
    stage = threading.Thread(
        target=lambda: first.update(out=box.run(StageSpec("run", ("/bin/sh", "-c", plant), limits))), daemon=True
    )
    stage.start()
    deadline = time.monotonic() + 30
    while not (slot.work / "inside").exists():
        if time.monotonic() > deadline or not stage.is_alive():
            raise SystemExit(f"the first stage did not start: {first}")
        time.sleep(0.01)
    seen["own_during"], seen["peer_during"] = _mounts("self"), _mounts(peer)
    (slot.work / "go").touch()
    stage.join(30)
    second = box.run(StageSpec("run", ("/bin/sh", "-c", "find /tmp /dev/shm -mindepth 1; echo two"), limits))
    box.close()
    pool.release(slot, clean=True)
    backend.close()
    seen["own_after"], seen["peer_after"] = _mounts("self"), _mounts(peer)
    out = first["out"]
    seen["stdout"] = [out.stdout.decode(), second.stdout.decode()]
    seen["stderr"] = [out.stderr.decode(), second.stderr.decode()]
    print(json.dumps(seen))


def _unexpected(before: list[str], later: list[str]) -> list[str]:
    new = set(later) - set(before)
    return sorted(m for m in new if not EXPECTED.match(m.rsplit(" ", 1)[0]))


@pytest.mark.parametrize("mode", ["warm", "bwrap"])
def test_a_shared_root_sees_none_of_a_stages_mounts(mode: str) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and util-linux's unshare")
    try:
        proc = subprocess.run(
            [
                "unshare", "--mount", "--propagation", "unchanged", "--", "sh", "-c",
                'mount --make-rshared / && exec "$@"', "sh", sys.executable, __file__, mode,
            ],
            capture_output=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
    finally:
        shutil.rmtree(STATE, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    seen = json.loads(proc.stdout)
    assert seen["warm"] == (mode == "warm")
    assert seen["stdout"] == ["one\n", "two\n"], seen["stderr"]  # the second found nothing of the first
    # the executor's mounts reach the peer (the root is shared: the test would see nothing otherwise)
    assert any(m.startswith(f"{STATE}/slots/") for m in set(seen["peer_during"]) - set(seen["peer_before"]))
    assert _unexpected(seen["peer_before"], seen["peer_during"]) == []
    assert _unexpected(seen["own_before"], seen["own_during"]) == []
    left = set(seen["peer_after"]) - set(seen["peer_before"])
    assert [m for m in left if "/slots/" in m] == [], left  # a released slot leaves nothing mounted
    assert _unexpected(seen["peer_before"], seen["peer_after"]) == []


if __name__ == "__main__":
    _helper(sys.argv[1])
