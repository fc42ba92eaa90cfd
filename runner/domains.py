"""Custom domains service: run a DNS or TLS check and record the result through SQL
(storeops.record_domain_verification / record_ssl_check), which owns the state machine.

Never holds a transaction across network I/O: read the domain, commit, do the check, then record
the result in a new short transaction. The retry worker calls `verify_and_record` for
operation_type 'domain_verify' (payload {"domain_id": ...}); record_domain_verification completes
or reschedules that retry row itself.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runner.config import Settings
from runner.dns_check import DomainVerifier, VerificationResult, normalize_domain
from runner.tls_check import check_certificate

log = logging.getLogger("storeops.domains")


@dataclass
class DomainRow:
    id: uuid.UUID
    tenant_id: uuid.UUID
    domain: str
    status: str
    verification_token: str
    verification_attempts: int
    consecutive_failures: int
    last_verification_error: str | None
    last_verified_at: datetime | None
    last_checked_at: datetime | None
    ssl_status: str
    ssl_expires_at: datetime | None
    ssl_issuer: str | None
    ssl_error: str | None


_COLUMNS = ("id, tenant_id, domain, status, verification_token, verification_attempts, consecutive_failures, "
            "last_verification_error, last_verified_at, last_checked_at, ssl_status, ssl_expires_at, ssl_issuer, "
            "ssl_error")

_GET_DOMAIN = f"""
select {_COLUMNS} from storeops.custom_domains
where id = %(domain_id)s and (%(tenant_id)s::uuid is null or tenant_id = %(tenant_id)s::uuid)
"""

_RECORD_VERIFICATION = f"""
select {_COLUMNS} from storeops.record_domain_verification(
  %(domain_id)s, %(success)s, %(definitive)s, %(error)s, %(records)s, %(duration_ms)s, p_manual => %(manual)s)
"""

_NEXT_RETRY = """
select next_retry_at from storeops.operation_retry_queue
where operation_type = 'domain_verify' and operation_id = %(domain_id)s and status in ('pending', 'processing')
"""

_RECORD_SSL = f"""
select {_COLUMNS} from storeops.record_ssl_check(
  %(domain_id)s, %(status)s, %(expires_at)s, %(issuer)s, %(error)s)
"""

_DUE = f"select {_COLUMNS} from storeops.list_domains_due_for_recheck(%(every)s, %(limit)s)"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def make_verifier(settings: Settings) -> DomainVerifier:
    return DomainVerifier(nameservers=settings.dns_nameservers, platform_cname=settings.platform_cname,
                          platform_addresses=settings.platform_addresses, txt_prefix=settings.dns_txt_prefix,
                          timeout=settings.dns_timeout)


async def get_domain(pool: AsyncConnectionPool, domain_id: uuid.UUID | str,
                     tenant_id: uuid.UUID | str | None = None) -> DomainRow:
    """The domain row; LookupError when it does not exist or belongs to another tenant."""
    try:
        key = uuid.UUID(str(domain_id))
    except ValueError:
        raise LookupError(f"domain_id {domain_id!r} is not a uuid") from None
    async with pool.connection() as conn, conn.cursor(row_factory=class_row(DomainRow)) as cur:
        await cur.execute(_GET_DOMAIN, {"domain_id": key, "tenant_id": str(tenant_id) if tenant_id else None})
        row = await cur.fetchone()
    if row is None:
        raise LookupError(f"custom domain {domain_id} not found" + (" for this tenant" if tenant_id else ""))
    return row


async def _record(pool: AsyncConnectionPool, row: DomainRow, result: VerificationResult,
                  manual: bool = False) -> dict[str, Any]:
    async with pool.connection() as conn:
        async with conn.cursor(row_factory=class_row(DomainRow)) as cur:
            await cur.execute(_RECORD_VERIFICATION, {
                "domain_id": row.id, "success": result.success, "definitive": result.definitive,
                "error": result.error, "records": Jsonb(result.records), "duration_ms": result.duration_ms,
                "manual": manual})
            updated = await cur.fetchone()
        retry = await (await conn.execute(_NEXT_RETRY, {"domain_id": row.id})).fetchone()
    assert updated is not None
    # What was recorded, which is not always what DNS said: records found while another store holds
    # the domain are recorded as a definitive failure (migration 0062).
    success = result.success and updated.last_verification_error is None
    return {
        "domain_id": str(updated.id),
        "tenant_id": str(updated.tenant_id),
        "domain": updated.domain,
        "success": success,
        "definitive": result.definitive if not result.success else not success,
        "error": None if success else (updated.last_verification_error or result.error),
        "status": updated.status,
        "verification_attempts": updated.verification_attempts,
        "consecutive_failures": updated.consecutive_failures,
        "last_verified_at": _iso(updated.last_verified_at),
        "last_checked_at": _iso(updated.last_checked_at),
        "next_retry_at": _iso(retry[0]) if retry else None,
        "duration_ms": result.duration_ms,
        "records": result.records,
    }


async def verify_and_record(pool: AsyncConnectionPool, settings: Settings, domain_id: uuid.UUID | str,
                            tenant_id: uuid.UUID | str | None = None, *, domain: str | None = None,
                            verifier: DomainVerifier | None = None, manual: bool = False) -> dict[str, Any]:
    """Verify one domain's DNS now and record the attempt; returns what the user should see.
    `manual`: someone asked for this check (the admin endpoint, `storeops verify-domain`); a failure
    then leaves a live retry's attempts and time as they are (migration 0062).

    Raises LookupError if the domain does not exist, is not `tenant_id`'s, or (when `domain` is
    given, as in the verify-domain-dns request body) is not that domain; ValueError if `domain`
    is not a valid domain name.
    """
    row = await get_domain(pool, domain_id, tenant_id)
    if domain is not None and normalize_domain(domain) != row.domain:
        raise LookupError(f"custom domain {domain_id} is {row.domain}, not {domain}")
    owned = verifier is None
    verifier = verifier or make_verifier(settings)
    try:
        result = await verifier.verify(row.domain, row.verification_token)
    finally:
        if owned:
            verifier.close()
    outcome = await _record(pool, row, result, manual)
    outcome["expected"] = {
        "txt_name": f"{verifier.txt_prefix}.{row.domain}",
        "txt_value": row.verification_token,
        "cname": verifier.platform_cname,
        "addresses": sorted(verifier.platform_addresses),
    }
    return outcome


async def recheck_due(pool: AsyncConnectionPool, settings: Settings, limit: int = 1000, *,
                      every: timedelta = timedelta(hours=6), concurrency: int = 100, budget: float = 300.0) -> int:
    """Re-verify auto_verify and verified domains not checked for `every`, `limit` at a time until
    none is due or `budget` seconds have passed (the scheduler runs its jobs one after another, so a
    run may not hold up the others for long); returns how many were checked. Until session 11 a run
    took one batch: at 100,000 domains each was re-checked every four days instead of every six
    hours (the bench's sweep checks 1,000 to 1,800 a second). One shared resolver; each result is
    recorded in its own short transaction. A domain whose check or record fails (deleted meanwhile,
    say) is logged and not taken again in this run, and does not stop the others."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    gate = asyncio.Semaphore(max(1, concurrency))
    verifier: DomainVerifier | None = None
    failed: set[uuid.UUID] = set()  # still due, not to be taken again this run
    seen: set[uuid.UUID] = set()
    checked = 0

    async def one(row: DomainRow) -> bool:
        async with gate:
            try:
                result = await verifier.verify(row.domain, row.verification_token)
                await _record(pool, row, result)
            except Exception as exc:  # noqa: BLE001 (one domain; the rest of the run goes on)
                log.warning("domain re-check failed", extra={"domain_id": str(row.id), "domain": row.domain,
                                                             "error": f"{type(exc).__name__}: {exc}"[:300]})
                failed.add(row.id)
                return False
            return True

    try:
        while loop.time() < deadline:
            async with pool.connection() as conn, conn.cursor(row_factory=class_row(DomainRow)) as cur:
                await cur.execute(_DUE, {"every": every, "limit": limit + len(failed)})
                due = [row for row in await cur.fetchall() if row.id not in failed][:limit]
            if not due or seen.issuperset(row.id for row in due):  # nothing new: stop, whatever kept them due
                break
            seen.update(row.id for row in due)
            verifier = verifier or make_verifier(settings)
            checked += sum(await asyncio.gather(*(one(row) for row in due)))
            if len(due) < limit:
                break
    finally:
        if verifier is not None:
            verifier.close()
    return checked


async def check_ssl_and_record(pool: AsyncConnectionPool, settings: Settings, domain_id: uuid.UUID | str, *,
                               port: int = 443, connect_host: str | None = None, ca_file: str | None = None,
                               tenant_id: uuid.UUID | str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """TLS-handshake the domain (SNI) and store ssl_status, issuer, expiry and the failure reason."""
    row = await get_domain(pool, domain_id, tenant_id)
    result = await check_certificate(row.domain, port=port, connect_host=connect_host, ca_file=ca_file,
                                     timeout=timeout)
    async with pool.connection() as conn, conn.cursor(row_factory=class_row(DomainRow)) as cur:
        await cur.execute(_RECORD_SSL, {"domain_id": row.id, "status": result.status,
                                        "expires_at": result.expires_at, "issuer": result.issuer,
                                        "error": result.error})
        updated = await cur.fetchone()
    assert updated is not None
    checked = asdict(result)
    return {
        "domain_id": str(updated.id),
        "domain": updated.domain,
        "ssl_status": updated.ssl_status,
        "ssl_issuer": updated.ssl_issuer,
        "ssl_expires_at": _iso(updated.ssl_expires_at),
        "ssl_error": updated.ssl_error,
        "hostname_matches": checked["hostname_matches"],
    }
