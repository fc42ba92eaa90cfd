"""Interleaved A/B runs of section 1's intake figure: is a change worth keeping on a noisy host?

This machine's speed drifts by tens of percent within minutes (other tenants), so one run of each
variant proves nothing. This runs the variants alternately (ABBA order by default, which cancels a
steady drift), each on a fresh database that is dropped afterwards, followed by a CHECKPOINT, so no
run inherits the previous one's WAL or autovacuum. It prints every run and the mean per variant.

A variant is some of: extra environment for `storeops serve` (--env), SQL run on its database
before the runner starts (--setup), and a number of serve processes (--processes):

    python -m bench.ab --order ABBAABBA --processes B=1
    python -m bench.ab --setup "B=create index on storeops.payment_webhooks (webhook_type, created_at)"
    python -m bench.ab --env 'B={"STOREOPS_LOG_LEVEL": "WARNING"}'

Comparing two revisions of the code needs two checkouts; run this in each, alternately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import psycopg

from bench.common import Sizes, seed_tenant, write_signed_bodies
from bench.env import BenchEnv
from bench.ingest import wrk_phase


def _by_variant(items: list[str], what: str, parse=str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--{what} takes VARIANT=VALUE, got {item!r}")
        out[name] = parse(value)
    return out


def run(order: str, *, seconds: float, env_by: dict, setup_by: dict, processes_by: dict, default_processes: int,
        smoke: bool = False, out=sys.stdout) -> dict[str, list[float]]:
    """Runs section 1's intake phase once per letter of `order`; returns 2xx/s per variant."""
    bench = BenchEnv(processes=default_processes, smoke=smoke)
    bench.start()
    sizes = Sizes.smoke() if smoke else Sizes.full()
    rates: dict[str, list[float]] = {}
    try:
        for i, v in enumerate(order):
            url = bench.new_database(f"ab{i}")
            tenant = seed_tenant(url, 20 if smoke else 100)
            if setup_by.get(v):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(setup_by[v])
            bodies = bench.tmp / f"ab{i}.tsv"
            write_signed_bodies(tenant, bodies, limit=1000)
            path = f"/functions/v1/razorpay-webhook/{tenant.tenant_id}"
            runner = bench.start_runner(url, f"ab{i}{v}", worker_idle=True,
                                        processes=processes_by.get(v, default_processes), extra_env=env_by.get(v))
            try:
                result, cpu = wrk_phase(bench, runner, path, bodies, f"ab{i}{v}", sizes, seconds=seconds)
            finally:
                bench.stop_service(runner)
            rate = result.ok_per_second
            rates.setdefault(v, []).append(rate)
            per = {k: f"{1e6 * cpu.get(k, 0) / rate:.0f} µs" if rate else "-" for k in ("server", "postgres", "wrk+harness")}
            print(f"{v} {rate:,.0f}/s  p99 {result.p99_ms:.1f} ms  non-2xx {result.non_2xx}  CPU per webhook: "
                  f"server {per['server']}, postgres {per['postgres']}, wrk {per['wrk+harness']}", file=out, flush=True)
            bench.drop_database(url)
            with psycopg.connect(bench.cluster.url("postgres"), autocommit=True) as conn:
                conn.execute("checkpoint")
            time.sleep(0.5)
    finally:
        bench.close()
    for v in sorted(rates):
        print(f"{v} mean {statistics.mean(rates[v]):,.0f}/s over {len(rates[v])} runs: "
              f"{', '.join(f'{r:,.0f}' for r in rates[v])}", file=out, flush=True)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--order", default="ABBAABBA", help="one letter per run, in run order (default ABBAABBA)")
    parser.add_argument("--seconds", type=float, default=8, help="wrk seconds per run (default 8)")
    parser.add_argument("--env", action="append", default=[], metavar="V=JSON",
                        help="extra environment for variant V's `storeops serve`, a JSON object")
    parser.add_argument("--setup", action="append", default=[], metavar="V=SQL",
                        help="SQL run on variant V's database before its runner starts")
    parser.add_argument("--processes", action="append", default=[], metavar="V=N",
                        help="serve processes for variant V (default: 2, as section 1)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite's check that this runs)")
    args = parser.parse_args(argv)
    if not args.order.isalpha():
        parser.error("--order is letters, one per run")

    def as_env(text: str) -> dict:
        value = json.loads(text)
        if not isinstance(value, dict):
            raise SystemExit("--env takes a JSON object")
        return {str(k): str(v) for k, v in value.items()}

    run(args.order, seconds=args.seconds, env_by=_by_variant(args.env, "env", as_env),
        setup_by=_by_variant(args.setup, "setup"), processes_by=_by_variant(args.processes, "processes", int),
        default_processes=2, smoke=args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
