"""Scheduler ticks run once across runners; cleanup deletes in batches and keeps unprocessed rows."""

from __future__ import annotations

import asyncio
import threading

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


@pytest.mark.parametrize("table", ["payment_webhooks", "shipping_webhooks"])
def test_cleanup_never_deletes_a_row_that_a_concurrent_replay_marks_unprocessed(fresh_db, table):
    """0041 deletes without locking the batch first: a row another transaction is changing is
    waited for and re-checked, so a replay that marks an old webhook unprocessed keeps it."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(f"""insert into storeops.{table} (event_id, webhook_type, payload, processed, processed_at, created_at)
                      select 'old-' || g, 'x', '{{}}', true, now(), now() - interval '91 days'
                      from generate_series(1, 5) g""")
    replay = psycopg.connect(fresh_db)
    try:
        replay.execute(f"update storeops.{table} set processed = false, processed_at = null where event_id = 'old-3'")
        result: dict = {}

        def delete() -> None:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                result["n"] = c.execute("select storeops.delete_processed_webhooks(%s, interval '90 days', 100)",
                                        (table,)).fetchone()[0]

        worker = threading.Thread(target=delete)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive(), "the delete should wait for the row being replayed"
        replay.commit()
        worker.join(10)
        assert result["n"] == 4
    finally:
        replay.close()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        left = [r[0] for r in c.execute(f"select event_id from storeops.{table}").fetchall()]
    assert left == ["old-3"]
