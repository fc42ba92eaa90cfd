"""Scheduler ticks run once across runners; cleanup deletes in batches and keeps unprocessed rows."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import psycopg
import pytest

from runner.config import Settings
from runner.context import Context
from runner.db import open_pool
from runner.scheduler import Job, Scheduler, cleanup


async def _ctx(url: str) -> Context:
    pool = await open_pool(url, min_size=1, max_size=8)
    await pool.wait()
    return Context(settings=Settings(), pool=pool, http=httpx.AsyncClient())


@pytest.mark.asyncio
async def test_each_tick_runs_on_exactly_one_of_several_runners(fresh_db):
    runs: list[str] = []

    async def job(ctx, worker):
        runs.append(ctx.worker_id)
        await asyncio.sleep(0.05)
        return "done"

    contexts = [await _ctx(fresh_db) for _ in range(4)]
    try:
        schedulers = [Scheduler(c, jobs=[Job("probe", 3600, job)]) for c in contexts]
        ran = await asyncio.gather(*(s.run_if_due(s.jobs[0]) for s in schedulers))
        assert sum(ran) == 1 and len(runs) == 1
        # The same hour's tick is taken: nobody runs it again.
        assert not any(await asyncio.gather(*(s.run_if_due(s.jobs[0]) for s in schedulers)))
        async with contexts[0].pool.connection() as conn:
            row = await (await conn.execute(
                "select runner, outcome, finished_at is not null from storeops.scheduler_ticks where job = 'probe'")).fetchone()
        assert row == (runs[0], "ok: done", True)
    finally:
        for c in contexts:
            await c.http.aclose()
            await c.pool.close()


@pytest.mark.asyncio
async def test_a_failing_job_is_recorded_and_does_not_stop_the_scheduler(fresh_db):
    async def boom(ctx, worker):
        raise RuntimeError("gateway on fire")

    ctx = await _ctx(fresh_db)
    try:
        assert await Scheduler(ctx).run_if_due(Job("boom", 60, boom))
        async with ctx.pool.connection() as conn:
            outcome = (await (await conn.execute(
                "select outcome from storeops.scheduler_ticks where job = 'boom'")).fetchone())[0]
        assert outcome == "error: RuntimeError: gateway on fire"
    finally:
        await ctx.http.aclose()
        await ctx.pool.close()


@pytest.mark.asyncio
async def test_cleanup_deletes_old_processed_webhooks_in_batches_and_keeps_the_rest(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for table in ("payment_webhooks", "shipping_webhooks"):
            c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                          select '{table}-old-' || g, 'x', '{{}}', true, now(), now() - interval '91 days'
                          from generate_series(1, 10) g""")
            c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, created_at)
                          select '{table}-stuck-' || g, 'x', '{{}}', false, now() - interval '400 days'
                          from generate_series(1, 4) g""")
            c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                          select '{table}-new-' || g, 'x', '{{}}', true, now(), now() - interval '89 days'
                          from generate_series(1, 3) g""")
    ctx = await _ctx(fresh_db)
    try:
        assert await cleanup(ctx, batch=3) == 20
    finally:
        await ctx.http.aclose()
        await ctx.pool.close()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for table in ("payment_webhooks", "shipping_webhooks"):
            left = dict(c.execute(f"select split_part(event_id, '-', 2), count(*) from storeops.{table} group by 1").fetchall())
            assert left == {"stuck": 4, "new": 3}


def _wait_until_waiting_on_a_lock(url: str, query_like: str, timeout: float = 5.0) -> bool:
    with psycopg.connect(url, autocommit=True) as c:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if c.execute("select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query like %s",
                         (query_like,)).fetchone()[0]:
                return True
            time.sleep(0.005)
    return False


def _old_rows(url: str, table: str, n: int, prefix: str = "old-") -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                      select '{prefix}' || g, 'x', '{{}}', true, now(), now() - interval '91 days' - g * interval '1 s'
                      from generate_series(1, {n}) g""")


@pytest.mark.parametrize("table", ["payment_webhooks", "shipping_webhooks"])
def test_cleanup_never_deletes_a_row_that_a_concurrent_transaction_marks_unprocessed(fresh_db, table):
    """0041 deletes without locking the batch first: a row another transaction is changing is
    waited for and re-checked, so an old webhook marked unprocessed meanwhile is kept."""
    _old_rows(fresh_db, table, 5)
    other = psycopg.connect(fresh_db)
    result: dict = {}

    def delete() -> None:
        try:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                result["n"] = c.execute("select storeops.delete_processed_webhooks(%s, interval '90 days', 100)",
                                        (table,)).fetchone()[0]
        except Exception as exc:  # reported below, not lost in the thread
            result["error"] = exc

    try:
        other.execute(f"update storeops.{table} set processed = false, processed_at = null where event_id = 'old-3'")
        worker = threading.Thread(target=delete)
        worker.start()
        assert _wait_until_waiting_on_a_lock(fresh_db, "%delete_processed_webhooks%"), result
        other.commit()  # within the cleanup's 0.5 s lock timeout (0043)
        worker.join(10)
    finally:
        other.close()
    assert "error" not in result, result
    assert result["n"] == 4
    with psycopg.connect(fresh_db, autocommit=True) as c:
        left = [r[0] for r in c.execute(f"select event_id from storeops.{table}").fetchall()]
    assert left == ["old-3"]


@pytest.mark.asyncio
async def test_cleanup_yields_to_a_transaction_holding_old_rows_and_finishes_on_the_next_run(fresh_db, caplog):
    """A transaction that holds an old webhook row (as re-applying one does) is never made to wait
    on the cleanup in a way that could deadlock: the cleanup's batch gives up after 0.5 s (0043),
    is tried again, and after its attempts the table is left for the next run; the other table is
    still cleaned."""
    _old_rows(fresh_db, "payment_webhooks", 6)
    _old_rows(fresh_db, "shipping_webhooks", 4)
    holder = psycopg.connect(fresh_db)
    holder.execute("select 1 from storeops.payment_webhooks for update")  # every old payment webhook
    ctx = await _ctx(fresh_db)
    try:
        started = time.monotonic()
        with caplog.at_level("INFO", logger="storeops.scheduler"):
            assert await cleanup(ctx, batch=3, pause=0.01, attempts=2) == 4  # the shipping rows only
        assert time.monotonic() - started < 10
        assert any("left a table for the next run" in r.getMessage() for r in caplog.records)
        holder.rollback()
        assert await cleanup(ctx, batch=3, pause=0.01) == 6
    finally:
        holder.close()
        await ctx.http.aclose()
        await ctx.pool.close()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        assert c.execute("select count(*) from storeops.payment_webhooks").fetchone()[0] == 0
        assert c.execute("select count(*) from storeops.shipping_webhooks").fetchone()[0] == 0


def test_the_pg_cron_procedure_also_yields_to_held_rows_and_cleans_the_other_table(fresh_db):
    """The procedure the weekly pg_cron job calls (`call storeops.cleanup_old_webhooks()`, 0044),
    called here directly: a batch that meets rows another transaction holds is tried again, then
    that table is left for the next run with a WARNING; the CALL itself succeeds (0043's lock
    timeout used to make it fail) and the other table is cleaned."""
    _old_rows(fresh_db, "payment_webhooks", 6)
    _old_rows(fresh_db, "shipping_webhooks", 4)
    holder = psycopg.connect(fresh_db)
    try:
        holder.execute("select 1 from storeops.payment_webhooks for update")
        with psycopg.connect(fresh_db, autocommit=True) as c:
            notices: list[str] = []
            c.add_notice_handler(lambda d: notices.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
            started = time.monotonic()
            c.execute("call storeops.cleanup_old_webhooks(interval '90 days', 3, 2, interval '10 ms')")
            assert time.monotonic() - started < 10
            assert notices == ["WARNING: cleanup_old_webhooks: payment_webhooks has rows locked by other "
                               "transactions; left for the next run after 2 attempts"]
            assert c.execute("select count(*) from storeops.shipping_webhooks").fetchone()[0] == 0
            assert c.execute("select count(*) from storeops.payment_webhooks").fetchone()[0] == 6
            holder.rollback()
            c.execute("call storeops.cleanup_old_webhooks(p_batch => 3)")  # the defaults, as pg_cron calls it
            assert c.execute("select count(*) from storeops.payment_webhooks").fetchone()[0] == 0
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                c.execute("call storeops.cleanup_old_webhooks(p_attempts => 0)")
    finally:
        holder.close()


def test_the_pg_cron_procedure_deletes_500_at_a_time_and_paces_itself_as_the_runner_does(fresh_db):
    """0048: `call storeops.cleanup_old_webhooks()` (the weekly pg_cron job) deletes batches of 500,
    as the runner's cleanup does, and after each full batch pauses long enough that deleting takes at
    most p_duty of the time (a third by default), so ingest's commits get through. It used to delete
    5,000 at a time back to back. Seen from a trigger on the DELETE that reports each batch's size
    and makes each batch take 0.1 s. Its batch is the runner's (runner.scheduler.CLEANUP_BATCH)."""
    from runner.scheduler import CLEANUP_BATCH

    n = 2 * CLEANUP_BATCH + 200
    batches = [f"batch {CLEANUP_BATCH}", f"batch {CLEANUP_BATCH}", "batch 200"]
    _old_rows(fresh_db, "payment_webhooks", n)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("""create function pg_temp.slow_batch() returns trigger language plpgsql as $$
                     begin raise notice 'batch %', (select count(*) from gone); perform pg_sleep(0.1); return null; end $$""")
        c.execute("""create trigger slow_batch after delete on storeops.payment_webhooks
                     referencing old table as gone for each statement execute function pg_temp.slow_batch()""")
        notices: list[str] = []
        c.add_notice_handler(lambda diag: notices.append(diag.message_primary))

        started = time.monotonic()
        c.execute("call storeops.cleanup_old_webhooks()")  # the defaults, as pg_cron calls it
        paced = time.monotonic() - started
        assert notices == batches  # the procedure's default batch is the runner's
        # two full batches of 0.1 s or more, each followed by twice as long a pause; then the last
        assert paced >= 2 * (0.1 + 0.2) + 0.1

        _old_rows(fresh_db, "payment_webhooks", n, prefix="again-")
        notices.clear()
        started = time.monotonic()
        c.execute("call storeops.cleanup_old_webhooks(p_duty => 1)")  # no pause beyond the 20 ms floor
        flat_out = time.monotonic() - started
        assert notices == batches
        assert flat_out < paced - 0.3
        assert c.execute("select count(*) from storeops.payment_webhooks").fetchone()[0] == 0

        for bad in ("p_batch => 0", "p_duty => 0", "p_duty => 1.5", "p_duty => null"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):  # p_batch 0 used to loop for ever
                c.execute(f"call storeops.cleanup_old_webhooks({bad})")


def test_the_cleanups_deletes_run_with_their_writes_flushed_as_they_go(fresh_db):
    """0046: while delete_processed_webhooks runs, backend_flush_after is 256kB, so the pages its
    backend writes out are handed to the disk as it goes rather than left dirty in the page cache
    for the kernel to write back in one burst that every ingest commit's WAL fsync waits behind.
    The caller's own session keeps its setting. Seen from a trigger on the DELETE itself."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("""insert into storeops.payment_webhooks (event_id, webhook_type, payload, processed, processed_at, created_at)
                     select 'old-' || g, 'x', '{}', true, now(), now() - interval '91 days' from generate_series(1, 3) g""")
        c.execute("""create function pg_temp.report_flush() returns trigger language plpgsql as $$
                     begin raise notice 'backend_flush_after=%', current_setting('backend_flush_after'); return null; end $$""")
        c.execute("""create trigger report_flush after delete on storeops.payment_webhooks
                     for each statement execute function pg_temp.report_flush()""")
        notices: list[str] = []
        c.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        before = c.execute("show backend_flush_after").fetchone()[0]
        deleted = c.execute("select storeops.delete_processed_webhooks('payment_webhooks')").fetchone()[0]
        after = c.execute("show backend_flush_after").fetchone()[0]
        c.execute("drop trigger report_flush on storeops.payment_webhooks")
    assert deleted == 3
    assert notices == ["backend_flush_after=256kB"]
    assert before == after == "0"


@pytest.mark.parametrize("table", ["payment_webhooks", "shipping_webhooks"])
def test_a_cleanup_batch_takes_the_oldest_processed_webhooks_first(fresh_db, table):
    """0047: a batch deletes the oldest of the old processed webhooks (through created_idx), so a
    cleanup cut short has removed the oldest first; unprocessed ones stay however old."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        # inserted newest first, so that the table's physical order is the opposite of their age
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                      select 'old-' || g, 'x', '{{}}', true, now(), now() - interval '91 days' - g * interval '1 day'
                      from generate_series(1, 8) g""")
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, created_at)
                      values ('stuck', 'x', '{{}}', false, now() - interval '400 days')""")
        assert c.execute("select storeops.delete_processed_webhooks(%s, interval '90 days', 3)", (table,)).fetchone()[0] == 3
        left = {r[0] for r in c.execute(f"select event_id from storeops.{table}").fetchall()}
    assert left == {"stuck"} | {f"old-{g}" for g in range(1, 6)}


@pytest.mark.parametrize("table", ["payment_webhooks", "shipping_webhooks"])
def test_each_cleanup_batch_starts_where_the_last_one_stopped(fresh_db, table):
    """0049: delete_processed_webhooks_from deletes the oldest processed webhooks at or after its
    `from`, and returns the newest created_at it deleted: the next batch's `from`. Batches chained
    that way delete every old processed row once, oldest first, and never an unprocessed one. A
    row processed behind the cursor waits for the next cleanup (from NULL: the oldest)."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                      select 'old-' || g, 'x', '{{}}', true, now(), timestamptz '2020-01-01' + g * interval '1 day'
                      from generate_series(1, 9) g""")
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, created_at)
                      values ('stuck', 'x', '{{}}', false, timestamptz '2020-01-01' + interval '2 days 12 hours'),
                             ('recent', 'x', '{{}}', false, now())""")

        def batch(since):
            return c.execute("select deleted, last_created_at from storeops.delete_processed_webhooks_from(%s, %s, "
                             "interval '90 days', 4)", (table, since)).fetchone()

        def left():
            return sorted(r[0] for r in c.execute(f"select event_id from storeops.{table}").fetchall())

        n, since = batch(None)
        assert n == 4 and since.date().isoformat() == "2020-01-05"
        assert left() == ["old-5", "old-6", "old-7", "old-8", "old-9", "recent", "stuck"]
        # the stuck row, older than the cursor, is processed meanwhile: this cleanup has passed it
        c.execute(f"update storeops.{table} set processed = true, processed_at = now() where event_id = 'stuck'")
        n, since = batch(since)
        assert n == 4 and since.date().isoformat() == "2020-01-09"
        n, since2 = batch(since)
        assert n == 1 and since2.date().isoformat() == "2020-01-10"  # the last batch: fewer than the limit
        n, since3 = batch(since2)
        assert (n, since3) == (0, since2)  # nothing left after it: the cursor stays
        assert left() == ["recent", "stuck"]
        # the next cleanup starts from the oldest again
        assert batch(None)[0] == 1 and left() == ["recent"]
        assert c.execute("select * from storeops.delete_processed_webhooks_from(%s, null, interval '90 days')",
                         (table,)).fetchone() == (0, None)  # nothing to delete, and no cursor
