"""Section 6: the 90-day cleanup under ingest. A million processed webhooks older than 90 days
(generate_series; 90% payment, 10% shipping) are deleted by the runner's own `storeops cleanup`
(runner.scheduler.cleanup: 500-row batches, each its own transaction resuming where the last one
stopped, with a pause after each) while ingest runs at a steady rate (bench.paced, an open loop);
ingest stops when the cleanup ends. Beside it: the same ingest without the cleanup, just before and
just after, each run about as long as the cleanup's. The cleanup runs twice, on a million rows each
time, alternating with the runs without it (before, cleanup, after, cleanup); each side's figure is
the better of its two runs. pg_stat_activity is sampled every 20 ms for backends waiting.

Until session 8 a second round, on its own database and runner, ran the cleanup while wrk drove
ingest at full speed (the machine already full; reported with no target). It was dropped to keep
the harness under 10 minutes when the steady round's cleanup came to run twice."""

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
# The steady round runs the cleanup this many times (a million rows each), alternating with ingest
# alone: before, cleanup, after, cleanup. Its figure is the cleanup run with the lower p99, as its
# baseline is the calmer of the two runs without it.
STEADY_CLEANUPS = 2


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


def writeback_mb() -> float:
    """What the kernel is writing back from its page cache right now (/proc/meminfo), in MB."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("Writeback:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pauses_summary(pauses: list[tuple[float, float]], writeback: list[tuple[float, float]]) -> dict:
    """bench.paced's pauses (gaps of over 20 ms between two answers) of one phase: how many, the
    longest, their total, and how many of them came while the kernel was writing back at least
    1 MB of dirty pages (sampled from just before the pause to its end), when every commit's WAL
    fsync queues behind that writeback. The others are the host's (its disk, or CPU taken away)."""
    out = {"count": len(pauses), "longest_ms": 0.0, "total_ms": 0.0, "during_writeback": 0}
    for start, end in pauses:
        out["longest_ms"] = max(out["longest_ms"], round(1000 * (end - start), 1))
        out["total_ms"] = round(out["total_ms"] + 1000 * (end - start), 1)
        out["during_writeback"] += any(start - 0.05 <= t <= end and mb >= 1 for t, mb in writeback)
    return out


def phase_stalls(result, sampler) -> dict:
    """One run's stalls (pauses_summary), and how many of its requests were held up over 100 ms
    while answers kept coming (bench.paced's held_outside_pauses)."""
    return {**pauses_summary(result.pauses, sampler.writeback), "held": result.held_outside_pauses}


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
        self.autovacuum = 0  # samples in which an autovacuum worker was at work in the database
        # (time.perf_counter(), MB the kernel was writing back from its page cache) per sample
        self.writeback: list[tuple[float, float]] = []

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
                self.autovacuum += any(query.startswith("autovacuum:") for _, _, query, _ in rows)
                self.writeback.append((time.perf_counter(), writeback_mb()))
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
                "ingest_states": dict(self.ingest_any_waits.most_common(8)), "autovacuum_samples": self.autovacuum}


def _round(env: BenchEnv, sizes: Sizes, label: str, rate: float, cleanups: int = STEADY_CLEANUPS) -> dict:
    """One database and runner: load the old rows, measure ingest alone at a steady `rate`
    (bench.paced), then ingest while `storeops cleanup` deletes them, then ingest alone again once
    the cleanup is done, each run just after a checkpoint (after the cleanup, a vacuum as well).
    Both runs without the cleanup last about as long as the run with it: the one before
    `sizes.cleanup_steady_seconds` (what the cleanup takes), the one after exactly as long as the
    cleanup's run (matched_seconds). The baseline is whichever of the two had the lower p99,
    preferring one with no host stall (_calmer): a host stall in one of them (this machine is
    shared) then cannot make the target easier to meet. Its CPU and lock samples come from that
    same run.

    With `cleanups` = 2, the old rows are loaded again after the run after, and ingest runs with a
    second `storeops cleanup` of as many rows: before, cleanup, after, cleanup. The figure is the
    cleanup run with the lower p99 (_lower), as the baseline is the calmer of two runs without it,
    so that one host stall on either side decides nothing alone. Every cleanup run's figures are
    kept, and the lock samples of all of them count."""
    url = env.new_database(f"cleanup-{label}")
    tenant = seed_tenant(url, sizes.orders, seed=13)
    bodies = env.tmp / f"cleanup-{label}-bodies.tsv"
    write_signed_bodies(tenant, bodies, limit=1000)
    path = f"/functions/v1/razorpay-webhook/{tenant.tenant_id}"
    n = sizes.cleanup_rows
    runner = env.start_runner(url, f"cleanup-{label}-serve", worker_idle=True)
    try:
        wait_for_scheduler_cleanup(url)

        def load_old() -> float:
            """The old rows, then a checkpoint: not one triggered by this load's WAL in the middle of
            a measured phase (its writes and fsyncs stall commits for hundreds of ms, whichever phase
            it lands in). The cleanup then writes a full-page image for each page it first changes,
            as it would after any checkpoint."""
            seconds = insert_old(url, tenant.tenant_id, n)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("checkpoint")
            return seconds

        def alone(phase: str, seconds: float) -> tuple:
            """Ingest alone: (result, CPU, lock samples)."""
            locks = LockSampler(url)
            result, used = wrk_phase(env, runner, path, bodies, f"{label}{phase}", sizes,
                                     seconds=seconds, on_start=locks.start, rate=rate)
            return result, used, locks.stop()

        def with_cleanup(phase: str) -> dict:
            """Ingest while `storeops cleanup` deletes the old rows; ingest stops when it exits."""
            state: dict = {}

            def start_cleanup() -> None:
                with psycopg.connect(url, autocommit=True) as conn:
                    state["lsn"] = conn.execute("select pg_current_wal_lsn()").fetchone()[0]
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

            during, cpu = wrk_phase(env, runner, path, bodies, f"{label}{phase}", sizes,
                                    seconds=sizes.cleanup_max_seconds, stop_when=cleanup_done,
                                    on_start=start_cleanup, rate=rate)
            cleanup, sampler = state["proc"], state["sampler"].stop()
            overran = cleanup.poll() is None
            out, _ = cleanup.communicate(timeout=600)
            seconds = state.get("finished", time.perf_counter()) - state["started"]
            if cleanup.returncode != 0:
                raise RuntimeError(f"storeops cleanup failed: {out[-800:]}")
            with psycopg.connect(url, autocommit=True) as conn:
                wal_mb = conn.execute("select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)",
                                      (state["lsn"],)).fetchone()[0] / 2**20
            left = count_rows(url, "select (select count(*) from storeops.payment_webhooks where starts_with(event_id, 'old-'))"
                                   " + (select count(*) from storeops.shipping_webhooks where starts_with(event_id, 'old-'))")
            reported = re.search(r"deleted (\d+)", out)
            return {"result": during, "cpu": cpu, "sampler": sampler, "overran": overran,
                    "seconds": round(seconds, 2), "deleted": n - left,
                    "reported": int(reported.group(1)) if reported else None, "output": out.strip()[-300:],
                    "wal_mb": round(float(wal_mb), 1)}

        def vacuum_and_checkpoint() -> None:
            """The cleanup's aftermath out of the way, as it was before the first run: its dead rows
            vacuumed (not autovacuum in the middle of the next run) and a checkpoint."""
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("vacuum storeops.payment_webhooks, storeops.shipping_webhooks")
                conn.execute("checkpoint")

        insert_seconds = [load_old()]
        before = alone("b", sizes.cleanup_steady_seconds)
        # Every run starts as the first did, just after a checkpoint (the after-run too). Without one
        # here, the kernel's writeback of the pages the before-run dirtied (vm.dirty_expire_centisecs:
        # 30 s after) fell about 8 s into the cleanup's run, stalling its commits for 40-65 ms
        # (seen in most rounds' timelines), while the before-run itself never met its own writeback.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("checkpoint")
        runs = [with_cleanup("d")]
        vacuum_and_checkpoint()
        after_run = alone("a", matched_seconds(runs[0]["result"], sizes.cleanup_baseline_seconds))
        for i in range(2, cleanups + 1):
            insert_seconds.append(load_old())
            runs.append(with_cleanup(f"d{i}"))
        peak_rss = runner.peak_rss_mb()
    finally:
        env.stop_service(runner)
    env.drop_database(url)  # its dead rows' autovacuum must not run into the next round
    alone_runs = [before, after_run]
    chosen = _calmer(*(result for result, _, _ in alone_runs))
    calmer = next(run for run in alone_runs if run[0] is chosen)
    base, base_cpu, base_locks = calmer  # the baseline's figures, CPU and lock samples all from one run
    lower = _lower(*(c["result"] for c in runs))
    figure = next(c for c in runs if c["result"] is lower)
    samplers = [c["sampler"] for c in runs]
    # each run as (name, result, lock sampler), in the order they ran
    phases = [("before", before[0], before[2]), ("during", runs[0]["result"], runs[0]["sampler"]),
              ("after", after_run[0], after_run[2])] + [
        (f"during cleanup {i}", c["result"], c["sampler"]) for i, c in enumerate(runs[1:], start=2)]
    return {"rate": rate, "rows": n, "insert_seconds": round(min(insert_seconds), 2),
            "cleanup_seconds": figure["seconds"], "overran": any(c["overran"] for c in runs),
            "deleted": figure["deleted"], "reported": figure["reported"],
            "cleanup_output": figure["output"], "wal_mb": figure["wal_mb"],
            "baseline_before": before[0].as_dict(),
            "baseline_after": after_run[0].as_dict(),
            "baseline_is": "after" if calmer is after_run else "before",
            "baseline": base.as_dict(), "during": lower.as_dict(), "during_is": runs.index(figure) + 1,
            "cleanups": [{"p99_ms": c["result"].p99_ms, "seconds": c["seconds"], "deleted": c["deleted"],
                          "reported": c["reported"], "wal_mb": c["wal_mb"], "run": c["result"].as_dict()}
                         for c in runs],
            "locks_during_cleanup": merge_samples(samplers), "locks_baseline": base_locks.summary(),
            "pauses": {name: phase_stalls(result, sampler) for name, result, sampler in phases},
            # the share of each run's samples in which autovacuum was at work in the database
            "autovacuum": {name: round(sampler.autovacuum / sampler.samples, 2) if sampler.samples else None
                           for name, _, sampler in phases},
            "_base": base, "_during": lower, "_cpu": (base_cpu, figure["cpu"]), "_peak_rss": peak_rss}


# A baseline run had its p99 set by the host's stalls when it is more than STALL_INFLATION times the
# p99 of its requests that were not waiting during any stall (bench.paced's p99_outside_pauses_ms):
# a stall can only raise a p99, and a baseline raised by one makes the target easier to meet. The
# reported p99 is still the whole run's, the kernel's writeback stalls included, as the cleanup's is.
# Until session 8 the rule looked at the stalls' length instead (the longest, 0.25% of the run): a
# run with twelve stalls of up to 80 ms (p99 34.8 ms) passed for calm, and when it looked at their
# total, one with two (175 ms in all; p99 6.9 ms) did not.
STALL_INFLATION = 1.25


def host_stalled(result) -> bool:
    """Whether the host's stalls set a bench.paced run's p99: it is more than STALL_INFLATION times
    the p99 of the requests not waiting during any of them (or every request waited in one)."""
    if not result.pauses:
        return False
    calm = result.p99_outside_pauses_ms
    return calm is None or result.p99_ms > STALL_INFLATION * calm


def stalled_seconds(result) -> float:
    """The pauses between two answers in a bench.paced run, added up, in seconds (0 for wrk's)."""
    return sum(end - start for start, end in result.pauses)


def matched_seconds(during, minimum: float) -> float:
    """How long the steady round's run after the cleanup lasts: as long as the run during it did.
    A p99 depends on how long it is taken over. At a steady 2,000/s ingest dirties the page cache
    from its start, and the kernel writes back what is 30 s old (vm.dirty_expire_centisecs) in a
    burst every 5 s that every commit's WAL fsync queues behind: a run shorter than 30 s never meets
    it, and the cleanup's run (about 50 s) always does, whatever the cleanup does. Until session 7
    the runs without the cleanup lasted 20 s."""
    return max(minimum, round(during.seconds))


def longest_stall(result) -> float:
    """The longest pause between two answers in a bench.paced run, in seconds (0 for wrk's)."""
    return max((end - start for start, end in result.pauses), default=0.0)


def _error_free(runs) -> list:
    """The runs with no errors and no non-2xx answers, or all of them if none is."""
    return [r for r in runs if not (r.errors or r.non_2xx)] or list(runs)


def _lower(*runs):
    """The run with the cleanup that is the figure: the lowest p99 among the error-free ones (if
    any). Unlike _calmer, a stall does not rule a run out: it may be the cleanup's own."""
    return min(_error_free(runs), key=lambda r: r.p99_ms)


def merge_samples(samplers) -> dict:
    """LockSampler summaries of several runs added up."""
    out: dict = {"samples": 0, "ingest_inserts_seen_active": 0, "ingest_lock_waits": collections.Counter(),
                 "ingest_blocked_by_cleanup": 0, "other_lock_waits": collections.Counter(),
                 "ingest_states": collections.Counter(), "autovacuum_samples": 0}
    for summary in (s.summary() for s in samplers):
        for key, value in summary.items():
            if isinstance(value, dict):
                out[key].update(value)
            else:
                out[key] += value
    out["other_lock_waits"] = dict(out["other_lock_waits"].most_common(5))
    out["ingest_states"] = dict(out["ingest_states"].most_common(8))
    out["ingest_lock_waits"] = dict(out["ingest_lock_waits"])
    return out


def _calmer(*runs):
    """The baseline run with the lowest p99, among the error-free ones if there are any, and among
    those without a host stall if there are any."""
    clean = _error_free(runs)
    calm = [r for r in clean if not host_stalled(r)]
    return min(calm or clean, key=lambda r: r.p99_ms)


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    steady = _round(env, sizes, "steady", sizes.cleanup_rate)
    rate = f"{sizes.cleanup_rate:,.0f}/s"
    section.cpu[f"steady {rate}: ingest alone"], section.cpu[f"steady {rate}: during cleanup (its CLI counts in the load column)"] \
        = steady["_cpu"]
    if steady["overran"]:
        section.notes.append(f"the cleanup was still running after {sizes.cleanup_max_seconds:g} s of ingest; it "
                             "was waited for, and the figures cover only the overlap")
    base, during = steady["_base"], steady["_during"]
    factor = during.p99_ms / base.p99_ms if base.p99_ms else None
    clean = not (base.errors or during.errors or base.non_2xx or during.non_2xx)
    calm = not host_stalled(base)
    metric = f"ingest p99 during cleanup, ingest at a steady {rate}"
    if len(steady["cleanups"]) > 1:
        metric += (f" (the lower of {len(steady['cleanups'])} cleanup runs: "
                   + ", ".join(f"{c['p99_ms']:.2f}" for c in steady["cleanups"]) + " ms)")
    section.add(metric, during.p99_ms, "ms", baseline=base.p99_ms,
                baseline_label="the same steady rate without cleanup (same runner; the calmer of the runs just "
                               "before and just after, each about as long as the cleanup's)",
                target=f"<= {TARGET_P99_FACTOR:g}× baseline",
                met=clean and calm and factor is not None and factor <= TARGET_P99_FACTOR, higher_is_better=False)
    if not calm:
        section.notes.append(f"{metric}: in every run without the cleanup the host's stalls set the p99 (the "
                             f"chosen one: {base.p99_ms:.1f} ms, against {base.p99_outside_pauses_ms or 0:.1f} ms "
                             f"for the requests not waiting in any of its {len(base.pauses)} stalls, "
                             f"{1000 * stalled_seconds(base):.0f} ms without an answer in all, the longest "
                             f"{1000 * longest_stall(base):.0f} ms), so the ratio cannot show the cleanup's cost: "
                             "not counted as met")
    if during.p99_outside_pauses_ms is not None and base.p99_outside_pauses_ms is not None:
        section.add("ingest p99 during cleanup of the requests not waiting in any stall (no target: it leaves out "
                    "the cleanup's own stalls too)", during.p99_outside_pauses_ms, "ms",
                    baseline=base.p99_outside_pauses_ms, baseline_label="the same in the baseline's run",
                    higher_is_better=False)
    section.add(f"ingest rate during cleanup (offered: a steady {rate})", during.ok_per_second, "/s",
                baseline=base.ok_per_second, baseline_label="the same without cleanup")
    section.add("cleanup: rows deleted per second (`storeops cleanup`, process start to exit; the figure's run)",
                steady["deleted"] / steady["cleanup_seconds"] if steady["cleanup_seconds"] else None, "rows/s",
                baseline=steady["rows"] / steady["insert_seconds"] if steady["insert_seconds"] else None,
                baseline_label="generate_series insert + vacuum of the same rows")
    section.add("cleanup: WAL written while it ran (the figure's run; ingest's included)", steady["wal_mb"], "MB")
    n = sizes.cleanup_rows
    every = steady["cleanups"]
    section.add(f"rows deleted by `storeops cleanup`, each of its {len(every)} runs", float(min(c["deleted"] for c in every)),
                "rows", target=f"{n:,}", met=all(c["deleted"] == n and c["reported"] == n for c in every))
    samples = steady["locks_during_cleanup"]
    non_extend = sum(v for k, v in samples["ingest_lock_waits"].items() if k != "extend")
    section.add("ingest INSERTs waiting on a lock the cleanup held (every cleanup run)",
                float(samples["ingest_blocked_by_cleanup"]), "samples", baseline=float(samples["samples"]),
                baseline_label="pg_stat_activity samples (every 20 ms)",
                target="0", met=samples["ingest_blocked_by_cleanup"] == 0 and non_extend == 0, higher_is_better=False)
    section.add("ingest INSERTs waiting on any lock, during cleanup (every cleanup run)",
                float(sum(samples["ingest_lock_waits"].values())), "samples",
                baseline=float(sum(steady["locks_baseline"]["ingest_lock_waits"].values())),
                baseline_label="the same, without cleanup (the baseline's run)", higher_is_better=False)
    details = {"steady": {k: v for k, v in steady.items() if not k.startswith("_")}}
    return {"memory": {"cleanup": steady["_peak_rss"]}, "details": details}
