"""Section 1: signed Razorpay webhooks accepted durably per second over loopback HTTP (wrk, 64
connections), beside (a) the same HTTP stack answering without the database and (b) pgbench
single-row inserts into the same table on the same cluster."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Section, Sizes, count_rows, seed_tenant, write_signed_bodies
from bench.env import BenchEnv, CpuMeter, WrkResult, run_paced, run_wrk, sched_batch

TARGET_RATE = 12_000
TARGET_P99_MS = 25.0


def _commits(url: str | None) -> int:
    if not url:
        return 0
    return count_rows(url, "select xact_commit from pg_stat_database where datname = current_database()")


def insert_batches(log_text: str, prefix: str) -> int:
    """How many INSERT batches the runner committed with the webhooks of the phase whose event ids
    are `prefix`_...: runner.intake logs one "webhooks stored" line per committed batch. (The
    database's commit count also has the NOTIFYs in it.)"""
    needle = f'"event_id":"{prefix}_'
    return sum(1 for line in log_text.splitlines() if '"webhooks stored"' in line and needle in line)


def wrk_phase(env: BenchEnv, svc, path: str, bodies: Path, prefix: str, sizes: Sizes, *,
              seconds: float | None = None, stop_when=None, on_start=None, url: str | None = None,
              stats: dict | None = None, rate: float | None = None) -> tuple[WrkResult, dict]:
    """Warm up, then wrk while metering CPU; with `rate`, bench.paced at that steady rate instead
    of wrk. With `url` and `stats`, also how many transactions the database committed meanwhile
    (stats['commits'])."""
    def load(prefix: str, seconds: float, stop_when=None) -> WrkResult:
        if rate:
            return run_paced(svc.port, path, prefix, bodies, rate=rate, seconds=seconds, stop_when=stop_when)
        return run_wrk(svc.base_url, path, prefix, bodies, seconds=seconds, stop_when=stop_when)

    load(prefix + "w", sizes.warmup_seconds)  # warm up, connect
    if on_start is not None:
        on_start()
    before = _commits(url)
    meter = CpuMeter({"server": {svc.proc.pid}, "postgres": {env.postmaster_pid()},
                      "wrk+harness": {os.getpid()}}).start()
    result = load(prefix, seconds or sizes.ingest_seconds, stop_when)
    cpu = meter.stop()
    if stats is not None and url:
        stats["commits"] = _commits(url) - before
    return result, cpu


def stored_with_prefix(url: str, table: str, prefix: str) -> int:
    return count_rows(url, f"select count(*) from storeops.{table} where starts_with(event_id, %s)",  # noqa: S608
                      (prefix + "_",))


def run_pgbench(env: BenchEnv, url: str, tenant_id: str, body: str, seconds: float, clients: int = 64) -> dict:
    """pgbench: each transaction one INSERT of a realistic webhook row into payment_webhooks
    (same table, indexes and constraints as the runner writes), prepared, autocommit; under
    SCHED_BATCH like wrk."""
    work = env.tmp / "pgbench"
    work.mkdir(exist_ok=True)
    script = work / "insert.sql"
    # With -M prepared the :variables are bound as parameters, as the runner's values are.
    script.write_text(
        "insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload) values "
        "(:tenant::uuid, 'pgb-' || gen_random_uuid()::text, 'payment.captured', :payload::jsonb);\n")
    pgbench = env.cluster.bindir / "pgbench"
    argv = [str(pgbench), "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(max(1, int(seconds))),
            "-D", f"tenant={tenant_id}", "-D", f"payload={body}",
            "-f", str(script), "-l", "--log-prefix", str(work / "log"), url]
    meter = CpuMeter({"pgbench": {os.getpid()}, "postgres": {env.postmaster_pid()}}).start()
    out = subprocess.run(sched_batch(argv), capture_output=True, text=True, timeout=seconds + 120, cwd=work)
    cpu = meter.stop()
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {(out.stderr or out.stdout)[-800:]}")
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    latencies: list[int] = []
    for log in work.glob("log.*"):
        for line in log.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                latencies.append(int(parts[2]))  # microseconds
        log.unlink()
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] / 1000 if latencies else None
    p50 = latencies[len(latencies) // 2] / 1000 if latencies else None
    return {"tps": tps, "p50_ms": p50, "p99_ms": p99, "transactions": len(latencies), "clients": clients, "cpu": cpu}


def profile_runner(env: BenchEnv, svc, path: str, bodies: Path, prefix: str, seconds: float) -> dict | None:
    """py-spy (sampling, nonblocking) over every serve process while wrk drives it: where the
    runner's CPU goes. None when py-spy is not installed."""
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        return None
    raw = env.tmp / "ingest-profile.txt"
    prof = subprocess.Popen([pyspy, "record", "--nonblocking", "--subprocesses", "-r", "100", "-f", "raw",
                             "-d", str(max(1, int(seconds))), "-o", str(raw), "-p", str(svc.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    with contextlib.suppress(Exception):
        run_wrk(svc.base_url, path, prefix, bodies, seconds=seconds)
    with contextlib.suppress(subprocess.TimeoutExpired):
        prof.wait(30)
    if prof.poll() is None:
        prof.kill()
    if not raw.exists():
        return None
    return summarize_profile(raw.read_text())


# Where a sample's innermost frame sits, by package: the categories of the profile summary.
_BUCKETS = [
    ("logging (one JSON line per committed batch)", ("logging/", "runner/logs.py")),
    ("psycopg (database client)", ("psycopg/", "psycopg_pool/")),
    ("uvicorn + socket writes (HTTP server)", ("uvicorn/", "httptools", "runner/service.py", "runner/fasthttp.py")),
    ("starlette (routing, request, response)", ("starlette/",)),
    ("webhook handler (signature, JSON, intake)", ("runner/webhooks.py", "runner/intake.py", "runner/razorpay.py",
                                                   "hmac.py", "hashlib", "orjson")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("asyncio / uvloop event loop", ("asyncio/", "uvloop", "runners.py", "selectors.py")),
]


def summarize_profile(text: str) -> dict:
    total = 0
    leaf: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    buckets: collections.Counter = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        leaf[frames[-1]] += n
        for f in set(frames):
            inclusive[_short(f)] += n
        bucket = "other"
        for frame in reversed(frames):
            hit = next((name for name, keys in _BUCKETS if any(k in frame for k in keys)), None)
            if hit:
                bucket = hit
                break
        buckets[bucket] += n
    pct = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    interesting = ("runner/", "starlette/routing", "uvicorn/protocols", "psycopg/cursor", "logging/__init__")
    return {
        "samples": total,
        "by_area": [(name, pct(n)) for name, n in buckets.most_common()],
        "top_self": [(_short(f), pct(n)) for f, n in leaf.most_common(12)],
        "top_inclusive": [(f, pct(n)) for f, n in inclusive.most_common(60)
                          if any(k in f for k in interesting)][:12],
    }


def _short(frame: str) -> str:
    match = re.match(r"(.*) \((.*?):(\d+)\)$", frame)
    if not match:
        return frame[:100]
    func, path, line = match.groups()
    for marker in ("site-packages/", "lib/python3.", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = path.split("/", 1)[1] if "/" in path else path
    return f"{func} ({path}:{line})"


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    url = env.new_database("ingest")
    tenant = seed_tenant(url, sizes.orders)
    bodies = env.tmp / "ingest-bodies.tsv"
    n_bodies = write_signed_bodies(tenant, bodies, limit=1000)
    path = f"/functions/v1/razorpay-webhook/{tenant.tenant_id}"
    details: dict = {"processes": env.processes, "connections": 64, "wrk_threads": 2, "bodies": n_bodies,
                     "seconds": sizes.ingest_seconds,
                     "payment_webhooks_indexes": count_rows(
                         url, "select count(*) from pg_index where indrelid = 'storeops.payment_webhooks'::regclass")}
    memory: dict[str, dict[int, float]] = {}

    # (a) the HTTP ceiling: the same stack, no database
    hello = env.start_baseline_http("baseline-http")
    try:
        base, cpu = wrk_phase(env, hello, path, bodies, "hello", sizes)
    finally:
        env.stop_service(hello)
    details["http_baseline"] = base.as_dict()
    section.cpu["(a) HTTP stack, no database"] = cpu

    # intake only: `serve --no-worker`, so the figure is the receiver's
    runner = env.start_runner(url, "ingest-intake", worker_idle=True)
    try:
        commit_stats: dict = {}
        intake, cpu = wrk_phase(env, runner, path, bodies, "intake", sizes, url=url, stats=commit_stats)
        memory["intake"] = runner.peak_rss_mb()
        if not env.smoke:
            details["profile"] = profile_runner(env, runner, path, bodies, "prof", seconds=8)
    finally:
        env.stop_service(runner)
    stored = stored_with_prefix(url, "payment_webhooks", "intake")
    batches = insert_batches(runner.log_path.read_text(errors="replace"), "intake")
    details["intake"] = {**intake.as_dict(), "rows_stored": stored, "insert_batches": batches or None,
                         "webhooks_per_insert": round(intake.ok / batches, 1) if batches else None,
                         # transactions committed in the database during the phase: the INSERT batches plus the
                         # NOTIFYs (at most 200/s per serve process) and a few scheduler/health statements
                         "db_commits": commit_stats.get("commits"),
                         "webhooks_per_commit": round(intake.ok / commit_stats["commits"], 1)
                         if commit_stats.get("commits") else None}
    section.cpu["storeops intake (serve --no-worker)"] = cpu

    # as deployed: every serve process's worker applies the events while they arrive (starting with
    # what the intake-only phase left unapplied)
    backlog_at_start = count_rows(url, "select count(*) from storeops.payment_webhooks where not processed")
    runner = env.start_runner(url, "ingest-serve")
    try:
        deployed, cpu = wrk_phase(env, runner, path, bodies, "serve", sizes)
        memory["serve"] = runner.peak_rss_mb()
        backlog = count_rows(url, "select count(*) from storeops.payment_webhooks where not processed")
    finally:
        env.stop_service(runner)
    stored_d = stored_with_prefix(url, "payment_webhooks", "serve")
    details["deployed"] = {**deployed.as_dict(), "rows_stored": stored_d, "unapplied_at_start": backlog_at_start,
                           "unapplied_at_end": backlog}
    section.cpu["storeops serve (worker applying)"] = cpu

    # (b) the database ceiling: pgbench single-row inserts, same table, same cluster
    sample_body = bodies.read_text().splitlines()[-1].split("\t", 1)[1]
    pgb = run_pgbench(env, url, tenant.tenant_id, sample_body, sizes.pgbench_seconds)
    details["pgbench"] = {k: v for k, v in pgb.items() if k != "cpu"}
    section.cpu["(b) pgbench single-row inserts"] = pgb["cpu"]

    rate = intake.ok_per_second
    section.add("intake: signed webhooks stored then acknowledged", rate, "/s", baseline=base.ok_per_second,
                baseline_label="(a) same HTTP stack, no DB", target=f">= {TARGET_RATE:,}/s", met=rate >= TARGET_RATE)
    section.add("intake: p99 acknowledgement", intake.p99_ms, "ms", baseline=base.p99_ms,
                baseline_label="(a) same HTTP stack, no DB", target=f"< {TARGET_P99_MS:g} ms",
                met=intake.p99_ms < TARGET_P99_MS, higher_is_better=False)
    section.add("intake vs database ceiling", rate, "/s", baseline=pgb["tps"],
                baseline_label="(b) pgbench 64 clients, 1 insert/commit")
    section.add("as deployed (workers applying meanwhile)", deployed.ok_per_second, "/s",
                baseline=base.ok_per_second, baseline_label="(a) same HTTP stack, no DB")
    section.add("as deployed: p99 acknowledgement", deployed.p99_ms, "ms", baseline=base.p99_ms,
                baseline_label="(a) same HTTP stack, no DB", higher_is_better=False)
    section.add("pgbench p99 (per insert)", pgb["p99_ms"], "ms", higher_is_better=False)
    ok_durable = stored >= intake.ok and stored_d >= deployed.ok
    section.add("every 2xx stored (rows ≥ 2xx)", float(stored + stored_d), "rows", baseline=float(intake.ok + deployed.ok),
                baseline_label="wrk 2xx count", target="rows ≥ 2xx", met=ok_durable)
    if not ok_durable:
        section.notes.append(f"DURABILITY CHECK FAILED: intake stored {stored} rows for {intake.ok} 2xx; "
                             f"deployed stored {stored_d} for {deployed.ok} 2xx.")
    return {"memory": memory, "details": details}


def describe_profile(profile: dict | None) -> list[str]:
    if not profile:
        return ["(no profile: py-spy not installed)"]
    lines = [f"py-spy, {profile['samples']} samples over every serve process during an 8 s wrk run "
             "(share of the runner's CPU samples):", "",
             "| where the CPU goes | share |", "|---|---|"]
    lines += [f"| {name} | {share}% |" for name, share in profile["by_area"]]
    lines += ["", "| hottest frames (self) | share |", "|---|---|"]
    lines += [f"| `{name}` | {share}% |" for name, share in profile["top_self"][:10]]
    lines += ["", "| inclusive | share |", "|---|---|"]
    lines += [f"| `{name}` | {share}% |" for name, share in profile["top_inclusive"][:10]]
    return lines
