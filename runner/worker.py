"""The worker: applies stored webhooks as soon as they are committed, runs due retry-queue
operations, and delivers alerts.

- Woken by LISTEN/NOTIFY (`storeops_webhooks`, `storeops_work`, `storeops_alert`) on one dedicated
  connection, with polling (every `poll_interval` seconds) as the fallback. Behind transaction-mode
  PgBouncer LISTEN is unavailable: set STOREOPS_LISTEN_URL to a direct URL, or rely on polling.
- Webhooks are applied by SQL (`process_payment_webhooks`, `process_shipping_webhooks`): each call is
  one short transaction, FOR UPDATE SKIP LOCKED inside, so any number of workers share the work.
- Retry-queue rows are claimed in batches under a lease (`claim_operation_retries`), run with
  bounded concurrency, and reported in a new transaction: completions in one batch, failures one by
  one through `fail_operation_retry` (which steps the backoff or marks the row failed). No
  transaction is held while a handler does network I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import httpx
import orjson
import psycopg

from runner import metrics, operations  # noqa: F401  (operations registers the handlers)
from runner.context import Context
from runner.registry import OPERATIONS, RetryLater

log = logging.getLogger("storeops.worker")

# (provider, table, apply function, what "waiting to be applied" means: a refund deferred until its
# payment arrives is not waiting on the worker)
_WEBHOOK_KINDS = (
    ("payment", "razorpay", "payment_webhooks", "process_payment_webhooks",
     "not processed and attempts = 0 and deferred_payment_id is null"),
    ("shipping", "shiprocket", "shipping_webhooks", "process_shipping_webhooks", "not processed and attempts = 0"),
)


class Worker:
    def __init__(self, ctx: Context, listen_url: str | None, *, poll_interval: float = 1.0, batch_size: int = 20,
                 concurrency: int = 10, lease_seconds: int = 300, webhook_batch: int = 500):
        self.ctx = ctx
        self.listen_url = listen_url
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.lease = f"{lease_seconds} seconds"
        self.webhook_batch = webhook_batch
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._batches: set[asyncio.Task] = set()
        self._busy = 0
        self._flags: set[str] = set()
        self._last_full = 0.0
        # The receiver in this process wakes this worker directly when it has stored webhooks
        # (runner.intake); NOTIFY is for the workers of other processes.
        ctx.wake_local_worker = self.webhooks_stored

    def webhooks_stored(self, kind: str) -> None:
        """Webhooks of `kind` ("payment" or "shipping") were just committed: apply them now."""
        self._flags.add(kind)
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Each pass does what was notified (a webhook kind, queued work, an alert); every
        `poll_interval` a full pass also covers everything, so nothing depends on NOTIFY."""
        listener = asyncio.create_task(self._listen())
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                full = now - self._last_full >= self.poll_interval
                if full:
                    self._last_full = now
                flags, self._flags = self._flags, set()
                try:
                    kinds = {"payment", "shipping"} if full else flags & {"payment", "shipping"}
                    if kinds:
                        await self.apply_webhooks(kinds)
                    if full:
                        await self.run_webhook_retries()
                    if (full or "work" in flags) and await self.run_operations():
                        self._flags.add("work")  # more may be due: claim again while slots are free
                    if (full or "alert" in flags) and await self.deliver_alerts():
                        self._flags.add("alert")
                except Exception as exc:  # the database went away: keep trying, never crash
                    log.warning("worker pass failed", extra={"error": str(exc).splitlines()[0] if str(exc) else repr(exc)})
                    await self._sleep(self.poll_interval)
                    continue
                if not self._flags:
                    await self._sleep(max(0.0, self.poll_interval - (time.monotonic() - self._last_full)))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            await self._release()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        if self._flags or seconds <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _listen(self) -> None:
        if not self.listen_url:
            return
        while not self._stopping.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(self.listen_url, autocommit=True)
                async with conn:
                    for channel in ("storeops_webhooks", "storeops_work", "storeops_alert"):
                        await conn.execute(f"listen {channel}")
                    self._last_full = 0.0  # catch up on anything committed while we were not listening
                    self._wake.set()
                    async for notify in conn.notifies():
                        if notify.channel == "storeops_webhooks":
                            self._flags.add(notify.payload if notify.payload in ("payment", "shipping") else "payment")
                            if notify.payload not in ("payment", "shipping"):
                                self._flags.add("shipping")
                        elif notify.channel == "storeops_work":
                            self._flags.add("work")
                        else:
                            self._flags.add("alert")
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("listen connection lost; polling until it is back", extra={"error": str(exc)[:200]})
                await asyncio.sleep(min(self.poll_interval * 2, 5))

    async def _release(self) -> None:
        """Graceful shutdown: let in-flight operations finish for a moment, cancel the rest, and give
        their claims back (no attempt is counted for them)."""
        if self._batches:
            _done, pending = await asyncio.wait(self._batches, timeout=3)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        with contextlib.suppress(Exception):
            async with self.ctx.pool.connection(timeout=2) as conn:
                await conn.execute("select storeops.release_operation_retries(%s)", (self.ctx.worker_id,))

    # -- webhooks ------------------------------------------------------------------------------
    async def apply_webhooks(self, kinds: set[str] | frozenset[str] = frozenset({"payment", "shipping"})) -> int:
        """Apply stored webhooks of `kinds` until none is waiting. One round trip per batch: the
        function, and the age of the oldest webhook it found waiting (the latency metric)."""
        total = 0
        for kind, provider, table, fn, waiting in _WEBHOOK_KINDS:
            if kind not in kinds:
                continue
            # The apply function is only called when something waits (an empty call still costs
            # Postgres a millisecond, and every LISTENing worker wakes for each NOTIFY).
            sql = (f"select n, extract(epoch from clock_timestamp() - oldest) from ("  # noqa: S608 (fixed names)
                   f"select case when oldest is null then 0 else storeops.{fn}(%s) end as n, oldest from ("
                   f"select (select min(created_at) from storeops.{table} where {waiting}) as oldest offset 0) w "
                   f"offset 0) batch")
            while not self._stopping.is_set():
                async with self.ctx.pool.connection() as conn:
                    done, lag = await (await conn.execute(sql, (self.webhook_batch,))).fetchone()
                if not done:
                    break
                metrics.WEBHOOKS_PROCESSED.labels(provider).inc(done)
                if lag is not None:
                    metrics.PROCESSING_LATENCY.labels(provider).observe(float(lag))
                total += done
        return total

    async def run_webhook_retries(self) -> int:
        """Webhook retries that are due run in SQL too."""
        async with self.ctx.pool.connection() as conn:
            return (await (await conn.execute(
                "select storeops.run_webhook_retries(%s, %s)", (self.ctx.worker_id, self.webhook_batch))).fetchone())[0]

    # -- retry queue ---------------------------------------------------------------------------
    async def run_operations(self) -> int:
        """Claim due operations (as many as there are free slots) and start them in the background,
        so a slow gateway never holds up webhook processing. Returns how many were claimed."""
        types = [t for t in OPERATIONS if t not in ("payment_webhook", "shipping_webhook")]
        if not types:
            return 0
        free = self.concurrency - self._busy
        if free <= 0:
            return 0
        async with self.ctx.pool.connection() as conn:
            cur = await conn.execute(
                "select * from storeops.claim_operation_retries(%s, %s, %s::interval, %s)",
                (self.ctx.worker_id, min(free, self.batch_size), self.lease, types))
            cols = [c.name for c in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in await cur.fetchall()]
        if not rows:
            return 0
        self._busy += len(rows)
        task = asyncio.create_task(self._run_batch(rows))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)
        return len(rows)

    async def _run_batch(self, rows: list[dict]) -> None:
        """Run a claimed batch's handlers concurrently, then report it in one new transaction:
        completions together, failures one by one (each steps its backoff). Cancelled (shutdown):
        nothing is reported, and release_operation_retries gives the claims back."""
        try:
            results = await asyncio.gather(*(self._run_one(row) for row in rows))
            done = [(r["id"], r["claim_token"]) for r, ok in zip(rows, results, strict=True) if ok is None]
            async with self.ctx.pool.connection() as conn:
                if done:
                    await conn.execute("select storeops.complete_operation_retries(%s, %s)",
                                       ([d[0] for d in done], [d[1] for d in done]))
                for row, failure in zip(rows, results, strict=True):
                    if failure is not None:
                        error, retry_in = failure
                        await conn.execute(
                            "select status from storeops.fail_operation_retry(%s, %s, %s, %s::interval)",
                            (row["id"], row["claim_token"], error,
                             f"{retry_in} seconds" if retry_in is not None else None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reporting failed (database gone): the leases bring the rows back
            log.warning("could not report operation results", extra={"error": str(exc)[:200]})
        finally:
            self._busy -= len(rows)
            self._flags.add("work")  # free slots: look for more due work
            self._wake.set()

    async def _run_one(self, row: dict) -> tuple[str, float | None] | None:
        handler = OPERATIONS[row["operation_type"]]
        started = time.perf_counter()
        try:
            await handler(self.ctx, row)
        except RetryLater as exc:
            metrics.OPERATIONS.labels(row["operation_type"], "retry").inc()
            log.info("operation will be retried", extra={"retry_id": str(row["id"]), "operation_type": row["operation_type"],
                                                          "error": str(exc)[:500]})
            return str(exc)[:2000], exc.retry_in
        except Exception as exc:
            metrics.OPERATIONS.labels(row["operation_type"], "error").inc()
            log.warning("operation failed", extra={"retry_id": str(row["id"]), "operation_type": row["operation_type"],
                                                    "error": f"{exc.__class__.__name__}: {exc}"[:500]})
            return f"{exc.__class__.__name__}: {exc}"[:2000], getattr(exc, "retry_after", None)
        metrics.OPERATIONS.labels(row["operation_type"], "completed").inc()
        log.info("operation completed", extra={"retry_id": str(row["id"]), "operation_type": row["operation_type"],
                                                "ms": round((time.perf_counter() - started) * 1000, 1)})
        return None

    # -- alerts --------------------------------------------------------------------------------
    async def deliver_alerts(self) -> int:
        async with self.ctx.pool.connection() as conn:
            cur = await conn.execute("select id, kind, tenant_id, details, created_at from storeops.claim_alerts(%s)",
                                     (self.ctx.worker_id,))
            alerts = await cur.fetchall()
        if not alerts:
            return 0
        for alert_id, kind, tenant_id, details, created_at in alerts:
            metrics.ALERTS.labels(kind).inc()
            log.error("ALERT %s", kind, extra={"alert_id": str(alert_id), "kind": kind,
                                               "tenant_id": str(tenant_id) if tenant_id else None, "details": details})
            if self.ctx.settings.alert_url:
                try:
                    await post_alert(self.ctx.http, self.ctx.settings.alert_url, kind, details, created_at)
                except Exception as exc:
                    async with self.ctx.pool.connection() as conn:
                        await conn.execute(
                            "select storeops.schedule_operation_retry(%s, 'alert_post', %s, %s, %s)",
                            (tenant_id, alert_id, orjson.dumps({"alert_id": str(alert_id)}).decode(), str(exc)[:500]))
        async with self.ctx.pool.connection() as conn:
            await conn.execute("select storeops.mark_alerts_delivered(%s)", ([a[0] for a in alerts],))
        return len(alerts)


async def post_alert(http: httpx.AsyncClient, url: str, kind: str, details: dict, created_at) -> None:
    """Slack-compatible JSON: {"text": ...} plus the structured fields."""
    text = f":rotating_light: storeops alert: {kind} — " + ", ".join(f"{k}={v}" for k, v in (details or {}).items())
    resp = await http.post(url, json={"text": text, "kind": kind, "details": details, "created_at": str(created_at)},
                           timeout=10.0)
    if resp.status_code >= 300:
        raise RuntimeError(f"alert URL answered {resp.status_code}")


def listen_url(database_url: str) -> str | None:
    """Where to LISTEN: STOREOPS_LISTEN_URL, else the database URL itself ('' disables LISTEN)."""
    value = os.environ.get("STOREOPS_LISTEN_URL")
    if value is not None:
        return value or None
    return database_url
