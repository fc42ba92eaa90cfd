"""The seed's recurring jobs, run by whichever runner claims each tick first
(storeops.claim_scheduler_tick: a row per job and tick, so no session locks, PgBouncer-safe).

| job | every | what |
|---|---|---|
| process_retries | 5 min | due retry-queue rows (the worker also polls them continuously) |
| health_checks | 15 min | DNS resolver, Razorpay, Shiprocket, database |
| reconciliation_review | 1 day | open reconciliations older than a day raise an alert |
| cleanup_webhooks | 7 days | processed webhooks older than 90 days, deleted in batches |
| domain_recheck | 1 hour | auto_verify and verified domains not checked for 6 hours, 1,000 at a time until none is left |
| ssl_checks | 1 hour | TLS certificate of each verified domain not checked for a day: issuer, expiry, hostname match |
| shipment_poll | 1 hour | shipments without an update for 6 hours, via the tracking API (each tenant's own API user, else the platform's) |
| payment_recovery | 1 hour | Razorpay payments of the last 25 hours that never arrived as webhooks |
| refund_cancelled_orders | 15 min | cancelled orders still holding money, of tenants that opted in (auto_refund_cancelled_since) |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg

log = logging.getLogger("storeops.scheduler")


@dataclass
class Job:
    name: str
    every_seconds: int
    run: Callable[..., Awaitable[object]]


async def _process_retries(ctx, worker) -> object:
    return await worker.run_operations() if worker else 0


async def _health(ctx, worker) -> object:
    from runner.health import run_checks

    results = await run_checks(ctx)
    return ", ".join(f"{r.check_type}={r.status}" for r in results)


async def _recon_review(ctx, worker) -> object:
    async with ctx.pool.connection() as conn:
        return (await (await conn.execute("select storeops.review_reconciliation()")).fetchone())[0]


# Rows per cleanup batch. A batch holds one of the 2 cores for its length, and ingest queues
# meanwhile: in section 6 of `make bench` (ingest at a steady 2,000/s, stalls left out), batches of
# 500 kept ingest's p99 at 9.8-10.1 ms where batches of 1,000 took it to 11.6-12.8 ms (two rounds
# each, interleaved; the baselines 4.9-6.6 ms). The cleanup of a million rows took 50 s instead of
# 36-40 s. The pg_cron job's procedure (storeops.cleanup_old_webhooks, migration 0048) has the same
# default batch and duty.
CLEANUP_BATCH = 500
# The shortest pause between two batches. Since each batch resumes where the last one stopped
# (migration 0049) a batch of 500 takes about a millisecond, so this floor, not the duty, sets the
# pace: with 10 ms a million rows went in 29 s, with 20 ms in 49 s, about as long as before 0049.
# In the same hour (scratch rounds of section 6, two each, the requests next to a host stall left
# out) ingest's p99 was 10.8 and 10.7 ms with 10 ms, 9.2 and 9.8 ms with 20 ms; without the
# cleanup 6.1-8.6 ms. The pg_cron job's procedure has the same floor (0049).
CLEANUP_PAUSE = 0.02


async def cleanup(ctx, older_than: str = "90 days", batch: int = CLEANUP_BATCH, pause: float = CLEANUP_PAUSE,
                  duty: float = 1 / 3, attempts: int = 5) -> int:
    """Delete processed webhooks older than `older_than` in short committed batches. Between two
    batches it pauses at least `pause` seconds, and long enough that deleting takes at most `duty`
    of the time: every deleted row writes WAL (a whole page image for the first change to a page
    after a checkpoint), and every ingest commit has to flush the WAL written before it. Nobody
    waits for a weekly cleanup; webhooks arriving meanwhile do wait for their commits.

    Each batch starts where the one before it stopped (migration 0049), not from the oldest index
    entry, past every row deleted so far.

    A batch that meets a row locked by someone else gives up after half a second (migration 0043:
    the cleanup, not the other transaction, is the one to yield) and is tried again after a pause;
    after `attempts` tries in a row the table is left for the next run."""
    total = 0
    loop = asyncio.get_running_loop()
    for table in ("payment_webhooks", "shipping_webhooks"):
        failures = 0
        since = None  # where the next batch starts: the newest created_at the last one deleted (0049)
        while True:
            started = loop.time()
            try:
                async with ctx.pool.connection() as conn:
                    n, since = await (await conn.execute(
                        "select deleted, last_created_at from storeops.delete_processed_webhooks_from(%s, %s, %s::interval, %s)",
                        (table, since, older_than, batch))).fetchone()
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                failures += 1
                if failures >= attempts:
                    log.warning("cleanup left a table for the next run: its oldest rows stay locked",
                                extra={"table": table, "attempts": failures, "error": str(exc).splitlines()[0]})
                    break
                log.info("cleanup batch met a locked row; trying again", extra={"table": table, "attempt": failures})
                await asyncio.sleep(max(pause, 1.0))
                continue
            failures = 0
            total += n
            if n < batch:
                break
            took = loop.time() - started
            await asyncio.sleep(max(pause, took * (1 - duty) / duty))  # let ingest interleave
    return total


async def _cleanup(ctx, worker) -> object:
    return await cleanup(ctx)


async def _domain_recheck(ctx, worker) -> object:
    from runner import domains

    return await domains.recheck_due(ctx.pool, ctx.settings)


async def _ssl_checks(ctx, worker, batch: int = 500, budget: float = 300.0) -> object:
    """TLS handshake (SNI) to each verified domain not checked for a day: issuer, expiry, name match.
    `batch` at a time until none is due or `budget` seconds have passed; the job runs hourly. (Until
    session 11 it ran daily and took 500: at 100,000 domains a certificate was looked at every 200
    days, and one could expire without ever showing expiring.) A check is recorded whatever it finds
    (a failed handshake too), so only a domain whose record raised is still due: it is logged and not
    taken again in this run."""
    from runner import domains

    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    gate = asyncio.Semaphore(20)
    failed: set = set()
    seen: set = set()
    checked = 0

    async def one(domain_id) -> bool:
        async with gate:
            try:
                await domains.check_ssl_and_record(ctx.pool, ctx.settings, str(domain_id))
            except LookupError:
                return True  # deleted meanwhile
            except Exception as exc:  # noqa: BLE001 (one domain; the others are still checked)
                log.warning("SSL check failed", extra={"domain_id": str(domain_id),
                                                       "error": f"{type(exc).__name__}: {exc}"[:300]})
                failed.add(domain_id)
                return False
            return True

    while loop.time() < deadline:
        async with ctx.pool.connection() as conn:
            rows = await (await conn.execute(
                """select id from storeops.custom_domains
                   where status in ('verified', 'at_risk') and (ssl_checked_at is null or ssl_checked_at < now() - interval '1 day')
                   order by ssl_checked_at nulls first limit %s""", (batch + len(failed),))).fetchall()
        due = [r[0] for r in rows if r[0] not in failed][:batch]
        if not due or seen.issuperset(due):  # nothing new: stop, whatever kept them due
            break
        seen.update(due)
        checked += sum(await asyncio.gather(*(one(d) for d in due)))
        if len(due) < batch:
            break
    return checked


async def _shipment_poll(ctx, worker) -> object:
    from runner import shipping

    # Each tenant's shipments with its own Shiprocket API user, else the platform's (SHIPROCKET_EMAIL).
    if not ctx.settings.shiprocket_email:
        async with ctx.pool.connection() as conn:
            row = await (await conn.execute(
                "select exists (select 1 from storeops.tenant_secrets where kind = 'shiprocket_api')")).fetchone()
        if not row[0]:
            return "skipped: no Shiprocket API user (SHIPROCKET_EMAIL, or a tenant's shiprocket_api secret)"
    return await shipping.poll_stale_shipments(ctx.pool, ctx.tenant_shiprocket_client)


async def _payment_recovery(ctx, worker) -> object:
    """Payments of the last 25 hours whose webhooks never came (the platform's API key); payments
    recorded without an order whose order exists by now (storeops.link_unlinked_payments); then
    refunds still pending here whose outcome webhook never came (each with its tenant's key, else
    the platform's). A part that fails does not keep the others from running."""
    from runner import payments

    async def recovered_payments() -> int:
        now = int(time.time())
        return await payments.recover_missed_payments(ctx.pool, ctx.razorpay_client(), now - 25 * 3600, now)

    steps = [("payments", "payment state(s) recovered", recovered_payments if ctx.settings.razorpay_key_id else None),
             ("links", "payment(s) linked to their order", lambda: payments.link_unlinked_payments(ctx.pool)),
             ("refunds", "refund outcome(s) recovered",
              lambda: payments.recover_missed_refunds(ctx.pool, ctx.tenant_razorpay_client))]
    parts = []
    for name, what, step in steps:
        if step is None:
            parts.append(f"{name} skipped: RAZORPAY_KEY_ID not set")
            continue
        try:
            parts.append(f"{await step()} {what}")
        except Exception as exc:  # the other steps still run; the job reports the failure
            log.error("missed-webhook recovery step failed", extra={"step": name, "error": str(exc)[:300]})
            parts.append(f"{name} failed: {exc.__class__.__name__}: {str(exc)[:200]}")
    return "; ".join(parts)


async def _refund_cancelled_orders(ctx, worker) -> object:
    from runner import payments

    made, left = await payments.refund_cancelled_orders(ctx.pool, ctx.tenant_razorpay_client)
    return f"{made} cancelled order(s) refunded; {left} left for a person or the next run"


JOBS = [
    Job("process_retries", 300, _process_retries),
    Job("health_checks", 900, _health),
    Job("reconciliation_review", 86400, _recon_review),
    Job("cleanup_webhooks", 7 * 86400, _cleanup),
    Job("domain_recheck", 3600, _domain_recheck),
    Job("ssl_checks", 3600, _ssl_checks),
    Job("shipment_poll", 3600, _shipment_poll),
    Job("payment_recovery", 3600, _payment_recovery),
    Job("refund_cancelled_orders", 900, _refund_cancelled_orders),
]


class Scheduler:
    def __init__(self, ctx, worker=None, *, jobs: list[Job] | None = None, check_every: float = 5.0):
        self.ctx = ctx
        self.worker = worker
        self.jobs = jobs or JOBS
        self.check_every = check_every
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            for job in self.jobs:
                if self._stopping.is_set():
                    break
                await self.run_if_due(job)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.check_every)

    async def run_if_due(self, job: Job) -> bool:
        try:
            async with self.ctx.pool.connection() as conn:
                tick = (await (await conn.execute(
                    "select storeops.claim_scheduler_tick(%s, make_interval(secs => %s), %s)",
                    (job.name, job.every_seconds, self.ctx.worker_id))).fetchone())[0]
        except Exception as exc:
            log.warning("scheduler could not claim a tick", extra={"job": job.name, "error": str(exc)[:200]})
            return False
        if tick is None:
            return False
        started = time.perf_counter()
        try:
            outcome = f"ok: {await job.run(self.ctx, self.worker)}"
        except Exception as exc:
            outcome = f"error: {exc.__class__.__name__}: {exc}"
            log.error("scheduled job failed", extra={"job": job.name, "error": outcome[:300]})
        else:
            log.info("scheduled job ran", extra={"job": job.name, "outcome": outcome[:300],
                                                  "ms": round((time.perf_counter() - started) * 1000)})
        with contextlib.suppress(Exception):
            async with self.ctx.pool.connection() as conn:
                await conn.execute("select storeops.finish_scheduler_tick(%s, %s, %s)", (job.name, tick, outcome))
        return True
