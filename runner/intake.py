"""Webhook intake core, shared by the Razorpay and Shiprocket endpoints.

Store, then acknowledge: a webhook is answered 2xx only after its row is committed. Concurrent
requests are grouped into one multi-row INSERT ... ON CONFLICT DO NOTHING per commit (group
commit), so ingest is not limited by one fsync per request. A redelivery (same event id) gets 2xx
and no second row. If the database cannot be reached the request gets 503 so the provider retries.
Processing is asynchronous: the batch's transaction NOTIFYs `storeops_webhooks`, which wakes the
worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from runner.db import is_unavailable

log = logging.getLogger("storeops.intake")

_TABLES = {"payment": "payment_webhooks", "shipping": "shipping_webhooks"}
_INSERT = """
insert into storeops.{table} (tenant_id, event_id, webhook_type, payload)
select * from unnest(%(tenants)s::uuid[], %(events)s::text[], %(types)s::text[], %(payloads)s::jsonb[])
on conflict (event_id) do nothing
returning event_id
"""


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


@dataclass
class _Item:
    tenant_id: str | None
    event_id: str
    webhook_type: str
    payload: str
    future: asyncio.Future


class IngestBatcher:
    """Groups concurrent webhook inserts for one table into shared transactions."""

    def __init__(self, pool: AsyncConnectionPool, kind: str, *, max_batch: int = 256, flushers: int = 3,
                 timeout: float = 3.0):
        self.pool = pool
        self.kind = kind
        self.sql = _INSERT.format(table=_TABLES[kind])
        self.max_batch = max_batch
        self.timeout = timeout
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks = [asyncio.get_running_loop().create_task(self._flush_loop()) for _ in range(flushers)]

    async def submit(self, tenant_id: str | None, event_id: str, webhook_type: str, payload: str) -> bool:
        """Store one webhook durably. True if new, False if it was a duplicate. Raises on DB failure."""
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put(_Item(tenant_id, event_id, webhook_type, payload, fut))
        return await asyncio.wait_for(fut, self.timeout)

    async def _flush_loop(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            live = [i for i in batch if not i.future.done()]
            if not live:
                continue
            try:
                inserted = await self._insert(live)
            except Exception as exc:
                if len(live) > 1 and not is_unavailable(exc):
                    # One bad row must not fail its neighbours: store them one by one.
                    await self._insert_singly(live)
                    continue
                for item in live:  # every waiter learns the batch failed; none is acknowledged
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item in live:
                if not item.future.done():
                    is_new = item.event_id in inserted
                    inserted.discard(item.event_id)  # a second copy in the same batch is a duplicate
                    item.future.set_result(is_new)

    async def _insert_singly(self, items: list[_Item]) -> None:
        for item in items:
            try:
                inserted = await self._insert([item])
            except Exception as exc:
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                if not item.future.done():
                    item.future.set_result(item.event_id in inserted)

    async def _insert(self, items: list[_Item]) -> set[str]:
        async with self.pool.connection(timeout=self.timeout) as conn:
            async with conn.transaction():
                cur = await conn.execute(self.sql, {
                    "tenants": [i.tenant_id for i in items],
                    "events": [i.event_id for i in items],
                    "types": [i.webhook_type for i in items],
                    "payloads": [i.payload for i in items],
                })
                rows = await cur.fetchall()
                if rows:
                    await conn.execute("select pg_notify('storeops_webhooks', %s)", (self.kind,))
        return {r[0] for r in rows}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
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
