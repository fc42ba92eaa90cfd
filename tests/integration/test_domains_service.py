"""runner.domains end to end: a real database, Knot on loopback and a local TLS server."""

from __future__ import annotations

import uuid

import fakes.dns_servers as fake_dns
import fakes.tls_server as fake_tls
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from runner.config import Settings
from runner.domains import check_ssl_and_record, recheck_due, verify_and_record

knot, tls_ca, tls_site = fake_dns.knot, fake_tls.tls_ca, fake_tls.tls_site  # fixtures

PLATFORM = "stores.platform.test"


@pytest.fixture
async def pool(fresh_db):
    async with AsyncConnectionPool(fresh_db, min_size=1, max_size=4, open=False) as p:
        yield p


@pytest.fixture
def settings(knot):
    return Settings(dns_nameservers=[knot.address], platform_cname=PLATFORM,
                    platform_addresses=["192.0.2.10"], dns_timeout=2.0)


@pytest.fixture
def domain(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('Kirana') returning id").fetchone()[0]
        row = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'www.shop.test') "
                        "returning id, verification_token", (tenant,)).fetchone()
    return {"tenant_id": tenant, "id": row[0], "token": row[1]}


def logs(url, domain_id):
    with psycopg.connect(url) as c:
        return c.execute("select success, error, dns_records from domain_verification_logs "
                         "where domain_id = %s order by verified_at", (domain_id,)).fetchall()


async def test_failed_then_fixed_verification_is_logged_retried_and_verified(pool, settings, knot, domain, fresh_db):
    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}."])
    first = await verify_and_record(pool, settings, domain["id"], domain["tenant_id"], domain="WWW.Shop.test")
    assert first["success"] is False and first["status"] == "pending"
    assert first["error"].startswith("NXDOMAIN for _storeops-verification.www.shop.test")
    assert first["next_retry_at"] is not None
    assert first["expected"]["txt_name"] == "_storeops-verification.www.shop.test"
    assert first["expected"]["txt_value"] == domain["token"]

    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}.", f'_storeops-verification.www TXT "{domain["token"]}"'])
    second = await verify_and_record(pool, settings, domain["id"])
    assert second["success"] is True and second["status"] == "verified" and second["next_retry_at"] is None
    assert second["verification_attempts"] == 2

    history = logs(fresh_db, domain["id"])
    assert [h[0] for h in history] == [False, True]
    txt = next(q for q in history[0][2] if q["type"] == "TXT")
    assert txt["rcode"] == "NXDOMAIN" and txt["resolver"] == knot.address
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select status from operation_retry_queue where operation_id = %s",
                         (domain["id"],)).fetchone()[0] == "completed"


async def test_other_tenants_and_unknown_domains_are_not_found(pool, settings, domain):
    with pytest.raises(LookupError, match="not found for this tenant"):
        await verify_and_record(pool, settings, domain["id"], uuid.uuid4())
    with pytest.raises(LookupError, match="not found"):
        await verify_and_record(pool, settings, uuid.uuid4())
    with pytest.raises(LookupError, match="is www.shop.test, not evil.test"):
        await verify_and_record(pool, settings, domain["id"], domain="evil.test")


async def test_recheck_demotes_a_domain_whose_records_are_gone(pool, settings, knot, domain, fresh_db):
    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}.", f'_storeops-verification.www TXT "{domain["token"]}"'])
    assert (await verify_and_record(pool, settings, domain["id"]))["status"] == "verified"
    knot.set_zone("shop.test", ["www CNAME parked.chain.test."])
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("update custom_domains set last_checked_at = now() - interval '7 hours' where id = %s", (domain["id"],))
    assert await recheck_due(pool, settings) == 1
    with psycopg.connect(fresh_db, autocommit=True) as c:
        status, failures, error = c.execute(
            "select status, consecutive_failures, last_verification_error from custom_domains where id = %s",
            (domain["id"],)).fetchone()
        assert (status, failures) == ("verified", 1)
        assert "CNAME points to parked.chain.test, expected stores.platform.test" in error
    # The first definitive failure queued a retry; the retry worker's second check flags it.
    second = await verify_and_record(pool, settings, domain["id"])
    assert second["status"] == "at_risk"
    assert await recheck_due(pool, settings) == 0  # a queued retry is not double-checked


async def test_ssl_check_records_status_issuer_and_expiry(pool, settings, domain, tls_site, fresh_db):
    site = tls_site("www.shop.test", "expiring")
    result = await check_ssl_and_record(pool, settings, domain["id"], port=site.port, connect_host="127.0.0.1",
                                        ca_file=site.ca_file)
    assert result["ssl_status"] == "expiring" and result["hostname_matches"] is True
    assert "storeops test CA" in result["ssl_issuer"]
    wrong = tls_site("www.shop.test", "wrong_hostname")
    result = await check_ssl_and_record(pool, settings, domain["id"], port=wrong.port, connect_host="127.0.0.1",
                                        ca_file=wrong.ca_file)
    assert result["ssl_status"] == "failed" and "hostname mismatch" in result["ssl_error"]
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select ssl_status, ssl_error is not null from custom_domains where id = %s",
                         (domain["id"],)).fetchone() == ("failed", True)


async def test_recheck_takes_every_due_domain_in_batches_and_one_that_fails_stops_nothing(pool, settings, domain,
                                                                                          fresh_db, caplog):
    names = ["a.shop.test", "b.shop.test", "c.shop.test"]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for name in names:
            c.execute("insert into storeops.custom_domains (tenant_id, domain, auto_verify) values (%s, %s, true)",
                      (domain["tenant_id"], name))
        # b's result cannot be recorded (as when it is deleted mid-run): a test-only trigger refuses it.
        c.execute("create function public.refuse_b() returns trigger language plpgsql as $$ "
                  "begin if new.domain = 'b.shop.test' then raise exception 'refused for the test'; end if; "
                  "return new; end $$")
        c.execute("create trigger refuse_b before update on storeops.custom_domains "
                  "for each row execute function public.refuse_b()")
    # One at a time (limit 1), every due domain in one run; b is tried once, not again and again.
    assert await recheck_due(pool, settings, limit=1) == 2
    [failure] = [r for r in caplog.records if r.getMessage() == "domain re-check failed"]
    assert failure.domain == "b.shop.test" and "refused for the test" in failure.error
    with psycopg.connect(fresh_db, autocommit=True) as c:
        checked = dict(c.execute("select domain, last_checked_at is not null from storeops.custom_domains "
                                 "where domain = any(%s)", (names,)).fetchall())
        assert checked == {"a.shop.test": True, "b.shop.test": False, "c.shop.test": True}
        c.execute("drop trigger refuse_b on storeops.custom_domains")
    assert await recheck_due(pool, settings, limit=1) == 1  # the next run takes b
    assert await recheck_due(pool, settings, limit=1) == 0


async def test_ssl_checks_take_every_verified_domain_due_in_batches(pool, settings, domain, fresh_db):
    from types import SimpleNamespace

    from runner import scheduler

    with psycopg.connect(fresh_db, autocommit=True) as c:
        for name in ("a.shop.test", "b.shop.test", "c.shop.test"):
            c.execute("insert into storeops.custom_domains (tenant_id, domain, status) values (%s, %s, 'verified')",
                      (domain["tenant_id"], name))
    ctx = SimpleNamespace(pool=pool, settings=settings)
    assert await scheduler._ssl_checks(ctx, None, batch=2) == 3  # nothing listens on their port 443 here
    with psycopg.connect(fresh_db) as c:
        rows = c.execute("select ssl_status, ssl_error from storeops.custom_domains where status = 'verified'").fetchall()
    assert len(rows) == 3 and all(status == "failed" and error for status, error in rows)
    assert await scheduler._ssl_checks(ctx, None, batch=2) == 0  # checked today


async def test_a_check_someone_asked_for_leaves_the_retry_schedule_as_it_was(pool, settings, knot, domain, fresh_db):
    knot.set_zone("shop.test", [f"www CNAME {PLATFORM}."])  # no TXT yet
    first = await verify_and_record(pool, settings, domain["id"])  # automatic: starts the schedule
    for _ in range(3):
        again = await verify_and_record(pool, settings, domain["id"], manual=True)
        assert again["status"] == "pending" and again["next_retry_at"] == first["next_retry_at"]
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select attempts from storeops.operation_retry_queue where operation_id = %s",
                         (domain["id"],)).fetchone()[0] == 1
