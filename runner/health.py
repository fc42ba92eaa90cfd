"""Health checks of what storeops depends on: the DNS resolver, the Razorpay API, the Shiprocket
API and the database. Each result is a row in system_health_checks (status, response time, error)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger("storeops.health")

DEGRADED_MS = 2000


@dataclass
class CheckResult:
    check_type: str
    status: str
    response_time_ms: int
    error: str | None = None


async def _timed(check_type: str, coro) -> CheckResult:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(coro, 15)
    except Exception as exc:
        ms = int((time.perf_counter() - started) * 1000)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        return CheckResult(check_type, "down", ms, f"{exc.__class__.__name__}: {message}"[:500])
    ms = int((time.perf_counter() - started) * 1000)
    return CheckResult(check_type, "degraded" if ms > DEGRADED_MS else "healthy", ms)


async def check_dns(settings) -> None:
    resolver = dns.asyncresolver.Resolver(configure=not settings.dns_nameservers)
    if settings.dns_nameservers:
        hosts, ports = [], []
        for ns in settings.dns_nameservers:
            host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "53")
            hosts.append(host or ns)
            ports.append(int(port or 53))
        resolver.nameservers = hosts
        resolver.port = ports[0]
    resolver.lifetime = settings.dns_timeout
    # Any answer, NXDOMAIN included, proves the resolver works; a timeout or SERVFAIL does not.
    try:
        await resolver.resolve(settings.platform_cname, "A")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        pass


async def run_checks(ctx) -> list[CheckResult]:
    async def database():
        async with ctx.pool.connection(timeout=5) as conn:
            await conn.execute("select 1")

    async def razorpay():
        await ctx.razorpay_client().ping()

    async def shiprocket():
        await ctx.shiprocket_client().ping()

    results = await asyncio.gather(
        _timed("domain_verification", check_dns(ctx.settings)),
        _timed("payment_gateway", razorpay()),
        _timed("shipping_api", shiprocket()),
        _timed("database", database()),
    )
    try:
        async with ctx.pool.connection(timeout=5) as conn:
            async with conn.transaction():
                for r in results:
                    await conn.execute(
                        """insert into storeops.system_health_checks (check_type, status, response_time_ms, error)
                           values (%s, %s, %s, %s)""", (r.check_type, r.status, r.response_time_ms, r.error))
    except Exception as exc:
        log.error("could not record health checks", extra={"error": str(exc)[:200]})
    for r in results:
        (log.info if r.status == "healthy" else log.warning)(
            "health check", extra={"check_type": r.check_type, "status": r.status, "ms": r.response_time_ms,
                                   "error": r.error})
    return results
