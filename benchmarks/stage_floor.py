"""The floor under a bubblewrap stage, each figure a ratio to a bare fork/exec in the same run.

Rounds interleave every variant (one of each per round, medians over the rounds), so the load of
the machine weighs on all alike:

- **bare**: `sh -c 'echo hi'` forked from Python (the unit of every ratio);
- **bwrap, no namespaces**: `bwrap --ro-bind / /`, bubblewrap's own start;
- **bwrap, every namespace**: user, pid, ipc, uts, net, cgroup, with the product's mounts (/usr,
  /etc, /proc, /dev, tmpfs /tmp and /work): bubblewrap's floor for a fresh sandbox per stage;
- **the product's stage**: `BwrapSandbox.run` of `echo hi` in a slot held across stages (cgroups,
  limits, the launcher, seccomp, capture, the exit report), a fresh bubblewrap each time
  (`sandbox.warm_slots: false`);
- **the product's stage on a warm slot**: the same through the default construction, each stage
  entered into a read-only tree made once (runner/keeper.py);
- **entering made namespaces**: `nsenter` into a sandbox made once (a long-lived bwrap), with a
  fresh ipc and net namespace per run (`unshare`): the floor of a stage forked into a warm slot's
  namespaces, the construction issue 18 names. Two dynamic execs more than a launcher that did
  the same itself would need.

    sudo .venv/bin/python benchmarks/stage_floor.py [--rounds 150]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from collections.abc import Callable

from docker_exec import COMMAND, UID_BASE, bench_limits, checked, remove_state, state_dir

from cutor_spool.runner.bwrap import BubblewrapBackend
from cutor_spool.runner.slots import SlotPool
from cutor_spool.runner.stage import StageSpec

NAMESPACES = ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
MOUNTS = [
    *("--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib"),
    *("--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev"),
    *("--tmpfs", "/tmp", "--tmpfs", "/work", "--remount-ro", "/"),
]
ECHO = ["/bin/sh", "-c", "echo hi"]


def _run(argv: list[str]) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run(argv, capture_output=True, check=False)
        if done.returncode != 0 or done.stdout != b"hi\n":
            raise RuntimeError(f"{argv[0]}: exit {done.returncode}: {done.stderr[-300:]!r}")

    return run


def _keeper() -> tuple[subprocess.Popen[bytes], int]:
    """A sandbox made once: bwrap with every namespace, its pid 1 asleep. (its bwrap, pid inside)"""
    argv = ["/usr/bin/bwrap", *NAMESPACES, "--unshare-net", "--die-with-parent", *MOUNTS, "--info-fd", "1"]
    keeper = subprocess.Popen([*argv, "/bin/sleep", "3600"], stdout=subprocess.PIPE)
    assert keeper.stdout is not None
    text = b""
    while True:  # bwrap writes its info object and closes the descriptor
        piece = keeper.stdout.read1(4096)
        text += piece
        try:
            return keeper, int(json.loads(text)["child-pid"])
        except ValueError:
            if not piece:
                raise RuntimeError(f"bwrap's info: {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=150)
    args = parser.parse_args()

    state = state_dir("cutor-bench-floor-")
    pool = SlotPool(uid_base=UID_BASE, count=4, work_size=64 * 2**20, state_dir=state)
    backend = BubblewrapBackend(state_dir=state, uid_base=UID_BASE, slots=4, tmp_size=16 * 2**20, warm=False)
    warm_backend = BubblewrapBackend(state_dir=state, uid_base=UID_BASE, slots=4, tmp_size=16 * 2**20)
    assert warm_backend.trees is not None, "warm slots are off here (see the log)"
    slot = pool.acquire()
    sandbox, warm = backend.open(slot, "bench"), warm_backend.open(slot, "bench-warm")
    keeper, pid = _keeper()
    spec = StageSpec(name="run", command=COMMAND, limits=bench_limits())
    enter = ["/usr/bin/nsenter", "-t", str(pid), "-U", "-m", "-p", "-u", "--preserve-credentials"]
    variants: dict[str, Callable[[], object]] = {
        "bare fork/exec": _run(ECHO),
        "bwrap, no namespaces": _run(["/usr/bin/bwrap", "--ro-bind", "/", "/", *ECHO]),
        "bwrap, every namespace and the stage's mounts": _run(
            ["/usr/bin/bwrap", *NAMESPACES, "--unshare-net", "--die-with-parent", *MOUNTS, *ECHO]
        ),
        "the product's bubblewrap stage (a fresh bwrap)": lambda: checked(sandbox.run(spec)),
        "the product's stage on a warm slot": lambda: checked(warm.run(spec)),
        "entering made namespaces + fresh ipc and net": _run([*enter, "/usr/bin/unshare", "--ipc", "--net", *ECHO]),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for fn in variants.values():  # warm-up, and a check that each one works here
            fn()
        for _ in range(args.rounds):
            for name, fn in variants.items():
                start = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - start) * 1000)
    finally:
        keeper.kill()
        keeper.wait()
        sandbox.close()
        warm.close()
        pool.release(slot)
        backend.close()
        warm_backend.close()
        remove_state(state)
    bare = statistics.median(samples["bare fork/exec"])
    floor = statistics.median(samples["bwrap, every namespace and the stage's mounts"])
    print(f"`echo hi`, {args.rounds} interleaved rounds, medians\n")
    print("| variant | median | p95 | x bare fork/exec | x bwrap's floor |\n|---|--:|--:|--:|--:|")
    for name, values in samples.items():
        med, p95 = statistics.median(values), sorted(values)[int(0.95 * (len(values) - 1))]
        print(f"| {name} | {med:.2f} ms | {p95:.2f} ms | {med / bare:.1f}x | {med / floor:.2f}x |")
    print("\nissue 18's target for the product's stage: at most 4.4x a bare fork/exec (isolate's warm box)")


if __name__ == "__main__":
    main()
