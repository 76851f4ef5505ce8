"""The ledger's speed (docs/ledger.md): holds per second from one process and from 8 racing for
one account, and the time to read a balance from a journal of 100,000 records, with checkpoints
and without (the baseline, folding from record 1), in the same run.

Holds are real (`Ledger.hold`: exclusive creates, fsyncs, the compare-and-swap). The 100,000-record
journal is written directly, record by record as `Journal` builds them but without fsync, so that
building it takes seconds; checkpoints are put every 256 records as writers put them. What is
measured there is only the read.

    .venv/bin/python benchmarks/ledger.py [--holds 1000] [--records 100000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)

from cutor_spool.deployments.keys import SigningKey
from cutor_spool.ledger import Ledger
from cutor_spool.ledger.journal import CHECKPOINT_EVERY, Journal, encode
from cutor_spool.ledger.state import State, digest


def holds_one_process(root: Path, count: int) -> float:
    ledger, account = Ledger(root), SigningKey.generate().public
    ledger.deposit(account, 10**12)
    start = time.perf_counter()
    for i in range(count):
        ledger.hold(account, f"one-{i}", 5, ttl=600, holder="bench")
    return count / (time.perf_counter() - start)


def _racer(root: str, account: str, worker: int, count: int, barrier: Any, out: Any) -> None:
    ledger = Ledger(Path(root))
    barrier.wait()
    for i in range(count):
        ledger.hold(account, f"race-{worker}-{i}", 5, ttl=600, holder=f"bench{worker}")
    out.put(time.perf_counter())


def holds_eight_processes(root: Path, count: int) -> float:
    ledger, account = Ledger(root), SigningKey.generate().public
    ledger.deposit(account, 10**12)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(9), ctx.Queue()
    each = max(1, count // 8)
    racers = [ctx.Process(target=_racer, args=(str(root), account, w, each, barrier, out)) for w in range(8)]
    for racer in racers:
        racer.start()
    barrier.wait()
    start = time.perf_counter()
    end = max(out.get(timeout=600) for _ in racers)
    for racer in racers:
        racer.join()
    return 8 * each / (end - start)


def build_journal(root: Path, records: int) -> str:
    """`records` deposits and holds, written as a writer would, without fsync; checkpoints too."""
    account = SigningKey.generate().public
    journal, state = Journal(root / "ledger", account), State()
    for seq in range(1, records + 1):
        fields: dict[str, Any] = {"kind": "deposit", "amount": 10, "time": 0.0}
        if seq % 2 == 0:
            fields = {"kind": "hold", "hold_id": f"h{seq}", "amount": 5, "expires": 1e12, "time": 0.0}
        if seq % 4 == 0:
            fields = {"kind": "settle", "hold_id": f"h{seq - 2}", "amount": 3, "held": 5, "time": 0.0}
        record, state = journal._next(state, fields)
        data = encode(record)
        path = journal.path(seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        state.digest = digest(data)
        if seq % CHECKPOINT_EVERY == 0:
            journal.write_checkpoint(state)
    return account


def read_times(root: Path, account: str, *, checkpoints: bool, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        journal = Journal(root / "ledger", account)  # a new process's: nothing cached
        start = time.perf_counter()
        journal.load(checkpoints=checkpoints)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=1000)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as scratch:
        root = Path(scratch)
        one = holds_one_process(root, args.holds)
        print(f"holds/s, 1 process:           {one:10.0f}")
        eight = holds_eight_processes(root, args.holds)
        print(f"holds/s, 8 processes racing:  {eight:10.0f}  (one account)")
        account = build_journal(root, args.records)
        with_cp = read_times(root, account, checkpoints=True, rounds=20)
        without = read_times(root, account, checkpoints=False, rounds=3)
        print(f"balance read, {args.records} records, checkpoints:     {with_cp * 1000:10.2f} ms")
        print(f"balance read, {args.records} records, no checkpoints:  {without * 1000:10.2f} ms  (baseline)")


if __name__ == "__main__":
    main()
