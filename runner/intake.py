"""Webhook intake core, shared by the Razorpay and Shiprocket endpoints.

Store, then acknowledge: a webhook is answered 2xx only after its row is committed. Concurrent
requests are grouped into one multi-row INSERT ... ON CONFLICT DO NOTHING per commit (group
commit), so ingest is not limited by one fsync per request. A redelivery (same event id) gets 2xx
and no second row. If the database cannot be reached the request gets 503 so the provider retries.
Processing is asynchronous: after a batch with new rows commits, the worker of this process (if
`storeops serve` runs one) is woken directly, and `storeops_webhooks` is NOTIFYed for the workers
of other processes (their polling is the fallback if a notification is ever lost).

Why the NOTIFY is not inside the batch's transaction: Postgres serialises every committing
transaction that has NOTIFYed on one global lock, held through the commit's WAL flush, so batches
that notified could not share an fsync (group commit) and ingest was limited to one fsync per batch.
Here one notifier per table sends a NOTIFY after commits (one at a time, each covering every batch
committed before it) in its own asynchronously committed transaction: losing a wake-up in a crash
costs nothing, the rows are durable and the workers also poll. At most one goes out per 5 ms when
no worker runs in this process, per 50 ms when one does (it was woken already; at full speed the
NOTIFYs had been half of all commits).

One flusher per table and process: while its batch commits, the next one gathers. A second
flusher made the batches half as big, and Postgres's CPU per row (a commit costs about as much as
four rows) outweighed the overlap: in the bench, 6.9 webhooks per commit and 6,363/s with two,
10.6 and 9,628/s with one. The flusher keeps its pooled connection while webhooks keep coming, so a
batch costs one round trip: no pool check query, no BEGIN/COMMIT statements.

Log lines are per committed batch ("webhooks stored", every webhook's event id, type, tenant,
request id and outcome in it), not per webhook: a line each cost more CPU than storing the row.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
import time
from dataclasses import dataclass

import psycopg
from psycopg import generators, pq
from psycopg_pool import AsyncConnectionPool

from runner.db import is_unavailable

log = logging.getLogger("storeops.intake")

_TABLES = {"payment": "payment_webhooks", "shipping": "shipping_webhooks"}
_PROVIDERS = {"payment": "razorpay", "shipping": "shiprocket"}
# One statement, so one round trip: it runs in its own (implicit) transaction, and psycopg returns
# only after the server's ReadyForQuery, which follows the commit (and its WAL flush). Parameters go
# in binary: no text escaping of every array element. $1 is a uuid[] of the rows' ids (see _uuid7s),
# the other four are text[] (see _text_array), cast to the columns' types.
_INSERT = """
insert into storeops.{table} (id, tenant_id, event_id, webhook_type, payload)
select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[])
on conflict (event_id) do nothing
returning event_id
"""
_UUID_ARRAY_OID = 2951
_TEXT_ARRAY_OID = 1009
_PARAM_TYPES = [_UUID_ARRAY_OID] + [_TEXT_ARRAY_OID] * 4
_BINARY = [1] * 5
_TEXT_OID = 25
_UUID_OID = 2950
_ARRAY_HEAD = struct.Struct("!iiiii")  # ndim, has nulls, element type, length, lower bound
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_UUID_LENGTH = _LENGTH.pack(16)
_uuid7_ms = 0  # the millisecond of this process's last id
_uuid7_counter = 0


def _uuid7s(count: int) -> bytes:
    """`count` new UUIDv7s (RFC 9562) as a binary uuid[]: 48 bits of Unix time in milliseconds,
    then the version, a 12-bit counter, the variant and 62 random bits. As RFC 9562 6.2 (method 1)
    has it, the counter starts at 0 in each new millisecond, and when it would overflow the
    millisecond moves on by one; the clock never goes back within a process (a clock stepped back
    keeps the last millisecond). So a process's ids are increasing in the order they were made,
    and the random bits keep two processes' ids apart.

    Why the receiver names its rows: gen_random_uuid() (the column default) puts every new row at a
    random place in the primary key, so each insert touches a different leaf page, and after each
    checkpoint writes a full-page image of it. Time-ordered ids are appended at the right edge.
    Measured (python -m bench.rowcost --random-ids A, 2 clients storing batches of 18 webhooks, 4
    interleaved rounds): Postgres spent 4.4 to 6.7 µs less CPU per row (7 to 12%) in two runs, and
    the gap grew with the table: with random ids the cost per row rose from 55 to 67 µs as the
    table grew to 380,000 rows, with these it stayed at 57 to 60.
    Within a batch (one created_at) they also follow arrival order, which the payment worker's
    claim (created_at, id) then keeps."""
    global _uuid7_ms, _uuid7_counter
    ms, counter = time.time_ns() // 1_000_000, -1
    if ms <= _uuid7_ms:
        ms, counter = _uuid7_ms, _uuid7_counter
    rand = os.urandom(8 * count)
    parts = [_ARRAY_HEAD.pack(1, 0, _UUID_OID, count, 1)]
    head = ms.to_bytes(6, "big")
    for i in range(0, 8 * count, 8):
        counter += 1
        if counter > 0xFFF:
            ms, counter = ms + 1, 0
            head = ms.to_bytes(6, "big")
        parts.append(_UUID_LENGTH)
        parts.append(head)
        parts.append((0x7000 | counter).to_bytes(2, "big"))
        parts.append(((rand[i] & 0x3F) | 0x80).to_bytes(1, "big"))
        parts.append(rand[i + 1:i + 8])
    _uuid7_ms, _uuid7_counter = ms, counter
    return b"".join(parts)


def _text_array(items: list) -> bytes:
    """A one-dimensional text[] in Postgres's binary format; items are str, bytes (UTF-8) or None."""
    parts = [_ARRAY_HEAD.pack(1, 1 if None in items else 0, _TEXT_OID, len(items), 1)]
    pack = _LENGTH.pack
    for item in items:
        if item is None:
            parts.append(_NULL)
            continue
        data = item.encode() if type(item) is str else item
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


# Asynchronously committed: a wake-up lost in a crash costs nothing (the workers also poll).
_NOTIFY = "select set_config('synchronous_commit', 'off', true), pg_notify('storeops_webhooks', '{kind}')"


def _checked(results: list) -> list:
    """libpq's results for one query, raising the first error as psycopg would."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding="utf-8")
    return results


class _HeldConnectionLost(Exception):
    """The connection a flusher kept between batches had died (e.g. its backend was terminated)."""


class BodyTooLarge(Exception):
    pass


async def read_body(request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge(f"body of {declared} bytes exceeds the {limit} byte limit")
        except ValueError:
            pass
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True)
class _Item:
    tenant_id: str | None
    event_id: str
    webhook_type: str
    payload: str | bytes
    request_id: str | None
    future: asyncio.Future


class IngestBatcher:
    """Groups concurrent webhook inserts for one table into shared transactions."""

    def __init__(self, pool: AsyncConnectionPool, kind: str, *, context=None, max_batch: int = 256,
                 flushers: int = 1, timeout: float = 3.0, notify_every: float = 0.005,
                 notify_every_shared: float = 0.05, idle: float = 1.0, hold: float = 30.0):
        self.pool = pool
        # A worker in this process (context.wake_local_worker) is woken directly after each
        # commit; then the NOTIFY only has to reach the workers of other processes, and goes out
        # at most every `notify_every_shared` seconds instead of every `notify_every`.
        self.context = context
        self.notify_every_shared = notify_every_shared
        self.kind = kind
        self.provider = _PROVIDERS[kind]
        self.sql = _INSERT.format(table=_TABLES[kind]).encode()
        self.notify_sql = _NOTIFY.format(kind=kind).encode()
        self.max_batch = max_batch
        self.timeout = timeout
        # At most one NOTIFY per `notify_every` seconds: a worker that wakes drains everything
        # stored so far, so one wake-up covers every batch committed before it.
        self.notify_every = notify_every
        # A flusher or the notifier keeps its pooled connection between batches (no pool round
        # trip and check query per batch) until `idle` seconds pass without work, and gives it
        # back after `hold` seconds in any case, so the pool still checks and recycles it.
        self.idle = idle
        self.hold = hold
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._notify_wanted = asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        # (deadline, future) in submit order: one sweeper fails the overdue ones with TimeoutError,
        # which costs less per request than a timer each (asyncio.wait_for).
        self._deadlines: collections.deque[tuple[float, asyncio.Future]] = collections.deque()
        self._tasks = [loop.create_task(self._flush_loop()) for _ in range(flushers)]
        self._tasks.append(loop.create_task(self._notify_loop()))
        self._tasks.append(loop.create_task(self._expire_loop()))

    def enqueue(self, tenant_id: str | None, event_id: str, webhook_type: str, payload: str | bytes,
                request_id: str | None = None) -> asyncio.Future:
        """Queue one webhook for the next batch. The future resolves to True once it is committed
        as new, False if it was a duplicate; it fails when the database does, and with
        TimeoutError when it is not stored within `timeout` seconds."""
        fut = self._loop.create_future()
        self.queue.put_nowait(_Item(tenant_id, event_id, webhook_type, payload, request_id, fut))
        self._deadlines.append((self._loop.time() + self.timeout, fut))
        return fut

    async def submit(self, tenant_id: str | None, event_id: str, webhook_type: str, payload: str | bytes,
                     request_id: str | None = None) -> bool:
        """Store one webhook durably: True if new, False if it was a duplicate (see enqueue)."""
        return await self.enqueue(tenant_id, event_id, webhook_type, payload, request_id)

    async def _expire_loop(self, every: float = 0.05) -> None:
        deadlines = self._deadlines
        while True:
            await asyncio.sleep(every)
            now = self._loop.time()
            while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
                fut = deadlines.popleft()[1]
                if not fut.done():
                    fut.set_exception(TimeoutError(f"not stored within {self.timeout} s"))

    async def _next(self, give_back: float):
        """The next queued item, or None once the queue stayed empty for `idle` seconds or the
        connection is due back to the pool."""
        if self._loop.time() >= give_back:
            return None
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:
            return await asyncio.wait_for(self.queue.get(), self.idle)
        except TimeoutError:
            return None

    def _top_up(self, batch: list[_Item]) -> list[_Item]:
        while len(batch) < self.max_batch:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _flush_loop(self) -> None:
        batch: list[_Item] = []
        while True:
            if not batch:
                batch = [await self.queue.get()]
            try:
                async with self.pool.connection(timeout=self.timeout) as conn:
                    give_back = self._loop.time() + self.hold
                    fresh = True  # the pool checked it just now
                    while batch:
                        await self._store(conn, self._top_up(batch), held=not fresh)
                        fresh = False
                        item = await self._next(give_back)
                        batch = [item] if item is not None else []
            except _HeldConnectionLost:
                continue  # the kept connection died while idle: the same batch, on a checked one
            except Exception as exc:  # no connection, or it broke: none of these is acknowledged
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                batch = []

    async def _store(self, conn, batch: list[_Item], *, held: bool = False) -> None:
        """Store a batch and resolve its waiters. Re-raises when the database is unavailable, so
        the caller hands the (possibly broken) connection back to the pool. On a connection kept
        from an earlier batch (`held`) that turns out to be dead, raises _HeldConnectionLost
        without failing anyone, and the caller retries the batch on a fresh one (ON CONFLICT DO
        NOTHING makes a retry of a batch that did commit harmless: its rows come back duplicates)."""
        live = [i for i in batch if not i.future.done()]
        if not live:
            return
        try:
            inserted = await self._insert(conn, live)
        except Exception as exc:
            if held and conn.broken and is_unavailable(exc):
                raise _HeldConnectionLost() from exc
            if len(live) > 1 and not is_unavailable(exc):
                # One bad row must not fail its neighbours: store them one by one.
                await self._insert_singly(conn, live)
                return
            for item in live:  # every waiter learns the batch failed; none is acknowledged
                if not item.future.done():
                    item.future.set_exception(exc)
            if is_unavailable(exc):
                raise
            return
        if inserted:
            self._wake()
        done = []
        for item in live:
            is_new = item.event_id in inserted
            inserted.discard(item.event_id)  # a second copy in the same batch is a duplicate
            if not item.future.done():
                item.future.set_result(is_new)
                done.append((item, "stored" if is_new else "duplicate"))
            elif is_new:  # its waiter gave up (503) while the batch committed: its retry is a duplicate
                done.append((item, "stored_after_timeout"))
        self._log(done)

    async def _insert_singly(self, conn, items: list[_Item]) -> None:
        for n, item in enumerate(items):
            try:
                inserted = await self._insert(conn, [item])
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
                if is_unavailable(exc):
                    for rest in items[n + 1:]:
                        if not rest.future.done():
                            rest.future.set_exception(exc)
                    raise
            else:
                is_new = item.event_id in inserted
                if is_new:
                    self._wake()
                if not item.future.done():
                    item.future.set_result(is_new)
                    self._log([(item, "stored" if is_new else "duplicate")])
                elif is_new:
                    self._log([(item, "stored_after_timeout")])

    def _wake(self) -> None:
        """New rows are committed: wake this process's worker now, the others by NOTIFY."""
        self._notify_wanted.set()
        wake = self.context.wake_local_worker if self.context is not None else None
        if wake is not None:
            try:
                wake(self.kind)
            except Exception:  # the rows are committed whatever happens here; the worker also polls
                log.exception("could not wake the worker", extra={"kind": self.kind})

    def _log(self, done: list[tuple[_Item, str]]) -> None:
        """One log line per committed batch, listing every webhook in it (event id, type, tenant,
        request id, outcome: stored, duplicate, or stored_after_timeout for one whose request was
        already answered 503): grep finds any of them, at a fraction of the cost of a line each at
        thousands of webhooks a second."""
        if not done or not log.isEnabledFor(logging.INFO):
            return
        new = sum(1 for _, outcome in done if outcome != "duplicate")
        log.info("webhooks stored", extra={
            "provider": self.provider, "stored": new, "duplicates": len(done) - new,
            "webhooks": [{"event_id": i.event_id, "type": i.webhook_type, "tenant_id": i.tenant_id,
                          "request_id": i.request_id, "outcome": outcome} for i, outcome in done],
        })

    async def _insert(self, conn, items: list[_Item]) -> set[str]:
        """One INSERT for the batch, straight through libpq: the five arrays are built here in
        binary and sent with PQsendQueryParams, and the returned event ids read off the result.
        (psycopg's cursor does the same with more Python per call; at a batch per round trip and
        thousands of webhooks a second that was a fifth of the runner's CPU.) The statement is
        not prepared, so it works through transaction-mode poolers."""
        params = [_uuid7s(len(items)),
                  _text_array([i.tenant_id for i in items]), _text_array([i.event_id for i in items]),
                  _text_array([i.webhook_type for i in items]), _text_array([i.payload for i in items])]
        async with conn.lock:
            pgconn = conn.pgconn
            pgconn.send_query_params(self.sql, params, param_types=_PARAM_TYPES, param_formats=_BINARY,
                                     result_format=0)
            results = await conn.wait(generators.execute(pgconn))
        inserted: set[str] = set()
        for result in _checked(results):
            if result.status == pq.ExecStatus.TUPLES_OK:
                inserted.update(result.get_value(row, 0).decode() for row in range(result.ntuples))
        return inserted

    async def _notify(self, conn) -> None:
        """The NOTIFY, also straight through libpq (one simple query). Through psycopg's cursor,
        at one per 5 ms per process, it had been 8.5% of the runner's CPU samples at full speed;
        this way intake was 11% faster (interleaved runs, bench section 1)."""
        async with conn.lock:
            pgconn = conn.pgconn
            pgconn.send_query(self.notify_sql)
            _checked(await conn.wait(generators.execute(pgconn)))

    async def _notify_loop(self) -> None:
        """Wake the workers after commits: one NOTIFY at a time and at most one per `notify_every`
        seconds, each covering every batch committed before it was sent."""
        loop = self._loop
        wanted = self._notify_wanted
        last = 0.0
        while True:
            await wanted.wait()
            try:
                async with self.pool.connection(timeout=self.timeout) as conn:
                    give_back = loop.time() + self.hold
                    while True:
                        local = self.context is not None and self.context.wake_local_worker is not None
                        wait = last + (self.notify_every_shared if local else self.notify_every) - loop.time()
                        if wait > 0:
                            await asyncio.sleep(wait)  # batches committing meanwhile ride on this one
                        wanted.clear()
                        last = loop.time()
                        await self._notify(conn)
                        if loop.time() >= give_back:
                            break
                        try:
                            await asyncio.wait_for(wanted.wait(), self.idle)
                        except TimeoutError:
                            break
            except Exception as exc:  # the workers poll too; nothing stored is lost
                log.info("could not notify the worker", extra={"kind": self.kind, "error": str(exc)[:200]})
                wanted.set()  # try again once the database answers
                await asyncio.sleep(0.5)

    async def close(self) -> None:
        # Cancel until they are done: on Python 3.11, asyncio.wait_for() swallows a cancellation
        # that arrives just as the awaited thing completes, and the loop would go on.
        for _ in range(20):
            pending = [task for task in self._tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=0.5)
        await asyncio.gather(*self._tasks, return_exceptions=True)


class RateLimiter:
    """Token buckets per key (source address, tenant). Refuses with the seconds to wait."""

    def __init__(self, rate: float, burst: float):
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> float:
        """0 if allowed (and consumes a token), else seconds until a token is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > 100_000:
                self._buckets.clear()
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate
