"""Batched accounting for the direct path (direct.py, docs/ledger.md "Blocks").

A journal record per hold and per settle (fsynced, exclusive creates) costs about 1 ms each: at
most ~1,100 holds a second per account. The direct path charges before it runs, exactly, but in
blocks: one ledger hold covers up to `size` requests' worst case (the fee plus the rate for the
instance's wall-time limit, as payment.py's `most_cost`), each request reserves its worst case
in memory before it runs and spends its real cost after, and the block is settled as ONE
journal record (its `items`: each request's id and charge, which add up to the charge) when it
is used up, older than `life`, idle for `idle`, or when the door stops.

- Never overdrawn: the ledger places the block's hold only if the account can cover it
  (its compare-and-swap, across executors and hosts); a request runs only when its worst case
  fits in what is left of its block; a block's charges never exceed its hold.
- 402 with no run: when the account cannot cover even one request's worst case.
- A worker that dies mid-block loses its block: its hold expires like a lease (ttl: `life` plus
  the wall-time limit plus `deployments.hold_margin`), and its funds come back. The requests it
  served are then not charged: under-charging on a crash is the system's fault and accepted;
  over-charging never happens (nothing is settled twice: a settle is idempotent per hold).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from cutor_spool.ledger import InsufficientFunds, Ledger, LedgerError

log = logging.getLogger(__name__)

BLOCK_SIZE = 64  # requests' worst cases one hold covers
BLOCK_LIFE = 5.0  # seconds a block takes new requests
BLOCK_IDLE = 0.5  # seconds without a request before a block is settled


@dataclass
class Block:
    hold_id: str
    account: str
    amount: int  # the hold
    made: float
    wall: float  # the wall-time limit its hold's ttl allows for (a request with a longer one: a new block)
    reserved: int = 0  # worst cases of the requests in flight
    charged: int = 0
    taken: int = 0  # requests that reserved in it
    in_flight: int = 0
    last_used: float = 0.0
    items: list[tuple[str, int]] = field(default_factory=list)
    closing: bool = False

    @property
    def key(self) -> tuple[str, float]:
        return self.account, self.wall

    def fits(self, most: int, wall: float, size: int, now: float, life: float) -> bool:
        """Room for one more request of this worst case, whose run ends before the hold expires."""
        left = self.amount - self.charged - self.reserved
        young = now - self.made < life and wall <= self.wall
        return not self.closing and left >= most and self.taken < size and young


class BlockBook:
    """The blocks of one executor's door. The request path only reserves and spends in memory;
    the ledger's writes (the next block's hold, placed when the open one is half used, and the
    settlement of a block that ended) are the sweeper's (`sweep`, on the door's thread, woken by
    `wake`), but for an account's first block, which its first request places itself."""

    def __init__(
        self,
        ledger: Ledger,
        holder: str,
        *,
        margin: float,
        size: int = BLOCK_SIZE,
        life: float = BLOCK_LIFE,
        idle: float = BLOCK_IDLE,
    ) -> None:
        self.ledger, self.holder, self.margin = ledger, holder, margin
        self.size, self.life, self.idle = size, life, idle
        self._prefix = f"blk-{secrets.token_hex(6)}"
        self._count = 0
        self._lock = threading.Lock()
        # Blocks are kept by account and wall-time limit (the hold's ttl allows for it; the same
        # account paying for deployments of different limits has a block for each).
        self._accounts: dict[tuple[str, float], threading.Lock] = {}
        self._open: dict[tuple[str, float], Block] = {}
        self._spare: dict[tuple[str, float], Block] = {}  # the next block, placed ahead
        self._wanted: dict[tuple[str, float], int] = {}  # next blocks to be placed: their worst case
        self._closing: list[Block] = []  # ended, with requests in flight
        self._due: list[Block] = []  # ended, nothing in flight: to be settled
        self.wake = threading.Event()

    def reserve(self, account: str, most: int, wall_limit: float) -> Block:
        """The block this request's worst case `most` is reserved in. InsufficientFunds when the
        account cannot cover `most`."""
        key = (account, wall_limit)
        with self._lock:  # the usual case: room in the open block, no ledger write, no wait
            gate = self._accounts.setdefault(key, threading.Lock())
            block = self._open.get(key)
            now = time.monotonic()
            if block is not None and block.fits(most, wall_limit, self.size, now, self.life):
                self._ahead(block, most)
                return self._take(block, most, now)
        with gate:  # one new hold per account and limit at a time
            with self._lock:
                now = time.monotonic()
                block = self._open.get(key)
                if block is not None and not block.fits(most, wall_limit, self.size, now, self.life):
                    self._retire(block)
                    block = None
                if block is None and (spare := self._spare.pop(key, None)) is not None:
                    if spare.fits(most, wall_limit, self.size, now, self.life):
                        block = spare
                    else:
                        self._retire(spare)
                if block is not None:
                    self._open[key] = block
                    self._ahead(block, most)
                    return self._take(block, most, now)
                ended = [b for b in self._due if b.account == account]  # any limit's: funds are the account's
                self._due = [b for b in self._due if b.account != account]
            for old in ended:  # their unused funds come back before the new hold is decided
                self._settle(old)
            block = self._place(account, most, wall_limit)
            with self._lock:
                self._open[key] = block
                return self._take(block, most, time.monotonic())

    def _ahead(self, block: Block, most: int) -> None:
        """Asks the sweeper for the next block once this one is half used (the lock held)."""
        if block.taken + 1 >= self.size // 2 and block.key not in self._spare:
            self._wanted[block.key] = most
            self.wake.set()

    def _take(self, block: Block, most: int, now: float) -> Block:
        block.reserved += most
        block.taken += 1
        block.in_flight += 1
        block.last_used = now
        return block

    def _retire(self, block: Block) -> None:
        """Closes the block to new requests (the lock held): settled once nothing is in flight
        (by the sweeper, or by `reserve` when it must place a hold at once)."""
        block.closing = True
        if self._open.get(block.key) is block:
            del self._open[block.key]
        if self._spare.get(block.key) is block:
            del self._spare[block.key]
        (self._closing if block.in_flight else self._due).append(block)
        self.wake.set()

    def _place(self, account: str, most: int, wall_limit: float) -> Block:
        ttl = self.life + wall_limit + self.margin
        for _ in range(3):  # another executor took funds between our look and our hold
            available = self.ledger.balance(account).available
            count = min(self.size, available // most) if most > 0 else self.size
            if count < 1:
                raise InsufficientFunds(account, available, most)
            with self._lock:
                self._count += 1
                hold_id = f"{self._prefix}-{self._count}"
            try:
                self.ledger.hold(account, hold_id, count * most, ttl=ttl, holder=self.holder)
            except InsufficientFunds:
                continue
            return Block(hold_id, account, count * most, time.monotonic(), wall_limit)
        available = self.ledger.balance(account).available
        raise InsufficientFunds(account, available, most)

    def spend(self, block: Block, most: int, invocation: str, cost: int) -> None:
        """The request ran: its real cost (at most `most`) is charged in the block."""
        self._end(block, most, (invocation, min(cost, most)))

    def cancel(self, block: Block, most: int) -> None:
        """The request did not run (no instance after all, a refusal): nothing charged."""
        self._end(block, most, None)

    def _end(self, block: Block, most: int, item: tuple[str, int] | None) -> None:
        with self._lock:
            block.reserved -= most
            block.in_flight -= 1
            if item is not None:
                block.items.append(item)
                block.charged += item[1]
            if block.closing and block.in_flight == 0 and block in self._closing:
                self._closing.remove(block)
                self._due.append(block)
                self.wake.set()

    def sweep(self, *, everything: bool = False) -> None:
        """The sweeper: places the next blocks asked for, ends the blocks idle for `idle` or older
        than `life` (every one, when stopping), and settles the ended ones."""
        self.wake.clear()
        with self._lock:
            wanted, self._wanted = self._wanted, {}
        for key, most in [] if everything else wanted.items():
            with self._accounts[key]:
                if key in self._spare:
                    continue
                try:
                    spare = self._place(key[0], most, key[1])
                except InsufficientFunds:
                    continue  # the open block is all the account has: its requests will say 402
                with self._lock:
                    self._spare[key] = spare
        now = time.monotonic()
        with self._lock:
            for block in [*self._open.values(), *self._spare.values()]:
                idle = self._spare.get(block.key) is not block and now - block.last_used > self.idle
                if everything or idle or now - block.made >= self.life:
                    self._retire(block)
            due, self._due = self._due, []
        for block in due:
            self._settle(block)

    def _settle(self, block: Block) -> None:
        note = f"{len(block.items)} direct request(s) of a block"
        try:
            if block.items:
                self.ledger.settle(block.hold_id, block.charged, note=note, items=list(block.items))
            else:
                self.ledger.release(block.hold_id, reason="a block nobody used")
        except LedgerError as exc:  # it expired already: its requests go uncharged (our fault)
            log.warning("block %s of %s could not be settled (%s): %d request(s), %d units uncharged",
                        block.hold_id, block.account, exc, len(block.items), block.charged)  # fmt: skip
