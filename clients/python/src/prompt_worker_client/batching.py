"""The log buffer: conversations waiting to be sent, cut into batches by size and age, with a
bound on memory (in conversations and in bytes of their JSON). Pure: the caller passes the
monotonic time and holds the lock.

A batch, once formed, keeps its rows, its body bytes and its Idempotency-Key until the
service answers for it: a retry sends exactly the bytes first sent with the same key, so a
batch whose answer was lost is never stored twice. That is also why a full buffer drops the
oldest conversations *not yet in a batch*: the batch being sent is never altered.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Row = tuple[int, bytes]  # (sequence number, the conversation as JSON)
_OPEN, _CLOSE = b'{"conversations":[', b"]}"


def new_key() -> str:
    return str(uuid.uuid4())


@dataclass(eq=False)
class Batch:
    """Rows sent together as one POST /v1/conversations under one Idempotency-Key."""

    rows: list[Row]
    key: str
    attempts: int = 0  # failed attempts so far
    not_before: float = 0.0  # monotonic time before which it is not sent again
    size: int = field(init=False)  # bytes of the rows' JSON

    def __post_init__(self) -> None:
        self.size = sum(len(row) for _, row in self.rows)

    @property
    def body(self) -> bytes:
        """The request body: the same bytes at every attempt. Joined per attempt rather than
        kept, so that a batch does not hold its conversations twice in memory."""
        return _OPEN + b",".join(row for _, row in self.rows) + _CLOSE


class Buffer:
    def __init__(
        self,
        batch_size: int,
        max_buffered: int,
        flush_interval: float,
        make_key: Callable[[], str] = new_key,
        max_bytes: int | None = None,
    ) -> None:
        if not 1 <= batch_size < max_buffered:
            raise ValueError("batch_size must be at least 1 and less than max_buffered")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self.batch_size = batch_size
        self.max_buffered = max_buffered
        self.max_bytes = max_bytes  # None: no bound in bytes
        self.flush_interval = flush_interval
        self._make_key = make_key
        self._pending: deque[tuple[int, bytes, float]] = deque()  # (seq, row, logged at)
        self._formed: deque[Batch] = deque()  # the head is the batch being sent
        self._formed_rows = 0
        self.bytes = 0  # of every row held, pending or formed
        self.last_seq = 0
        self._flush_upto = 0

    def __len__(self) -> int:
        return len(self._pending) + self._formed_rows

    def add(self, row: bytes, now: float) -> tuple[bool, int]:
        """Buffer one conversation. Answers whether the sender should be woken (the first
        row starts the age clock; a full batch is due now) and how many were dropped to make
        room: the oldest rows not yet in a batch, the new one last. Past max_buffered that is
        one (batch_size < max_buffered guarantees a pending row to drop); past max_bytes it
        may be several, or the new row itself when it does not fit beside the batches formed
        (or alone)."""
        self.last_seq += 1
        self._pending.append((self.last_seq, row, now))
        self.bytes += len(row)
        dropped = 0
        while self._pending and self._over_bound():
            self.bytes -= len(self._pending.popleft()[1])
            dropped += 1
        waiting = len(self._pending)
        return waiting == 1 or waiting == self.batch_size, dropped

    def _over_bound(self) -> bool:
        return len(self) > self.max_buffered or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        )

    def wait_time(self, now: float) -> float | None:
        """Seconds until the sender has something to send (0: now); None when empty."""
        if self._formed:
            return max(self._formed[0].not_before - now, 0.0)
        if not self._pending:
            return None
        seq, _, logged_at = self._pending[0]
        if len(self._pending) >= self.batch_size or seq <= self._flush_upto:
            return 0.0
        return max(logged_at + self.flush_interval - now, 0.0)

    def take(self, now: float) -> Batch | None:
        """The batch to send now, if one is due: the head batch (a retry or the rest of a
        split one), else a new batch of the oldest pending rows."""
        if self.wait_time(now) != 0.0:
            return None
        if not self._formed:
            count = min(self.batch_size, len(self._pending))
            rows = [(seq, row) for seq, row, _ in (self._pending.popleft() for _ in range(count))]
            self._formed.append(Batch(rows, self._make_key()))
            self._formed_rows += count
        return self._formed[0]

    def is_current(self, batch: Batch) -> bool:
        """Whether `batch` is still the head (clear() may have dropped it while it was sent)."""
        return bool(self._formed) and self._formed[0] is batch

    def done(self, batch: Batch) -> int:
        """The service answered for the batch for good (stored or refused): forget it."""
        if not self.is_current(batch):
            return 0
        self._formed.popleft()
        self._formed_rows -= len(batch.rows)
        self.bytes -= batch.size
        return len(batch.rows)

    def retry_later(self, batch: Batch, delay: float, now: float) -> None:
        if self.is_current(batch):
            batch.attempts += 1
            batch.not_before = now + delay

    def replace(self, batch: Batch, parts: Sequence[list[Row]]) -> None:
        """Put new batches (new keys: the service stored nothing of a refused batch) in
        place of `batch`, in order, at the head."""
        if not self.is_current(batch):
            return
        self.done(batch)
        batches = [Batch(rows, self._make_key()) for rows in parts if rows]
        for new in reversed(batches):
            self._formed.appendleft(new)
            self._formed_rows += len(new.rows)
            self.bytes += new.size

    def request_flush(self) -> int:
        """Send every row buffered so far without waiting for its age; answers the sequence
        number that settled() waits for."""
        self._flush_upto = self.last_seq
        return self.last_seq

    def settled(self, upto: int) -> bool:
        """Whether every row up to sequence `upto` has been stored or dropped."""
        # Rows keep their order through batches, splits and drops: each batch's first row is
        # its oldest, and every formed row is older than every pending one.
        if any(batch.rows[0][0] <= upto for batch in self._formed):
            return False
        return not (self._pending and self._pending[0][0] <= upto)

    def clear(self) -> int:
        """Drop everything (close() gave up); answers how many rows that was."""
        count = len(self)
        self._pending.clear()
        self._formed.clear()
        self._formed_rows = 0
        self.bytes = 0
        return count
