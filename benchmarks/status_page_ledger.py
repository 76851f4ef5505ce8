"""The status page's Ledger section on a spool with many accounts and long journals.

`--accounts` accounts of `--records` journal records each (a deposit, then holds and their
settlements or releases), written straight into the journal's files in the format the ledger writes
(records chained by digest, a checkpoint every 256 records as readers leave them), because placing
200,000 records through `Ledger.hold` would take minutes of fsyncs. Figures, medians over `--rounds`:

- baseline: a regeneration of the same spool with its `ledger/` moved away (the rest of the page);
- unchanged: a regeneration when no record was added (what every regeneration pays), in a
  worker that regenerated before (its accounts in memory) and in a new process (which parses
  `status/_ledger.json`, as a one-shot `cutor-spool status-page` does);
- one more charge: after a hold and its settlement on one account (through the `Ledger` API);
- full: `regenerate(full=True)`, every account read from its newest checkpoint (the cold start);
- uncached: what reading every balance and the last 50 records of each account costs a fresh
  `Ledger` (`balance` + `history(limit=50)`), i.e. the page without its cache.

    .venv/bin/python benchmarks/status_page_ledger.py [--accounts 200] [--records 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from cutor_spool.config import StatusPageConfig
from cutor_spool.deployments import keys
from cutor_spool.layout import SpoolPaths
from cutor_spool.ledger import Ledger, Record
from cutor_spool.ledger.journal import CHECKPOINT_EVERY, Journal, encode
from cutor_spool.ledger.state import State, digest
from cutor_spool.web_status import ledger as page_ledger
from cutor_spool.web_status import regenerate

CONFIG = StatusPageConfig(interval=2.0, recent=200)


def write_journal(root: Path, account: str, records: int, start: float) -> None:
    """`records` records of `account`: a deposit, then hold / settle (every fifth a release)."""
    journal = Journal(root / "ledger", account)
    state = State()
    for seq in range(1, records + 1):
        n = (seq - 2) // 2
        fields: dict[str, object]
        if seq == 1:
            fields = {"kind": "deposit", "amount": 10**12}
        elif seq % 2 == 0:
            fields = {"kind": "hold", "hold_id": f"h{n}", "amount": 5000, "expires": start + seq + 60, "holder": "w"}
        elif n % 5 == 4:
            fields = {"kind": "release", "amount": 0, "hold_id": f"h{n}", "held": 5000, "reason": "gave up"}
        else:
            fields = {"kind": "settle", "amount": 1234, "hold_id": f"h{n}", "held": 5000}
        draft = Record.model_validate(
            {**fields, "seq": seq, "prev": state.digest, "account": account, "time": start + seq}
            | {"after": state.totals()}
        )
        after = state.copy()
        after.apply(draft, "")
        record = draft.model_copy(update={"after": after.totals()})
        data = encode(record)
        path = journal.path(seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        problems = state.apply(record, digest(data))
        assert not problems, problems
        if seq % CHECKPOINT_EVERY == 0:
            journal.checkpoints.mkdir(parents=True, exist_ok=True)
            (journal.checkpoints / f"{seq:012d}.json").write_text(json.dumps(state.to_json(), sort_keys=True))


def timed(paths: SpoolPaths, *, full: bool = False) -> float:
    started = time.perf_counter()
    regenerate(paths, CONFIG, full=full)
    return time.perf_counter() - started


def uncached(root: Path) -> float:
    started = time.perf_counter()
    ledger = Ledger(root)
    for account in ledger.accounts():
        ledger.balance(account)
        ledger.history(account, limit=50)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cutor-ledger-page-bench-")) / "spool"
    try:
        paths = SpoolPaths(root)
        paths.init()
        accounts = [keys.SigningKey.generate().public for _ in range(args.accounts)]
        start = time.time() - args.records
        for account in accounts:
            write_journal(root, account, args.records, start)
        ledger = Ledger(root)
        baseline, same, cold_same, more, full, bare = [], [], [], [], [], []
        for r in range(args.rounds):
            os.rename(root / "ledger", root / "ledger.away")
            timed(paths)
            baseline.append(timed(paths))
            os.rename(root / "ledger.away", root / "ledger")
            full.append(timed(paths, full=True))
            same.append(timed(paths))
            page_ledger._MEMORY.clear()  # as a new process finds it
            cold_same.append(timed(paths))
            ledger.hold(accounts[r % len(accounts)], f"more{r}", 5000, ttl=60, holder="bench")
            ledger.settle(f"more{r}", 1000)
            more.append(timed(paths))
            bare.append(uncached(root))
        print(
            json.dumps(
                {
                    "accounts": args.accounts,
                    "records_per_account": args.records,
                    "baseline_no_ledger_s": round(statistics.median(baseline), 4),
                    "unchanged_s": round(statistics.median(same), 4),
                    "unchanged_new_process_s": round(statistics.median(cold_same), 4),
                    "one_more_charge_s": round(statistics.median(more), 4),
                    "full_s": round(statistics.median(full), 4),
                    "uncached_reads_s": round(statistics.median(bare), 4),
                }
            )
        )
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
