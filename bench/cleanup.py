"""Section 6: the 90-day cleanup under ingest. A million processed webhooks older than 90 days
(generate_series; 90% payment, 10% shipping) are deleted by the runner's own `storeops cleanup`
(runner.scheduler.cleanup: 1,000-row batches, each its own transaction, SKIP LOCKED, deleting at most a third of the time) while wrk
drives ingest; wrk stops when the cleanup ends. Beside it: the same ingest without the cleanup,
just before. pg_stat_activity is sampled every 20 ms for backends waiting on a lock."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time

import psycopg

from bench.common import Section, Sizes, count_rows, seed_tenant, write_signed_bodies
from bench.env import ROOT, BenchEnv
from bench.ingest import wrk_phase

TARGET_P99_FACTOR = 2.0


def insert_old(url: str, tenant_id: str, n: int) -> float:
    n_pay = int(n * 0.9)
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """insert into storeops.payment_webhooks
                 (tenant_id, event_id, webhook_type, payload, processed, processed_at, outcome, created_at)
               select %s, 'old-' || g, 'payment.captured',
                      jsonb_build_object('event', 'payment.captured', 'entity', 'event', 'n', g),
                      true, now() - interval '100 days', 'applied', now() - interval '100 days' - g * interval '1 second'
               from generate_series(1, %s) g""", (tenant_id, n_pay))
        conn.execute(
            """insert into storeops.shipping_webhooks
                 (tenant_id, event_id, webhook_type, payload, processed, processed_at, created_at)
               select %s, 'old-' || g, 'delivered', jsonb_build_object('awb', g::text, 'shipment_status', 'DELIVERED'),
                      true, now() - interval '100 days', now() - interval '100 days' - g * interval '1 second'
               from generate_series(1, %s) g""", (tenant_id, n - n_pay))
        conn.execute("vacuum analyze storeops.payment_webhooks")
        conn.execute("vacuum analyze storeops.shipping_webhooks")
    return time.perf_counter() - started


def wait_for_scheduler_cleanup(url: str, timeout: float = 60) -> None:
    """Each serve process's scheduler runs the weekly cleanup on its first tick. Wait until that
    tick has finished, so the old rows inserted next are deleted by the measured `storeops cleanup`
    and not by the scheduler during the baseline."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            done = conn.execute("select count(*) from storeops.scheduler_ticks "
                                "where job = 'cleanup_webhooks' and finished_at is not null").fetchone()[0]
            if done:
                return
            time.sleep(0.1)
    raise RuntimeError("the runner's scheduler did not run its first cleanup tick within a minute")


class LockSampler(threading.Thread):
    """Every 20 ms: which backends of the database are waiting on a heavyweight lock, on what,
    and who holds it (pg_blocking_pids)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.stop_event = threading.Event()
        self.samples = 0
        self.ingest_active = 0
        self.ingest_waits: collections.Counter = collections.Counter()  # by wait_event
        self.ingest_blocked_by_cleanup = 0
        self.other_waits: collections.Counter = collections.Counter()
        # every wait of an active ingest INSERT (LWLocks, I/O, client reads too), by type:event
        self.ingest_any_waits: collections.Counter = collections.Counter()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop_event.is_set():
                rows = conn.execute(
                    """select a.wait_event_type, a.wait_event, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60),
                              (select coalesce(bool_or(b.query ilike '%%delete_processed_webhooks%%'), false)
                               from pg_stat_activity b where b.pid = any (pg_blocking_pids(a.pid)))
                       from pg_stat_activity a
                       where a.datname = current_database() and a.pid <> pg_backend_pid()
                         and a.state = 'active'""").fetchall()
                self.samples += 1
                for wtype, wevent, query, by_cleanup in rows:
                    ingest = query.lstrip().lower().startswith("insert into storeops.payment_webhooks")
                    self.ingest_active += ingest
                    if ingest:
                        self.ingest_any_waits[f"{wtype}:{wevent}" if wtype else "on CPU"] += 1
                    if wtype != "Lock":
                        continue
                    if ingest:
                        self.ingest_waits[wevent] += 1
                        self.ingest_blocked_by_cleanup += bool(by_cleanup)
                    else:
                        self.other_waits[f"{wevent}: {query}"] += 1
                time.sleep(0.02)

    def stop(self) -> LockSampler:
        self.stop_event.set()
        self.join(5)
        return self

    def summary(self) -> dict:
        return {"samples": self.samples, "ingest_inserts_seen_active": self.ingest_active,
                "ingest_lock_waits": dict(self.ingest_waits), "ingest_blocked_by_cleanup": self.ingest_blocked_by_cleanup,
                "other_lock_waits": dict(self.other_waits.most_common(5)),
                "ingest_states": dict(self.ingest_any_waits.most_common(8))}


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    url = env.new_database("cleanup")
    tenant = seed_tenant(url, sizes.orders, seed=13)
    bodies = env.tmp / "cleanup-bodies.tsv"
    write_signed_bodies(tenant, bodies, limit=1000)
    path = f"/functions/v1/razorpay-webhook/{tenant.tenant_id}"
    n = sizes.cleanup_rows
    memory = {}

    runner = env.start_runner(url, "cleanup-serve", worker_idle=True)
    try:
        wait_for_scheduler_cleanup(url)
        insert_seconds = insert_old(url, tenant.tenant_id, n)
        # A checkpoint now, not one triggered by this load's WAL in the middle of a measured phase
        # (its writes and fsyncs stall commits for hundreds of ms, whichever phase it lands in).
        # The cleanup then writes a full-page image for each page it first changes, as it would
        # after any checkpoint.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("checkpoint")
        base_locks = LockSampler(url)
        base, base_cpu = wrk_phase(env, runner, path, bodies, "cbase", sizes, seconds=sizes.cleanup_baseline_seconds,
                                   on_start=base_locks.start)
        base_locks.stop()
        state: dict = {}

        def start_cleanup() -> None:
            state["sampler"] = LockSampler(url)
            state["sampler"].start()
            state["proc"] = subprocess.Popen([sys.executable, "-m", "runner", "cleanup"], cwd=ROOT,
                                             env={**os.environ, "DATABASE_URL": url}, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True)
            state["started"] = time.perf_counter()

        def cleanup_done() -> bool:
            if state["proc"].poll() is not None:
                state.setdefault("finished", time.perf_counter())
                return True
            return False

        during, cpu = wrk_phase(env, runner, path, bodies, "cdur", sizes, seconds=sizes.cleanup_max_seconds,
                                stop_when=cleanup_done, on_start=start_cleanup)
        cleanup, sampler = state["proc"], state["sampler"].stop()
        if cleanup.poll() is None:
            section.notes.append(f"the cleanup was still running after {sizes.cleanup_max_seconds:g} s of ingest; "
                                 "it was waited for, and the figures cover only the overlap")
        out, _ = cleanup.communicate(timeout=600)
        cleanup_seconds = state.get("finished", time.perf_counter()) - state["started"]
        memory["cleanup"] = runner.peak_rss_mb()
    finally:
        env.stop_service(runner)
    if cleanup.returncode != 0:
        raise RuntimeError(f"storeops cleanup failed: {out[-800:]}")
    left = count_rows(url, "select (select count(*) from storeops.payment_webhooks where starts_with(event_id, 'old-'))"
                           " + (select count(*) from storeops.shipping_webhooks where starts_with(event_id, 'old-'))")
    deleted = n - left
    reported = re.search(r"deleted (\d+)", out)
    section.cpu["ingest alone (baseline)"] = base_cpu
    section.cpu["ingest during cleanup (the cleanup CLI counts in wrk+harness)"] = cpu
    factor = during.p99_ms / base.p99_ms if base.p99_ms else None
    section.add("ingest p99 during cleanup", during.p99_ms, "ms", baseline=base.p99_ms,
                baseline_label="ingest p99 without cleanup (same runner, just before)",
                target=f"<= {TARGET_P99_FACTOR:g}× baseline",
                met=factor is not None and factor <= TARGET_P99_FACTOR, higher_is_better=False)
    section.add("ingest rate during cleanup", during.ok_per_second, "/s", baseline=base.ok_per_second,
                baseline_label="ingest rate without cleanup")
    section.add("cleanup: rows deleted per second (`storeops cleanup`, process start to exit)",
                deleted / cleanup_seconds if cleanup_seconds else None, "rows/s",
                baseline=n / insert_seconds if insert_seconds else None,
                baseline_label="generate_series insert + vacuum of the same rows")
    section.add("rows deleted by `storeops cleanup`", float(int(reported.group(1)) if reported else deleted), "rows",
                target=f"{n:,}", met=deleted == n and bool(reported) and int(reported.group(1)) == n)
    blocked = sampler.ingest_blocked_by_cleanup
    non_extend = sum(v for k, v in sampler.ingest_waits.items() if k != "extend")
    section.add("ingest INSERTs waiting on a lock the cleanup held", float(blocked), "samples",
                baseline=float(sampler.samples), baseline_label="pg_stat_activity samples (every 20 ms)",
                target="0", met=blocked == 0 and non_extend == 0, higher_is_better=False)
    section.add("ingest INSERTs waiting on any lock, during cleanup", float(sum(sampler.ingest_waits.values())),
                "samples", baseline=float(sum(base_locks.ingest_waits.values())),
                baseline_label="the same, without cleanup", higher_is_better=False)
    details = {
        "rows": n, "insert_seconds": round(insert_seconds, 2), "cleanup_seconds": round(cleanup_seconds, 2),
        "deleted": deleted, "cleanup_output": out.strip()[-300:], "baseline": base.as_dict(), "during": during.as_dict(),
        "locks_during_cleanup": sampler.summary(), "locks_baseline": base_locks.summary(),
    }
    return {"memory": memory, "details": details}
