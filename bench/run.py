"""`python -m bench` (what `make bench` runs): starts its own cluster and runner processes, runs
every section and writes bench/RESULTS.md. `--smoke` runs every section at tiny sizes."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import apply, cleanup, e2e, host, ingest, retry_queue, sweep
from bench.cleanup import STALL_INFLATION
from bench.common import Section, Sizes, fmt
from bench.env import CLUSTER_SETTINGS, BenchEnv, machine_facts
from bench.paced import HELD, PAUSE
from bench.report import render, write
from runner.cluster import find_bindir, wal_compression_method
from runner.scheduler import CLEANUP_BATCH, CLEANUP_PAUSE

SECTIONS = [
    (1, "Ingest: signed Razorpay webhooks accepted durably", ingest),
    (2, "End-to-end latency at a sustained rate", e2e),
    (3, "Apply throughput: stored mixed events to their final state", apply),
    (4, "Retry queue: claim + complete vs procrastinate", retry_queue),
    (5, "Domain sweep", sweep),
    (6, "Cleanup of 90-day-old webhooks while ingest runs", cleanup),
]
MEMORY_TARGET_MB = 200.0
DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def memory_section(memory: dict[str, dict[int, float]], processes: int) -> Section:
    s = Section(7, "Memory: peak RSS of the runner processes under load")
    if not memory:
        s.skipped = "no runner ran under load in this run"
        return s
    worst_phase, worst, total_worst = "", 0.0, 0.0
    for phase, per_pid in memory.items():
        if not per_pid:
            continue
        peak = max(per_pid.values())
        total = sum(per_pid.values())
        s.details[phase] = {"per_process_mb": {str(k): round(v, 1) for k, v in per_pid.items()},
                            "total_mb": round(total, 1)}
        if peak > worst:
            worst_phase, worst = phase, peak
        total_worst = max(total_worst, total)
    s.add(f"largest runner process, VmHWM (phase: {worst_phase})", worst, "MB",
          target=f"< {MEMORY_TARGET_MB:g} MB", met=worst < MEMORY_TARGET_MB, higher_is_better=False)
    s.add(f"all processes of `serve --processes {processes}` together (parent + children)", total_worst, "MB",
          higher_is_better=False)
    s.notes.append("VmHWM from /proc/<pid>/status of the serve parent and each forked child, read at the end of each "
                   "loaded phase (sections 1, 2 and 6). Forked children share the parent's pages, so the sum "
                   "counts shared memory more than once.")
    return s


def _cores(cpu: dict, key: str) -> float:
    return cpu.get(key, 0.0)


def analysis(sections: dict[int, Section], sizes: Sizes, processes: int) -> dict[int, list[str]]:
    """Plain statements drawn from the measured numbers (what limits each figure)."""
    out: dict[int, list[str]] = {}
    s = sections.get(1)
    if s and not s.error and s.details.get("intake"):
        d = s.details
        rate, base, pgb = d["intake"]["2xx_per_s"], d["http_baseline"]["2xx_per_s"], d["pgbench"]["tps"]
        cpu = s.cpu.get("storeops intake (serve --no-worker)", {})
        hcpu = s.cpu.get("(a) HTTP stack, no database", {})
        lines = [f"**Reading.** Intake stored and acknowledged {fmt(rate)}/s: {100 * rate / base:.0f}% of what the same "
                 f"HTTP stack answers with no database at all ({fmt(base)}/s) and {rate / pgb:.1f}× pgbench's "
                 f"single-row inserts ({fmt(pgb)}/s; each of those commits alone, while intake group-commits many "
                 "webhooks per INSERT)."]
        if rate < ingest.TARGET_RATE:
            short = ingest.TARGET_RATE - rate
            ncpu = os.cpu_count() or 1
            per = {k: 1e6 * _cores(cpu, k) / rate for k in ("server", "postgres", "wrk+harness")}
            http_us = 1e6 * _cores(hcpu, "server") / base if base else 0.0
            wrk_us = 1e6 * _cores(hcpu, "wrk+harness") / base if base else 0.0
            total = sum(per.values())
            budget = 1e6 * ncpu / ingest.TARGET_RATE
            lines.append(
                f"**Short of {ingest.TARGET_RATE:,}/s by {fmt(short)}/s ({100 * short / ingest.TARGET_RATE:.0f}%). Why, "
                f"in CPU per webhook:** at {ingest.TARGET_RATE:,}/s on {ncpu} cores, the serve processes, Postgres "
                f"and wrk together must fit in {budget:.0f} µs of CPU per webhook. Measured per stored webhook in "
                f"the intake phase: serve processes {per['server']:.0f} µs, Postgres {per['postgres']:.0f} µs (the "
                f"INSERT into a table with {d.get('payment_webhooks_indexes', '?')} indexes, a foreign key, WAL, "
                f"commit; {d['intake'].get('webhooks_per_insert') or '?'} webhooks per INSERT, "
                f"{d['intake'].get('webhooks_per_commit') or '?'} per database commit with the NOTIFYs), wrk "
                f"{per['wrk+harness']:.0f} µs: "
                f"{total:.0f} µs, so about {fmt(1e6 * ncpu / total)}/s if this machine had nothing else to run (it had "
                f"{_cores(cpu, 'other'):.2f} cores of other programs during the phase). Of the serve processes' "
                f"{per['server']:.0f} µs, the same HTTP stack with no database (baseline a) needs {http_us:.0f} µs "
                f"(wrk {wrk_us:.0f} µs); the rest is the webhook's own work (signature, JSON, batching, the INSERT's "
                "round trip, metrics: the profile below). "
                + (f"The target needs about {100 * (total - budget) / total:.0f}% less CPU per webhook, or more "
                   "cores (serve processes share nothing but the database, so the rate grows with processes until "
                   "Postgres's per-row cost is the limit)." if total > budget else
                   f"That fits the budget, and the machine was not saturated ({_cores(cpu, 'machine'):.2f} of {ncpu} "
                   "cores busy): the rest was latency. Each of wrk's 64 connections waits for its webhook's batch "
                   f"to commit, {64000 / rate:.1f} ms on average (Little's law), with one batch in flight per serve "
                   "process; a second one in flight made batches smaller and cost more CPU per webhook than it "
                   "saved in waiting (measured)."))
        p99 = d["intake"]["p99_ms"]
        if p99 >= ingest.TARGET_P99_MS:
            lines.append(f"**p99 {p99:.1f} ms is over {ingest.TARGET_P99_MS:g} ms**: wrk keeps 64 requests in flight "
                         f"at saturation, so the mean wait alone is 64 / {fmt(rate)}/s = {64000 / rate:.1f} ms "
                         f"(Little's law); the tail is CPU scheduling between {processes} serve processes, Postgres "
                         "and wrk on the same cores. The no-database baseline's p99 at its own saturation was "
                         f"{d['http_baseline']['p99_ms']:.1f} ms.")
        lines.append(
            "**The intake path as measured** (runner/fasthttp.py, webhooks.py, intake.py): a plain webhook POST is "
            "handled inside uvicorn's httptools protocol, with no ASGI request cycle and, once the tenant's secrets "
            "are cached, no task: the body is checked (signature, JSON) and queued for the next batch as soon as it "
            "is complete, and the response is written in one piece when that batch commits (anything else takes "
            "uvicorn and Starlette, with the same handlers). Each serve process has one flusher per table: while "
            "one batch commits the next one gathers, and it is one `INSERT ... SELECT FROM unnest(...) ON CONFLICT "
            "DO NOTHING RETURNING` with five binary array parameters sent straight through libpq (one round trip; "
            "the answer comes after ReadyForQuery, which follows the commit's WAL flush): the rows' ids, UUIDv7s "
            "made by the receiver so that new rows are appended at the primary key's right edge (since session 5), "
            "and tenant, event id, type and body as text[]. The NOTIFY that wakes "
            "the workers is sent outside the insert transactions (Postgres serialises all NOTIFYing commits on one "
            "lock held through the WAL flush), asynchronously committed: at most one per 5 ms from a process "
            "that runs no worker (as in this phase), one per 50 ms from one that does, since the receiver wakes "
            "its own worker directly. One log line per committed batch lists every webhook in it. uvloop; N "
            "forked processes on SO_REUSEPORT sockets.")
        dep = d["deployed"]
        dcpu = s.cpu.get("storeops serve (worker applying)", {})
        lines.append(f"As deployed (each serve process's worker applying the events while they arrive) intake was "
                     f"{fmt(dep['2xx_per_s'])}/s: applying shares the same {os.cpu_count()} cores (Postgres "
                     f"{_cores(dcpu, 'postgres'):.2f} cores in that phase against {_cores(cpu, 'postgres'):.2f} for "
                     "intake alone). "
                     + (f"The phase began with the {fmt(dep['unapplied_at_start'])} webhooks the intake-only phase had "
                        "left unapplied. " if dep.get("unapplied_at_start") else "")
                     + (f"{fmt(dep['unapplied_at_end'])} were still waiting to be applied when wrk stopped (stored; "
                        "the workers catch up), so the workers applied about "
                        f"{fmt((dep.get('unapplied_at_start', 0) + dep['rows_stored'] - dep['unapplied_at_end']) / max(dep.get('seconds') or sizes.ingest_seconds, 1))}"
                        "/s meanwhile." if dep["unapplied_at_end"] else
                        "The workers kept up: nothing was unapplied when counted right after wrk stopped."))
        out[1] = lines
    s = sections.get(2)
    if s and not s.error and s.details.get("e2e_ms"):
        d = s.details
        out[2] = [f"Measured: the client's wall-clock time when it read each 2xx, against "
                  "pg_xact_commit_timestamp(orders.xmin), the commit time of the worker transaction that updated "
                  "that order (track_commit_timestamp is on in the bench cluster), same clock. A negative value "
                  "means the order was already updated before the client finished reading the 2xx "
                  f"({100 * (d['e2e_ms']['negative_share'] or 0):.0f}% of events). Offered {d['rate_offered']:g}/s "
                  f"with 16 keep-alive connections; achieved {d['rate_achieved']:g}/s. The path: the intake commits "
                  "the batch, acknowledges, NOTIFYs storeops_webhooks; a worker LISTENing in each serve process wakes "
                  "and calls process_payment_webhooks. The seed design applied webhooks from a 5-minute cron, i.e. "
                  "up to 300 s (shown as the baseline)."]
        p99 = d["e2e_ms"]["p99"]
        cpu = next(iter(s.cpu.values()), {})
        if p99 is not None and p99 >= e2e.TARGET_P99_MS:
            s3 = sections.get(3)
            bulk = ""
            if s3 and not s3.error and s3.details.get("events"):
                c3 = s3.cpu.get("apply (2 connections)", {})
                bulk_us = 1e6 * _cores(c3, "postgres") * s3.details["apply_seconds"] / s3.details["events"]
                bulk = f", against {bulk_us:.0f} µs per event when section 3 applies them in bulk"
            store = ""
            s1 = sections.get(1)
            if s1 and not s1.error and s1.details.get("intake"):
                c1 = s1.cpu.get("storeops intake (serve --no-worker)", {})
                store = f" and about {1e6 * _cores(c1, 'postgres') / s1.details['intake']['2xx_per_s']:.0f} µs to store one (section 1)"
            out[2].append(
                f"**Missed by {p99 - e2e.TARGET_P99_MS:.0f} ms.** The machine was full during this phase "
                f"({_cores(cpu, 'machine'):.2f} of {os.cpu_count()} cores busy; other programs "
                f"{_cores(cpu, 'other'):.2f}), and storing plus applying events as they trickle in costs Postgres "
                f"{d.get('postgres_cpu_us_per_webhook', 0):,} µs of CPU per webhook{bulk}{store}. Every NOTIFY wakes "
                "every LISTENing worker (one per serve process); each wake-up makes one round trip per notified "
                "webhook kind, and skips the apply call when nothing waits (runner/worker.py); the database "
                f"committed {d.get('db_commits_per_webhook')} transactions per webhook in this phase (intake "
                "batches, NOTIFYs and worker passes together). When CPU is short, the tail is the wait for it.")
    s = sections.get(3)
    if s and not s.error and s.details.get("events"):
        d = s.details
        cpu = s.cpu.get("apply (2 connections)", {})
        rate = d["events"] / d["apply_seconds"]
        lines = [f"{d['events']:,} events ({d['payment_events']:,} Razorpay, {d['shipping_events']:,} Shiprocket; "
                 f"{d['plan']['orders']:,} orders, {d['plan']['refund_orders']:,} with a refund, "
                 f"{d['plan']['rto_orders']:,} RTO) applied in {d['apply_seconds']:.1f} s by two connections calling "
                 f"the SQL functions with batches of {d['batch']} ({d['calls']} calls). COPY wrote the same rows in "
                 f"{d['copy_seconds']:.1f} s."]
        if rate < apply.TARGET_RATE:
            lines.append(f"**Short of {apply.TARGET_RATE:,}/s by {fmt(apply.TARGET_RATE - rate)}/s.** The work is "
                         f"PL/pgSQL inside Postgres ({_cores(cpu, 'postgres'):.2f} cores busy of {os.cpu_count()}, "
                         f"other programs {_cores(cpu, 'other'):.2f}): per event a row lock, a JSON read, a payment or "
                         "tracking upsert, the order recomputed from all its payments and refunds, a reconciliation "
                         "row for each capture, set-based per batch of events (one subtransaction per event only "
                         "when a batch has to be redone because one of its events fails), then the webhook rows updated. "
                         "Two connections can use at most two cores; the rate scales with cores given to Postgres.")
        prof = d.get("function_profile") or []
        if prof:
            total_self = sum(p["self_ms"] for p in prof) or 1.0
            lines += ["", "Where the time went inside Postgres (pg_stat_user_functions, track_functions = pl on the "
                      "apply database; self time excludes the functions each one calls):", "",
                      "| function | calls | self ms | share of the top 10 | total ms |", "|---|---|---|---|---|"]
            lines += [f"| `{p['function']}` | {p['calls']:,} | {p['self_ms']:,.0f} | "
                      f"{100 * p['self_ms'] / total_self:.0f}% | {p['total_ms']:,.0f} |" for p in prof]
            top = prof[0]
            if top["calls"]:
                lines += ["", f"The largest share is `{top['function']}`: {1000 * top['self_ms'] / top['calls']:.0f} µs "
                          f"of its own time per call over {top['calls']:,} calls (connection time, so it includes waiting "
                          "for CPU on this shared machine)."]
        out[3] = lines
    s = sections.get(4)
    if s and not s.error and s.details.get("procrastinate"):
        d = s.details
        out[4] = [f"Both drained the same {d['jobs']:,} no-op jobs with 4 processes on the same cluster (procrastinate "
                  f"is slow enough that 20,000 would take minutes; storeops also ran {d['storeops_batch20_more']['jobs']:,}). "
                  "storeops claims a batch per round trip (claim_operation_retries: FOR UPDATE SKIP LOCKED under a "
                  "lease, a claim token per row) and completes the batch in one statement "
                  f"({d['storeops_batch20']['claims']:,} claims for {d['jobs']:,} jobs at batch 20); procrastinate "
                  f"(4 concurrent jobs per process; its default of 1 was not faster) fetches one job per round trip "
                  "and every status change fires its event-log trigger. storeops drains its "
                  f"{d['jobs']:,} jobs {len(d.get('storeops_batch20_drains') or [1])} times, each in a fresh database, "
                  f"and the figure is the median drain: one lasts {d['storeops_batch20']['seconds']:.2f} s, so a "
                  "single pause of this shared host of a few hundred ms would halve it, where procrastinate's drain "
                  f"of the same jobs lasted {d['procrastinate']['seconds']:.1f} s (since session 7)."]
    s = sections.get(6)
    if s and not s.error and s.details.get("steady"):
        steady = s.details["steady"]

        def waits(summary: dict) -> str:
            return ", ".join(f"{k}: {v}" for k, v in summary["ingest_lock_waits"].items()) or "none"

        def states(summary: dict) -> str:
            seen = summary.get("ingest_inserts_seen_active") or 0
            return ", ".join(f"{k} {100 * v / seen:.0f}%" for k, v in (summary.get("ingest_states") or {}).items()
                             if seen and v) or "none sampled"

        def p99s(r: dict) -> str:
            b, d = r["baseline"]["p99_ms"], r["during"]["p99_ms"]
            text = f"{d:.1f} ms against {b:.1f} ms without ({d / b:.1f}×)" if b else f"{d:.1f} ms"
            if r.get("baseline_after"):
                text += (f"; the baseline is the calmer of ingest alone just before ({r['baseline_before']['p99_ms']:.1f} ms) "
                         f"and just after the cleanup ({r['baseline_after']['p99_ms']:.1f} ms), so that a host stall "
                         "in one of them cannot make the target easier to meet: the lower p99 among those whose p99 "
                         "the host's stalls did not set (at most "
                         f"{STALL_INFLATION:g}× the p99 of its requests not waiting in any stall: before "
                         f"{r['baseline_before'].get('p99_outside_pauses_ms') or 0:.1f} ms, after "
                         f"{r['baseline_after'].get('p99_outside_pauses_ms') or 0:.1f} ms), and if both had it set "
                         "so the target is not counted as met. Both "
                         f"last about as long as the run with the cleanup ({r['baseline_before']['seconds']:.0f} s and "
                         f"{r['baseline_after']['seconds']:.0f} s, against {r['during']['seconds']:.0f} s): at this "
                         "rate the kernel writes back what ingest wrote 30 s before in a burst every 5 s, and every "
                         "commit's WAL fsync queues behind it, so a run shorter than 30 s never meets it and the "
                         "cleanup's run always does (until session 7 the runs without it lasted 20 s)")
            runs = r.get("cleanups") or []
            if len(runs) > 1:
                text += (f". The figure is the lower p99 of {len(runs)} runs with the cleanup, each deleting "
                         f"{r['rows']:,} rows, alternating with the runs without it (before, cleanup, after, cleanup): "
                         + ", ".join(f"{c['p99_ms']:.1f} ms ({c['seconds']:.0f} s; "
                                     f"{c['run'].get('p99_outside_pauses_ms') or 0:.1f} ms for the requests not "
                                     "waiting in a stall)" for c in runs)
                         + f", the {_ordinal(r['during_is'])} chosen. The baseline is the better of two runs, and the "
                         "figure is too, so that a host stall on either side decides nothing alone (until session 8 "
                         "it was one run with the cleanup against the better of two without). Against the higher "
                         "of the runs with the cleanup the ratio would be "
                         f"{max(c['p99_ms'] for c in runs) / b:.2f}×" if b else "")
            return text

        def pauses(r: dict) -> str:
            def one(name: str, p: dict) -> str:
                held = (f"; {p['held']:,} requests answered after over {1000 * HELD:.0f} ms while answers kept "
                        "coming") if p.get("held") else ""
                if not p["count"]:
                    return f"{name} none{held}"
                return (f"{name} {p['count']} (longest {p['longest_ms']:.0f} ms, {p['total_ms']:.0f} ms in all; "
                        f"{p['during_writeback']} while the kernel was writing back dirty pages{held})")
            return "; ".join(one(name, p) for name, p in (r.get("pauses") or {}).items())

        rate = f"{steady['rate']:,.0f}/s"
        out[6] = [f"`storeops cleanup` (runner.scheduler.cleanup) deleted {steady['deleted']:,} rows in "
                  f"{steady['cleanup_seconds']:.1f} s while ingest ran at a steady {rate} (the figure's run; its own "
                  "database and `serve --no-worker`, as in section 1's intake figure); ingest stopped when the "
                  "cleanup exited. "
                  f"The steady rate is an open loop (bench.paced): request i is due at start + i/{steady['rate']:g} "
                  "s and its latency runs from then, so a stall counts in full even when every connection was "
                  f"busy; it is {steady['rate'] / sizes.e2e_rate:g}× section 2's sustained rate. "
                  f"Ingest p99 during the cleanup: {p99s(steady)}. Until session 8 a second round ran the cleanup "
                  "while wrk drove ingest at full speed, with no target (1.37× in the last run that had it); it "
                  "was dropped to keep the harness under 10 minutes when the cleanup came to run twice.",
                  f"The cleanup deletes processed rows only, {CLEANUP_BATCH:,} per transaction and the oldest first (migration "
                  "0047: through created_idx, where each batch used to scan past every row deleted before it); "
                  "since migration 0049 each batch starts where the last one stopped and deletes the rows by "
                  "position (ctid) rather than looking them up again by id: a batch takes about 1 ms from the "
                  "first to the last, where it took 3 ms rising to 6-7 ms (measured alone on 900,000 rows, not "
                  "by this harness: 1.8 s in all against 9.8 s). It pauses at least "
                  f"{1000 * CLEANUP_PAUSE:.0f} ms after each batch, and so that it deletes at most a third of the "
                  "time. Since migration 0041 it takes no row lock before deleting (the "
                  "DELETE re-checks its conditions on any row changed meanwhile; 0043 makes it give a batch up "
                  "after 0.5 s on a locked row rather than wait), which saves a WAL record per row, and the "
                  "cluster compresses full-page images (wal_compression=lz4). Measured once on a million such "
                  "rows, cleanup alone (not by this harness): 303 MB of WAL before, 250 MB without the row "
                  "locks, 105 MB with both. "
                  f"WAL written while it ran this time (the figure's run, ingest's included): {steady['wal_mb']:,.0f} MB. "
                  "Ingest inserts new rows: no row or table lock is shared with the cleanup. Ingest INSERTs "
                  f"waiting on a lock, by wait_event, in every run with the cleanup: {waits(steady['locks_during_cleanup'])} "
                  f"(in the baseline's run: {waits(steady['locks_baseline'])}); blocked by the "
                  "cleanup's backend (pg_blocking_pids): "
                  f"{steady['locks_during_cleanup']['ingest_blocked_by_cleanup']}. "
                  "('extend' is the relation-extension lock concurrent INSERTs take among themselves to add "
                  "pages.) A CHECKPOINT follows the loading of the old rows, so that neither phase gets the "
                  "checkpoint the load's WAL would trigger, and every run (with the cleanup or without) starts just "
                  "after one: otherwise the kernel's writeback of what the run before it wrote (30 s later) lands "
                  "in the next run.",
                  "What the ingest INSERTs were doing when sampled (share of samples of an active ingest INSERT): "
                  f"during the cleanup {states(steady['locks_during_cleanup'])}; without it "
                  f"{states(steady['locks_baseline'])}. (WALSync and WALWrite: waiting for the WAL flush that "
                  "commits them; WALInitWrite: a new WAL segment being created; ClientRead: between the statement "
                  "and the next.) The cleanup's WAL shares that flush; dropping whole time partitions instead of "
                  "deleting rows would write almost none (not built).",
                  "Share of each run's samples in which autovacuum was at work in the database: "
                  + "; ".join(f"{name} {100 * v:.0f}%" for name, v in (steady.get("autovacuum") or {}).items()
                              if v is not None) + ". "
                  f"Stalls: gaps of over {1000 * PAUSE:.0f} ms between two answers, when at "
                  f"{rate} one comes every {1000 / steady['rate']:.2g} ms: {pauses(steady)}. At that rate a 100 ms stall "
                  f"delays about {0.1 * steady['rate']:,.0f} requests, "
                  f"{0.1 * steady['rate'] / (0.01 * steady['rate'] * steady['during']['seconds']):.0%} of the 1% that "
                  f"sets the p99 of a phase of {steady['during']['seconds']:.0f} s. A stall "
                  "while the kernel writes back dirty pages is every commit's WAL fsync queued behind that "
                  "writeback; since migration 0046 the cleanup's backend hands its writes to the disk as it goes "
                  "(backend_flush_after), which halved the page cache's dirty data while it ran (measured when "
                  "it was added, not in this run: about 100 MB against 200 MB at its peak). The other stalls are the host's: a WAL fsync of a few kB taking "
                  "hundreds of ms with nothing written back here, or the CPU taken away."]
    return out


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every section at tiny sizes (well under a minute)")
    parser.add_argument("--out", type=Path, default=None, help=f"report path (default {DEFAULT_OUT} for a full run)")
    parser.add_argument("--sections", default="", help="comma-separated section numbers to run (default: all)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="storeops serve processes (default: nproc)")
    parser.add_argument("--keep", action="store_true", help="keep the bench cluster and logs (prints where)")
    args = parser.parse_args(argv)
    out = args.out or (DEFAULT_OUT if not args.smoke else Path("/tmp/storeops-bench-smoke.md"))
    wanted = {int(x) for x in args.sections.split(",") if x.strip()} or {n for n, _, _ in SECTIONS}
    sizes = Sizes.smoke() if args.smoke else Sizes.full()

    started_wall = datetime.now(UTC)
    t0 = time.perf_counter()
    env = BenchEnv(processes=args.processes, keep=args.keep, smoke=args.smoke)
    results: list[Section] = []
    memory: dict[str, dict[int, float]] = {}
    probes: list[dict] = []
    try:
        print(f"bench: cluster in {env.tmp}", file=sys.stderr, flush=True)
        env.start()
        facts = machine_facts(env.cluster)
        for number, title, module in SECTIONS:
            if number not in wanted:
                continue
            probes.append(host.probe(env.tmp, f"before section {number}"))
            section = Section(number, title)
            print(f"bench: {number}. {title} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                produced = module.run(env, sizes, section) or {}
                section.details = {**produced.get("details", {}), **section.details}
                memory.update(produced.get("memory", {}))
            except Exception as exc:  # a broken section is reported, the others still run
                section.error = f"{exc.__class__.__name__}: {str(exc)[:1500]}"
                traceback.print_exc()
            section.seconds = time.perf_counter() - t
            status = "skipped" if section.skipped else "ERROR" if section.error else "done"
            print(f"bench: {number}. {status} in {section.seconds:.1f} s", file=sys.stderr, flush=True)
            results.append(section)
        if wanted & {1, 2, 6}:
            results.append(memory_section(memory, args.processes))
        probes.append(host.probe(env.tmp, "at the end"))
    finally:
        env.close()
        if args.keep:
            print(f"bench: kept {env.tmp}", file=sys.stderr)
    elapsed = time.perf_counter() - t0
    facts["load_average_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    meta = {
        "started": started_wall.strftime("%Y-%m-%d %H:%M:%S"),
        "mode": "smoke run (tiny sizes)" if args.smoke else "full run",
        "duration": f"{int(elapsed // 60)} min {elapsed % 60:.0f} s",
        "command": "make bench" if not args.smoke else ".venv/bin/python -m bench --smoke",
        "probes": probes,
        "setup": {
            "bench cluster": "its own, in a temporary directory on a free port (runner/cluster.py); fsync, "
                             "synchronous_commit and full_page_writes on (defaults); also "
                             + ", ".join(f"{k}={v.strip(chr(39))}" for k, v in CLUSTER_SETTINGS.items())
                             + "; shared_buffers=256MB, max_connections=300, wal_compression="
                             + wal_compression_method(find_bindir()) + " (runner/cluster.py; lz4 since session 3)",
            "runner": f"`storeops serve --processes {args.processes}` (forked processes on SO_REUSEPORT sockets, "
                      "uvloop, httptools), each with its own worker and scheduler; STOREOPS_RATE_LIMIT_SOURCE=0 and "
                      "STOREOPS_RATE_LIMIT_TENANT=0; the per-tenant URL /functions/v1/razorpay-webhook/{tenant_id}",
            "load generator": "wrk -t2 -c64 --latency with bench/ingest.lua (pre-signed bodies, a unique "
                              "x-razorpay-event-id per request), after a warm-up run, under the SCHED_BATCH "
                              "scheduling policy (its fair share of CPU, but its wake-ups do not preempt the server "
                              "or Postgres; every wrk phase, baselines included, and pgbench; since session 4, see "
                              "bench/env.py run_wrk); section 6's steady round: "
                              "bench/paced.py (the same bodies released at a fixed rate over 64 connections, an "
                              "open loop; counted in the wrk+harness CPU column); section 2: its own paced client",
        },
    }
    by_number = {s.number: s for s in results}
    text = render(results, facts, meta, analysis(by_number, sizes, args.processes))
    write(out, text)
    print(f"bench: wrote {out} ({meta['duration']})", file=sys.stderr)
    return 1 if any(s.error for s in results) else 0
