"""Section 5: the domain sweep. Calls bench/domain_sweep.py's `sweep(n, nameserver)` (the domains
engineer's code, used as it is) against a Knot server the harness starts on loopback with the
sweep's generated zone (tests/fakes/dns_servers.py, as the tests start Knot)."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from bench.common import Section, Sizes
from bench.env import ROOT, BenchEnv, CpuMeter

TARGET_RATE = 1000.0


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    try:
        from bench import domain_sweep
    except Exception as exc:  # noqa: BLE001 (theirs; may be mid-edit)
        section.skipped = f"bench/domain_sweep.py could not be imported ({exc.__class__.__name__}: {exc}); skipped"
        return {}
    missing = [name for name in ("sweep", "zone_records", "ZONE") if not hasattr(domain_sweep, name)]
    if missing:
        section.skipped = f"bench/domain_sweep.py has no {', '.join(missing)} yet; skipped"
        return {}
    if str(ROOT / "tests") not in sys.path:
        sys.path.insert(0, str(ROOT / "tests"))
    from fakes.dns_servers import knot_server

    n = sizes.sweep_domains
    workdir = env.tmp / "knot"
    workdir.mkdir(exist_ok=True)
    load_started = time.perf_counter()
    with knot_server({domain_sweep.ZONE: list(domain_sweep.zone_records(n))}, workdir=workdir, udp_workers=1) as knot:
        load_seconds = time.perf_counter() - load_started
        meter = CpuMeter({"harness (sweep)": {os.getpid()}}).start()
        coro = domain_sweep.sweep(n, knot.address)
        try:
            import uvloop

            report = uvloop.run(coro)
            loop = "uvloop"
        except ImportError:
            report = asyncio.run(coro)
            loop = "asyncio"
        section.cpu["domain sweep (sweep + knotd)"] = meter.stop()
    rate = report.get("domains_per_second")
    failed = report.get("failed", 0)
    section.add(f"domains verified per second ({n:,} domains)", rate, "/s", target=f">= {TARGET_RATE:,.0f}/s",
                met=bool(rate and rate >= TARGET_RATE and not failed))
    section.add("domains failed", float(failed), "", target="0", met=not failed, higher_is_better=False)
    if failed:
        section.notes.append(f"failures by kind: {report.get('failure_kinds')}")
    return {"details": {**report, "zone_load_seconds": round(load_seconds, 2), "event_loop": loop}}
