"""Benchmark: verify n custom domains against a local authoritative DNS server (Knot).

`sweep(n, nameserver)` verifies d0.bench.test .. d{n-1}.bench.test (TXT ownership + CNAME routing,
two queries each) through one shared resolver with bounded concurrency and reports domains/s. The
zone must be served at `nameserver`; `python -m bench.domain_sweep [n]` generates it, starts knotd
on a free loopback port, runs the sweep and prints a JSON report. Target: >= 1,000 domains/s for
100,000 domains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from runner.dns_check import DomainVerifier, verify_many  # noqa: E402

ZONE = "bench.test"
PLATFORM_CNAME = "stores.platform.test"
TXT_PREFIX = "_storeops-verification"


def domain_name(i: int, zone: str = ZONE) -> str:
    return f"d{i}.{zone}"


def token(i: int) -> str:
    return f"{i:032x}"


def zone_records(n: int) -> Iterator[str]:
    """Records (relative to the zone) making every bench domain verify."""
    for i in range(n):
        yield f'{TXT_PREFIX}.d{i} TXT "{token(i)}"'
        yield f"d{i} CNAME {PLATFORM_CNAME}."


async def sweep(n: int, nameserver: str, *, concurrency: int = 128, timeout: float = 5.0,
                zone: str = ZONE) -> dict[str, Any]:
    """Verify n bench domains at `nameserver` ("ip:port"); returns counts, seconds and domains/s."""
    verifier = DomainVerifier(nameservers=[nameserver], platform_cname=PLATFORM_CNAME, platform_addresses=[],
                              txt_prefix=TXT_PREFIX, timeout=timeout)
    items = [(domain_name(i, zone), token(i)) for i in range(n)]
    started = time.perf_counter()
    try:
        results = await verify_many(items, verifier=verifier, concurrency=concurrency)
    finally:
        verifier.close()
    seconds = time.perf_counter() - started
    verified = sum(1 for r in results if r.success)
    errors: dict[str, int] = {}
    for r in results:
        if not r.success:
            key = (r.error or "?").split(" ", 2)[0]
            errors[key] = errors.get(key, 0) + 1
    return {
        "domains": n,
        "verified": verified,
        "failed": n - verified,
        "failure_kinds": errors,
        "queries": sum(len(r.records) for r in results),
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "domains_per_second": round(n / seconds, 1) if seconds > 0 else None,
        "nameserver": nameserver,
    }


def run(n: int, concurrency: int, use_uvloop: bool = True) -> dict[str, Any]:
    """Generate the zone, start knotd on loopback, sweep, stop knotd."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes.dns_servers import knot_server

    with tempfile.TemporaryDirectory(prefix="storeops-bench-dns-") as tmp:
        load_started = time.perf_counter()
        with knot_server({ZONE: list(zone_records(n))}, workdir=Path(tmp), udp_workers=2) as server:
            load_seconds = time.perf_counter() - load_started
            coro = sweep(n, server.address, concurrency=concurrency)
            if use_uvloop:
                try:
                    import uvloop
                except ImportError:
                    use_uvloop = False
            report = uvloop.run(coro) if use_uvloop else asyncio.run(coro)
    report["zone_load_seconds"] = round(load_seconds, 2)
    report["event_loop"] = "uvloop" if use_uvloop else "asyncio"
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=100_000, help="domains to verify (default 100000)")
    parser.add_argument("--concurrency", type=int, default=128, help="domains in flight (default 128)")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    parser.add_argument("--target", type=float, default=1000.0, help="domains/s to meet (exit 1 below it)")
    args = parser.parse_args(argv)
    report = run(args.n, args.concurrency, use_uvloop=not args.no_uvloop)
    report["target_domains_per_second"] = args.target
    report["meets_target"] = bool(report["domains_per_second"] and report["domains_per_second"] >= args.target
                                  and report["failed"] == 0)
    print(json.dumps(report, indent=2))
    return 0 if report["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
