"""The intake batcher against a real database: what one bad or unlucky webhook does to its batch,
and how store failures are classified (found by review; each test failed before its fix)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid

import psycopg
import pytest

from runner.db import is_unavailable, open_pool
from runner.intake import IngestBatcher


@pytest.fixture
async def batcher(fresh_db):
    pool = await open_pool(fresh_db, min_size=1, max_size=4)
    made: list[IngestBatcher] = []

    def make(**kwargs) -> IngestBatcher:
        made.append(IngestBatcher(pool, "payment", **kwargs))
        return made[-1]

    yield make
    for b in made:
        await asyncio.wait_for(b.close(), 10)  # closing must not hang (it once could, see IngestBatcher.close)
    await asyncio.wait_for(pool.close(), 10)


def _rows(db: str) -> set[str]:
    with psycopg.connect(db) as c:
        return {r[0] for r in c.execute("select event_id from storeops.payment_webhooks").fetchall()}


async def test_a_value_too_big_for_the_index_fails_only_its_own_webhook(fresh_db, batcher):
    b = batcher()
    huge = os.urandom(4500).hex()  # incompressible: too big for the event_id btree (54000)
    futures = [b.enqueue(None, "ev-good-1", "payment.captured", b"{}"),
               b.enqueue(None, huge, "payment.captured", b"{}"),
               b.enqueue(None, "ev-good-2", "payment.captured", b"{}")]
    await asyncio.wait(futures, timeout=10)
    assert futures[0].result() is True and futures[2].result() is True
    exc = futures[1].exception()
    assert exc is not None and exc.sqlstate == "54000"
    assert not is_unavailable(exc)  # a 400 for that webhook, not a 503 for everyone
    assert _rows(fresh_db) == {"ev-good-1", "ev-good-2"}


async def test_a_batch_that_commits_after_its_waiters_gave_up_is_still_logged(fresh_db, batcher, caplog):
    caplog.set_level(logging.INFO, logger="storeops.intake")
    b = batcher(timeout=1.0)
    blocker = await psycopg.AsyncConnection.connect(fresh_db)
    try:
        # An uncommitted row with the same event id holds the batch's INSERT on its unique index.
        await blocker.execute("insert into storeops.payment_webhooks (event_id, webhook_type, payload) "
                              "values ('ev-block', 't', '{}')")
        first = b.enqueue(None, "ev-block", "t", b'{"x":1}')
        other = b.enqueue(None, "ev-other", "t", b'{"x":2}')
        await asyncio.sleep(1.5)
        assert isinstance(first.exception(), TimeoutError) and isinstance(other.exception(), TimeoutError)
        await blocker.rollback()  # the held batch now commits both rows
        for _ in range(50):
            if "ev-other" in _rows(fresh_db):
                break
            await asyncio.sleep(0.05)
    finally:
        await blocker.close()
    await asyncio.sleep(0.1)
    assert _rows(fresh_db) == {"ev-block", "ev-other"}
    logged = [w for r in caplog.records if r.getMessage() == "webhooks stored" for w in r.webhooks]
    assert {(w["event_id"], w["outcome"]) for w in logged} == {("ev-block", "stored_after_timeout"),
                                                               ("ev-other", "stored_after_timeout")}


async def test_a_kept_connection_that_died_while_idle_is_replaced_without_failing_the_batch(fresh_db, batcher):
    b = batcher(idle=5)
    assert await b.submit(None, "ev-1", "t", b"{}") is True  # the flusher now keeps its connection
    with psycopg.connect(fresh_db, autocommit=True) as c:
        killed = c.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                           "where datname = current_database() and pid <> pg_backend_pid() "
                           "and backend_type = 'client backend'").fetchone()[0]
    assert killed >= 1
    await asyncio.sleep(0.3)
    assert await asyncio.wait_for(b.submit(None, "ev-2", "t", b"{}"), 10) is True
    assert _rows(fresh_db) == {"ev-1", "ev-2"}


async def test_a_read_only_database_is_unavailable_not_a_bug(fresh_db, batcher):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f'alter database "{c.info.dbname}" set default_transaction_read_only = on')
    b = batcher()
    future = b.enqueue(None, "ev-ro", "t", b"{}")
    await asyncio.wait([future], timeout=10)
    exc = future.exception()
    assert exc is not None and exc.sqlstate == "25006"
    assert is_unavailable(exc)  # 503: the provider retries once the primary is back


async def test_a_webhook_of_a_tenant_that_does_not_exist_fails_alone(fresh_db, batcher):
    b = batcher()
    futures = [b.enqueue(str(uuid.uuid4()), "ev-gone", "t", b"{}"), b.enqueue(None, "ev-fine", "t", b"{}")]
    await asyncio.wait(futures, timeout=10)
    assert futures[0].exception().sqlstate == "23503" and not is_unavailable(futures[0].exception())
    assert futures[1].result() is True
    assert _rows(fresh_db) == {"ev-fine"}


async def test_workers_in_other_sessions_are_notified_of_each_table_after_a_commit(fresh_db):
    """What `storeops worker` processes wait for: a NOTIFY on storeops_webhooks naming the table's
    kind once new rows are committed (and none for a batch of duplicates only)."""
    listener = await psycopg.AsyncConnection.connect(fresh_db, autocommit=True)
    try:
        await listener.execute("listen storeops_webhooks")

        async def collect(seconds: float) -> list[str]:
            return [note.payload async for note in listener.notifies(timeout=seconds)]

        pool = await open_pool(fresh_db, min_size=1, max_size=4)
        try:
            pay, ship = IngestBatcher(pool, "payment"), IngestBatcher(pool, "shipping")
            try:
                assert await pay.submit(None, "ev-n1", "payment.captured", b"{}") is True
                assert await ship.submit(None, "sr-n1", "DELIVERED", b"{}") is True
                assert sorted(set(await collect(1.0))) == ["payment", "shipping"]
                assert await pay.submit(None, "ev-n1", "payment.captured", b"{}") is False  # a redelivery
                assert await collect(0.5) == []
            finally:
                await pay.close()
                await ship.close()
        finally:
            await pool.close()
    finally:
        await listener.close()


async def test_rows_get_time_ordered_ids_in_arrival_order(fresh_db, batcher):
    """The receiver names its rows with UUIDv7s (runner.intake._uuid7s): their clock is the time of
    the batch, and within a batch (one created_at) they follow arrival order, so the worker's claim
    order (created_at, id) is the order the webhooks came in."""
    b = batcher()
    before = int(time.time() * 1000)
    futures = [b.enqueue(None, f"ev-order-{n}", "payment.captured", b"{}") for n in range(40)]
    assert await asyncio.gather(*futures) == [True] * 40
    after = int(time.time() * 1000)
    with psycopg.connect(fresh_db) as c:
        rows = c.execute("select event_id, id, created_at from storeops.payment_webhooks "
                         "order by created_at, id").fetchall()
    assert [r[0] for r in rows] == [f"ev-order-{n}" for n in range(40)]
    for _, row_id, _ in rows:
        assert row_id.version == 7 and row_id.variant == uuid.RFC_4122
        assert before - 1 <= row_id.int >> 80 <= after + 1  # its 48-bit millisecond clock
    assert len({r[1] for r in rows}) == 40
