"""The spool protocol: claim, lease, commit, reap. Written once; submissions and builds both use it.

    incoming/<id>            ready to be claimed
    active/<id>.<token>      claimed; `.lease` inside, touched every heartbeat (its mtime is the
                             invisibility timestamp); the attempt log travels with the entry
    done/<id>                final

- Claiming is one rename with a fresh random token. Exactly one rename wins; losers get ENOENT.
  Because the token is in the path, a worker that lost its lease (paused, partitioned, presumed
  dead) can never write into or commit a *later* claim: its paths no longer exist.
- Reaping (any worker): a lease older than `lease_timeout` on the filesystem's clock is unlinked
  (the owner's next heartbeat then fails with ENOENT: it knows at once) and the entry is renamed
  back to incoming/<id>. If the owner died before writing its lease, the entry's own ctime (set by
  the claiming rename) stands in for the lease's mtime. The expiry is logged with whether the
  lease's worker died: a lease lost to a dead worker is not an attempt (`lost.py`).
- Committing renames active/<id>.<token> to done/<id> once every result file is written.
- Custody: right after the claiming rename, the entry's directories become the worker's
  (`custody.py`), so the client can no longer change any name in it; a `result/` the spool did
  not make is set aside; every open below active/ follows no symlink (`nofollow.py`).
- On NFS a rename that reports failure may still have happened (a retransmitted request whose
  reply was lost): before concluding, look for the destination.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cutor_spool.atomic import append_line, clear_unless_regular, make_dir, read_lines, set_aside
from cutor_spool.errors import LeaseLost, SpoolIOError
from cutor_spool.layout import QueueDirs
from cutor_spool.nofollow import open_beneath
from cutor_spool.sharing import Sharing
from cutor_spool.watcher.arrivals import scan_arrivals
from cutor_spool.watcher.claim import LEASE, Claim, iso
from cutor_spool.watcher.custody import Custody, seal, take
from cutor_spool.watcher.ids import active_name, misnamed_name, new_token, split_active, valid_id
from cutor_spool.watcher.lost import own_lease, tally, worker_fate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerIdentity:
    worker_id: str
    host: str
    pid: int

    @classmethod
    def make(cls, kind: str, host: str | None = None) -> WorkerIdentity:
        host = host or socket.gethostname()
        return cls(f"{kind}-{host}-{os.getpid()}", host, os.getpid())


def _regular_nonempty(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size > 0


def _submitter(custody: Custody, history: list[dict[str, Any]]) -> int:
    """The uid that dropped the entry: its owner when claimed, unless the entry was the worker's
    already (a requeue: then the earlier claim's record, which only the spool writes; else the
    worker's own uid dropped it)."""
    if custody.owner != os.geteuid():
        return custody.owner
    recorded = [rec.get("submitter") for rec in history if rec.get("event") == "claimed"]
    last = recorded[-1] if recorded else None
    return last if isinstance(last, int) and not isinstance(last, bool) else custody.owner


class SpoolQueue:
    """Claim/lease/commit/reap over one `QueueDirs`. `log_name` is where the attempt log lives
    inside an entry (it travels with the entry through every rename); `workers` is the spool's
    heartbeat directory, where the reaper looks whether an expired lease's worker died."""

    def __init__(
        self,
        dirs: QueueDirs,
        worker: WorkerIdentity,
        *,
        log_name: str,
        sharing: Sharing | None = None,
        workers: Path | None = None,
    ) -> None:
        self.dirs = dirs
        self.worker = worker
        self.log_name = log_name
        self.sharing = sharing  # a shared spool: each claimed entry is sealed for its submitter
        self.workers = workers
        self._arrivals: dict[str, float] = {}  # name -> ctime, of the names the last scan saw

    # -- finding ----------------------------------------------------------------------------
    def scan_incoming(self) -> list[str]:
        """Names in incoming/, oldest arrival first (see `scan_arrivals`)."""
        self._arrivals = found = scan_arrivals(self.dirs.incoming, self._arrivals)
        return sorted(found, key=found.__getitem__)

    # -- claiming ---------------------------------------------------------------------------
    def claim(self, name: str) -> Claim | None:
        """Claims incoming/<name>. None if another worker won. Names that are not ids, and
        entries that are not directories, are claimed under a fresh id so they can be finalised
        as invalid instead of being skipped forever."""
        token = new_token()
        source = self.dirs.incoming / name
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            return None
        entry_id = name if valid_id(name) else misnamed_name(token)
        target = self.dirs.active / active_name(entry_id, token)
        try:
            if stat.S_ISDIR(st.st_mode):
                os.rename(source, target)
            else:
                self._claim_wrapped(source, target, name)
        except FileNotFoundError:
            if not target.exists():  # on NFS our rename may have happened although it "failed"
                return None
        except OSError as exc:
            raise SpoolIOError(f"{name}: cannot claim: {exc.strerror}") from exc
        return self._start(entry_id, token, name, st.st_ctime)

    def _claim_wrapped(self, source: Path, target: Path, name: str) -> None:
        # The first rename (into a private directory of ours) is the atomic claim.
        holder = self.dirs.active / f".claiming-{target.name}"
        os.mkdir(holder)
        try:
            os.rename(source, holder / name)
        except OSError:
            os.rmdir(holder)
            raise
        os.rename(holder, target)

    def _start(self, entry_id: str, token: str, name: str, queued_at: float) -> Claim:
        path = self.dirs.active / active_name(entry_id, token)
        now = time.time()
        log_path = path / self.log_name
        try:
            custody = take(self.dirs.active, path.name, close=self.sharing.close if self.sharing else None)
            self._make_names_ours(path, log_path, token, custody)
        except FileNotFoundError as exc:
            raise LeaseLost(f"{entry_id}: claim vanished while starting") from exc
        except OSError as exc:
            raise SpoolIOError(f"{entry_id}: cannot prepare the claim: {exc.strerror}") from exc
        history = read_lines(log_path, beneath=self.dirs.active)
        submitter = _submitter(custody, history)
        if self.sharing is not None and custody.failure is None:
            try:
                if not seal(self.sharing, self.dirs.active, path.name, submitter):
                    log.warning("%s: no ACLs on this filesystem: its submitter cannot read its result", entry_id)
            except FileNotFoundError as exc:
                raise LeaseLost(f"{entry_id}: claim vanished while starting") from exc
            except OSError as exc:
                raise SpoolIOError(f"{entry_id}: cannot seal the claim: {exc.strerror}") from exc
        counts = tally(history)
        attempt = counts.claims
        lease = {
            "worker": self.worker.worker_id,
            "host": self.worker.host,
            "pid": self.worker.pid,
            "attempt": attempt,
            "token": token,
            "claimed_at": iso(now),
        }
        try:
            # Written in place, not atomically: only its mtime matters to the protocol.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            fd = open_beneath(self.dirs.active, f"{path.name}/{LEASE}", flags)
            try:
                os.write(fd, json.dumps(lease).encode())
            finally:
                os.close(fd)
            append_line(log_path, {"event": "claimed", **lease, "submitter": submitter}, beneath=self.dirs.active)
        except FileNotFoundError as exc:
            raise LeaseLost(f"{entry_id}: claim vanished while starting") from exc
        except OSError as exc:
            raise SpoolIOError(f"{entry_id}: cannot write lease: {exc.strerror}") from exc
        return Claim(
            dirs=self.dirs,
            entry_id=entry_id,
            token=token,
            attempt=attempt,
            counted_attempts=counts.counted,
            lost_leases=counts.lost,
            original_name=name,
            log_path=log_path,
            history=history,
            queued_at=queued_at,
            submitter=submitter,
            custody_failure=custody.failure,
        )

    def _make_names_ours(self, path: Path, log_path: Path, token: str, custody: Custody) -> None:
        """The client owned every byte of the entry until this claim. A `.lease` the spool did
        not write (the reaper and hand-backs remove ours before requeueing), and a `result/` the
        spool did not make (a client's directory there would let it swap our results for a
        symlink), are set aside (validation reports them); a log file that is not a regular file
        is removed. Nothing below writes through a client's symlink."""
        lease = path / LEASE
        if os.path.lexists(lease):
            set_aside(lease, token)
        parent = log_path.parent
        if parent != path:
            st = os.lstat(parent) if os.path.lexists(parent) else None
            foreign = st is not None and not stat.S_ISDIR(st.st_mode)
            # Ours only from an earlier claim, which always wrote its log there: owned by the worker
            # is not enough when the client is root too (an empty result/ it dropped looked ours).
            earlier = custody.result_ours and _regular_nonempty(log_path)
            if foreign or (st is not None and not earlier):
                set_aside(parent, token)
            make_dir(parent, beneath=self.dirs.active)
        clear_unless_regular(log_path, beneath=self.dirs.active)

    def known_elsewhere(self, claim: Claim) -> bool:
        """Is this id already active under another claim, or done? Checked after our own rename,
        so of two entries with one id the later claimer always sees the earlier one."""
        prefix = claim.entry_id + "."
        with os.scandir(self.dirs.active) as it:
            for entry in it:
                if entry.name.startswith(prefix) and entry.name != claim.path.name:
                    return True
        return os.path.lexists(self.dirs.done / claim.entry_id)

    # -- reaping ----------------------------------------------------------------------------
    def leases(self) -> list[tuple[str, str, float, float | None]]:
        """(id, token, the entry's ctime, its lease's mtime or None) of every active entry."""
        out: list[tuple[str, str, float, float | None]] = []
        try:
            it = os.scandir(self.dirs.active)
        except FileNotFoundError:
            return out
        with it:
            for entry in it:
                parsed = split_active(entry.name)
                if parsed is None:
                    continue
                try:
                    renamed = entry.stat(follow_symlinks=False).st_ctime
                except FileNotFoundError:
                    continue
                try:
                    stamped: float | None = os.lstat(Path(entry.path) / LEASE).st_mtime
                except FileNotFoundError:
                    stamped = None
                out.append((parsed[0], parsed[1], renamed, stamped))
        return out

    def reap(self, now: float, lease_timeout: float) -> list[str]:
        """Requeues every entry whose lease is older than `lease_timeout` (filesystem clock).

        An entry is invisible from its claim: the claiming rename sets its ctime, which no client
        can forge. The lease's mtime counts from then on, but not when it lies in the future: until
        the claimer has set it aside, a `.lease` in the entry may be the client's, with any mtime
        (an old one would get the fresh claim reaped at once, a far future one would keep a dead
        claim forever)."""
        requeued = []
        for entry_id, token, renamed, lease_mtime in self.leases():
            stamped = renamed
            if lease_mtime is not None and lease_mtime <= now + lease_timeout:
                stamped = max(stamped, lease_mtime)
            if now - stamped <= lease_timeout:
                continue
            path = self.dirs.active / active_name(entry_id, token)
            lease = own_lease(path / LEASE, token)
            try:  # the arbiter between reapers: the one whose unlink of the listed lease succeeds
                os.unlink(path / LEASE)
            except FileNotFoundError:
                # A lease was listed and is gone: another reaper is expiring it (between its
                # unlink and its rename). None was listed: its claimer died before writing one.
                if lease_mtime is not None or not path.exists():
                    continue
            except OSError as exc:
                log.warning("%s: cannot expire lease: %s", entry_id, exc)
                continue
            try:  # best effort: a claimer that died early may not have made the log's directory
                append_line(
                    path / self.log_name,
                    beneath=self.dirs.active,
                    value={
                        "event": "expired",
                        "token": token,
                        "by": self.worker.worker_id,
                        "at": iso(time.time()),
                        "lease_age": round(now - stamped, 3),
                        **worker_fate(self.workers, lease, entry_id, now, lease_timeout),
                    },
                )
            except (LeaseLost, SpoolIOError):
                pass
            try:
                os.rename(path, self.dirs.incoming / entry_id)
            except OSError as exc:
                # incoming/<id> may hold a newcomer with the same id; try again on a later pass.
                log.info("%s: requeue postponed: %s", entry_id, exc)
                continue
            log.warning(
                "%s: lease of claim %s expired %.1fs ago; requeued", entry_id, token, now - stamped - lease_timeout
            )
            requeued.append(entry_id)
        return requeued
