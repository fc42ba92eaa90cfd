"""Postgres CPU per stored webhook, for variants of the schema: the intake INSERT without the rest.

bench.ab measures the whole intake path, and on this shared machine a run of it moves by tens of
percent from one minute to the next, so a change worth 5% of Postgres's work cannot be seen there.
This sends the runner's own INSERT (runner.intake: the same statement, the same binary arrays,
realistic signed bodies) in batches of a fixed size from a few client processes, and reads the CPU
time of their server processes (/proc, so the cluster is the bench's own on this machine): the
server's cost per row with nothing else in it. Variants are set up by SQL on a database each, and
run alternately (ABBA...), so a drift of the host's speed hits them alike.

    python -m bench.rowcost --setup "B=drop index storeops.payment_webhooks_created_idx"
    python -m bench.rowcost --random-ids A      # the ids of runner.intake against gen_random_uuid()
    python -m bench.rowcost --batch 4 --rounds 6

The session that wrote it measured the UUIDv7 ids of runner.intake (-4.4 and -6.7 µs per row in
two runs) and migration 0045 (-3.7 µs by the median) this way.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

import psycopg
from psycopg import pq

from bench.ab import _by_variant
from bench.common import seed_tenant, write_signed_bodies
from bench.env import BenchEnv, _proc_stat
from runner import intake

_TICKS = os.sysconf("SC_CLK_TCK")


# Without ids: the column default, gen_random_uuid(), names the rows (the intake before session 5).
_RANDOM_IDS_INSERT = b"""
insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload)
select * from unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[])
on conflict (event_id) do nothing
returning event_id
"""


def _client(url: str, tenant: str, bodies: list[bytes], prefix: str, batches: int, size: int, random_ids: bool,
            out) -> None:
    """One client: `batches` INSERTs of `size` new webhooks; reports (server CPU ticks, rows, seconds),
    or ("error", message) when it fails."""
    try:
        sql = _RANDOM_IDS_INSERT if random_ids else intake._INSERT.format(table="payment_webhooks").encode()
        skip = 1 if random_ids else 0  # the ids' parameter
        with psycopg.connect(url, autocommit=True) as conn:
            backend, pgconn = conn.info.backend_pid, conn.pgconn
            ticks, started, rows = _proc_stat(backend)[1], time.perf_counter(), 0  # its server process's CPU
            for k in range(batches):
                picked = [bodies[(k * size + i) % len(bodies)] for i in range(size)]
                params = ([] if random_ids else [intake._uuid7s(size)]) + [
                    intake._text_array([tenant] * size), intake._text_array([f"{prefix}-{k}-{i}" for i in range(size)]),
                    intake._text_array(["payment.captured"] * size), intake._text_array(picked)]
                result = pgconn.exec_params(sql, params, param_types=intake._PARAM_TYPES[skip:],
                                            param_formats=intake._BINARY[skip:])
                if result.status != pq.ExecStatus.TUPLES_OK:
                    raise RuntimeError(result.get_error_message())
                rows += result.ntuples
            out.put((_proc_stat(backend)[1] - ticks, rows, time.perf_counter() - started))
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which raises it)
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def measure(url: str, tenant: str, bodies: list[bytes], prefix: str, *, batches: int, size: int,
            clients: int, random_ids: bool = False) -> tuple[float, float]:
    """(server CPU µs per row, rows per second) for `clients` concurrent clients."""
    out = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_client,
                                     args=(url, tenant, bodies, f"{prefix}-{c}", batches, size, random_ids, out))
             for c in range(clients)]
    for p in procs:
        p.start()
    try:
        results = [out.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    failed = [r[1] for r in results if r[0] == "error"]
    if failed:
        raise RuntimeError(f"a client failed: {failed[0]}")
    rows = sum(r[1] for r in results)
    if rows == 0:
        raise RuntimeError("no rows were stored")
    return 1e6 * sum(r[0] for r in results) / _TICKS / rows, rows / max(r[2] for r in results)


def run(variants: list[str], setup_by: dict, *, rounds: int, batches: int, size: int, clients: int,
        random_ids: str = "", out=sys.stdout) -> dict[str, list[float]]:
    bench = BenchEnv(processes=1)
    bench.start()
    try:
        dbs = {}
        for v in variants:
            url = bench.new_database(f"rowcost{v}")
            tenant = seed_tenant(url, 50)
            if setup_by.get(v):
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(setup_by[v])
            path = bench.tmp / f"rowcost-{v}.tsv"
            write_signed_bodies(tenant, path, limit=400)
            bodies = [line.split("\t", 1)[1].encode() for line in path.read_text().splitlines()]
            dbs[v] = (url, tenant.tenant_id, bodies)
            measure(url, tenant.tenant_id, bodies, "warm", batches=max(1, batches // 8), size=size, clients=clients,
                    random_ids=v in random_ids)
        costs: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                url, tenant, bodies = dbs[v]
                us, rate = measure(url, tenant, bodies, f"r{r}", batches=batches, size=size, clients=clients,
                                   random_ids=v in random_ids)
                costs[v].append(us)
                print(f"{v} {us:.1f} µs/row  {rate:,.0f} rows/s", file=out, flush=True)
    finally:
        bench.close()
    for v in variants:
        print(f"{v} mean {statistics.mean(costs[v]):.1f} µs/row, median {statistics.median(costs[v]):.1f}, over "
              f"{len(costs[v])} rounds of {batches} x {clients} batches of {size}", file=out, flush=True)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rowcost", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="AB", help="one letter per variant (default AB)")
    parser.add_argument("--setup", action="append", default=[], metavar="V=SQL",
                        help="SQL run on variant V's database first (a variant without one is the schema as migrated)")
    parser.add_argument("--random-ids", default="", metavar="LETTERS",
                        help="variants whose rows get the column default's random ids instead of the runner's UUIDv7s")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, each running every variant once (default 4)")
    parser.add_argument("--batches", type=int, default=2500, help="INSERTs per client per round (default 2500)")
    parser.add_argument("--batch", type=int, default=18,
                        help="webhooks per INSERT (default 18, about what intake commits at full speed)")
    parser.add_argument("--clients", type=int, default=2, help="concurrent clients (default 2: a serve process each)")
    args = parser.parse_args(argv)
    if not args.variants.isalpha() or len(set(args.variants)) != len(args.variants):
        parser.error("--variants is distinct letters")
    if min(args.rounds, args.batches, args.batch, args.clients) < 1:
        parser.error("--rounds, --batches, --batch and --clients must be at least 1")
    setup_by = _by_variant(args.setup, "setup")
    unknown = sorted((set(setup_by) | set(args.random_ids)) - set(args.variants))
    if unknown:
        parser.error(f"--setup or --random-ids names variants not in --variants {args.variants}: {', '.join(unknown)}")
    run(list(args.variants), setup_by, rounds=args.rounds, batches=args.batches, size=args.batch,
        clients=args.clients, random_ids=args.random_ids)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
