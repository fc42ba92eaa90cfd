"""The polling fallback: stale shipments refreshed from the fake Shiprocket API into the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fakes.shiprocket_server import scan, shiprocket_server, tracking_data, webhook_payload  # noqa: F401
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runner.shipping import poll_stale_shipments
from runner.shiprocket import TRACK_AWBS_PATH, ShiprocketClient

T0 = datetime(2024, 2, 1, 10, 0, tzinfo=UTC)


def _seed(url: str, awbs: list[str], hours_ago: float = 8) -> dict[str, tuple]:
    """A paid order with a shipment per AWB, last heard of `hours_ago`."""
    made = {}
    with psycopg.connect(url) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('Poll Store') returning id").fetchone()[0]
        for awb in awbs:
            order = c.execute("insert into storeops.orders (tenant_id, amount, status) values (%s, 49900, 'paid') "
                              "returning id", (tenant,)).fetchone()[0]
            ship = c.execute(
                """insert into storeops.shiprocket_shipments (tenant_id, order_id, awb, created_at)
                   values (%s, %s, %s, now() - make_interval(secs => %s)) returning id""",
                (tenant, order, awb, hours_ago * 3600)).fetchone()[0]
            made[awb] = (tenant, order, ship)
    return made


def _state(url: str, ship) -> tuple:
    with psycopg.connect(url) as c:
        return c.execute(
            """select s.status, o.status, s.last_polled_at is not null,
                      (select count(*) from storeops.shipping_tracking_updates t where t.shipment_id = s.id and t.source = 'poll')
               from storeops.shiprocket_shipments s join storeops.orders o on o.id = s.order_id where s.id = %s""",
            (ship,)).fetchone()


@pytest.fixture
async def pool(fresh_db):
    async with AsyncConnectionPool(fresh_db, min_size=1, max_size=4, open=False) as p:
        yield p


async def test_stale_shipments_are_refreshed_and_the_order_follows(fresh_db, pool, shiprocket_server):  # noqa: F811
    made = _seed(fresh_db, ["P-DELIVERED", "P-TRANSIT", "P-NODATA"])
    made_recent = _seed(fresh_db, ["P-RECENT"], hours_ago=1)
    delivered_at = T0 + timedelta(hours=30)
    shiprocket_server.set_tracking("P-DELIVERED", tracking_data(
        "P-DELIVERED", 7, [scan(42, T0), scan(18, T0 + timedelta(hours=5)), scan(17, T0 + timedelta(hours=26)),
                           scan(7, delivered_at)], delivered_at=delivered_at))
    shiprocket_server.set_tracking("P-TRANSIT", tracking_data("P-TRANSIT", 18, [scan(42, T0), scan(18, T0 + timedelta(hours=5))]))

    async with ShiprocketClient(shiprocket_server.url, shiprocket_server.email, shiprocket_server.password) as client:
        changed = await poll_stale_shipments(pool, client, older_than_hours=6)
        assert changed == 2
        # One batch call for the stale ones only; the recent shipment was not asked about.
        assert [sorted(b["awbs"]) for b in shiprocket_server.calls(TRACK_AWBS_PATH)] == [
            ["P-DELIVERED", "P-NODATA", "P-TRANSIT"]]

        assert _state(fresh_db, made["P-DELIVERED"][2]) == ("DELIVERED", "delivered", True, 4)
        assert _state(fresh_db, made["P-TRANSIT"][2]) == ("IN TRANSIT", "shipped", True, 2)
        # track_status 0: no data yet, not an error; polled, nothing stored, tried again later.
        assert _state(fresh_db, made["P-NODATA"][2]) == ("NEW", "paid", True, 0)
        assert _state(fresh_db, made_recent["P-RECENT"][2]) == ("NEW", "paid", False, 0)

        # Just polled: nothing is stale now, so Shiprocket is not called again.
        assert await poll_stale_shipments(pool, client, older_than_hours=6) == 0
        assert len(shiprocket_server.calls(TRACK_AWBS_PATH)) == 1
        assert shiprocket_server.logins == 1


async def test_token_refreshed_after_401_between_polls(fresh_db, pool, shiprocket_server):  # noqa: F811
    made = _seed(fresh_db, ["P-401"])
    shiprocket_server.set_tracking("P-401", tracking_data("P-401", 18, [scan(18, T0)]))
    async with ShiprocketClient(shiprocket_server.url, shiprocket_server.email, shiprocket_server.password) as client:
        assert await poll_stale_shipments(pool, client, older_than_hours=6) == 1
        shiprocket_server.revoke_tokens()
        with psycopg.connect(fresh_db) as c:
            c.execute("update storeops.shiprocket_shipments set last_polled_at = now() - interval '7 hours'")
        shiprocket_server.set_tracking("P-401", tracking_data("P-401", 17, [scan(18, T0), scan(17, T0 + timedelta(hours=20))]))
        assert await poll_stale_shipments(pool, client, older_than_hours=6) == 1
    assert shiprocket_server.logins == 2
    assert _state(fresh_db, made["P-401"][2])[:2] == ("OUT FOR DELIVERY", "shipped")


async def test_poll_after_webhook_adds_no_duplicate_history(fresh_db, pool, shiprocket_server):  # noqa: F811
    made = _seed(fresh_db, ["P-BOTH"])
    tenant, _order, ship = made["P-BOTH"]
    scans = [scan(42, T0), scan(18, T0 + timedelta(hours=5)), scan(7, T0 + timedelta(hours=9))]
    with psycopg.connect(fresh_db) as c:
        c.execute("select storeops.apply_tracking_event(%s, %s, 'webhook')",
                  (tenant, Jsonb(webhook_payload("P-BOTH", 18, T0 + timedelta(hours=5), scans=scans[:2]))))
        rows_before = c.execute("select count(*) from storeops.shipping_tracking_updates where shipment_id = %s",
                                (ship,)).fetchone()[0]
    shiprocket_server.set_tracking("P-BOTH", tracking_data("P-BOTH", 7, scans, delivered_at=T0 + timedelta(hours=9)))
    async with ShiprocketClient(shiprocket_server.url, shiprocket_server.email, shiprocket_server.password) as client:
        assert await poll_stale_shipments(pool, client, older_than_hours=6) == 1
    with psycopg.connect(fresh_db) as c:
        total = c.execute("select count(*) from storeops.shipping_tracking_updates where shipment_id = %s",
                          (ship,)).fetchone()[0]
    # Only the delivery scan is new; the scans the webhook brought are not stored twice.
    assert total == rows_before + 1
    assert _state(fresh_db, ship)[:2] == ("DELIVERED", "delivered")


def _own_api_user(url: str, tenant, email: str, password: str) -> None:
    with psycopg.connect(url) as c:
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, key_id, secret) values (%s, 'shiprocket_api', %s, %s)",
                  (tenant, email, password))


async def test_each_tenants_shipments_are_polled_with_its_own_shiprocket_account(fresh_db, pool, shiprocket_server):  # noqa: F811
    import httpx

    from runner.config import Settings
    from runner.context import Context

    own = _seed(fresh_db, ["P-OWN-1", "P-OWN-2"])
    shared = _seed(fresh_db, ["P-SHARED"])
    own_tenant, shared_tenant = own["P-OWN-1"][0], shared["P-SHARED"][0]
    shiprocket_server.add_account("ops@own-store.test", "own-secret")
    _own_api_user(fresh_db, own_tenant, "ops@own-store.test", "own-secret")
    # Each account sees only its own shipments.
    for awb in ("P-OWN-1", "P-OWN-2"):
        shiprocket_server.set_tracking(awb, tracking_data(awb, 7, [scan(7, T0)], delivered_at=T0), account="ops@own-store.test")
    shiprocket_server.set_tracking("P-SHARED", tracking_data("P-SHARED", 18, [scan(18, T0)]), account=shiprocket_server.email)
    settings = Settings(shiprocket_api_base=shiprocket_server.url, shiprocket_email=shiprocket_server.email,
                        shiprocket_password=shiprocket_server.password)
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=settings, pool=pool, http=http)
        # One at a time (limit 1), every stale shipment in one run.
        assert await poll_stale_shipments(pool, ctx.tenant_shiprocket_client, older_than_hours=6, limit=1) == 3
        assert await poll_stale_shipments(pool, ctx.tenant_shiprocket_client, older_than_hours=6) == 0
    assert sorted(shiprocket_server.tracked_by) == [
        ("api-user@store.test", ["P-SHARED"]), ("ops@own-store.test", ["P-OWN-1"]), ("ops@own-store.test", ["P-OWN-2"])]
    assert shiprocket_server.logins == 2  # one login per account, its token reused
    assert _state(fresh_db, own["P-OWN-1"][2])[:2] == ("DELIVERED", "delivered")
    assert _state(fresh_db, shared["P-SHARED"][2])[:2] == ("IN TRANSIT", "shipped")
    assert shared_tenant != own_tenant


async def test_one_tenants_failing_account_does_not_hold_up_the_others(fresh_db, pool, shiprocket_server, caplog):  # noqa: F811
    import httpx

    from runner.config import Settings
    from runner.context import Context

    broken = _seed(fresh_db, ["P-BROKEN"])
    fine = _seed(fresh_db, ["P-FINE"])
    _own_api_user(fresh_db, broken["P-BROKEN"][0], "ops@broken.test", "wrong-password")  # Shiprocket refuses its login
    shiprocket_server.set_tracking("P-FINE", tracking_data("P-FINE", 18, [scan(18, T0)]))
    settings = Settings(shiprocket_api_base=shiprocket_server.url, shiprocket_email=shiprocket_server.email,
                        shiprocket_password=shiprocket_server.password)
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=settings, pool=pool, http=http)
        assert await poll_stale_shipments(pool, ctx.tenant_shiprocket_client, older_than_hours=6) == 1
        [failure] = [r for r in caplog.records if r.getMessage().startswith("Shiprocket tracking failed")]
        assert failure.api_user == "ops@broken.test" and failure.shipments == 1
        assert _state(fresh_db, fine["P-FINE"][2])[:3] == ("IN TRANSIT", "shipped", True)
        assert _state(fresh_db, broken["P-BROKEN"][2])[2] is False  # not marked: asked again next run
        # With no platform API user either, a tenant without its own is skipped (and marked), not an error.
        bare = Context(settings=Settings(shiprocket_api_base=shiprocket_server.url), pool=pool, http=http)
        assert await bare.tenant_shiprocket_client(str(fine["P-FINE"][0])) is None


async def test_when_every_call_fails_the_run_fails(fresh_db, pool, shiprocket_server):  # noqa: F811
    from runner.shiprocket import ShiprocketError

    made = _seed(fresh_db, ["P-DOWN"])
    async with ShiprocketClient(shiprocket_server.url, shiprocket_server.email, shiprocket_server.password) as client:
        await client.ping()
        shiprocket_server.fail_next(503)
        with pytest.raises(ShiprocketError):
            await poll_stale_shipments(pool, client, older_than_hours=6)
    assert _state(fresh_db, made["P-DOWN"][2])[2] is False


async def test_stores_sharing_the_platform_account_are_asked_in_one_call(fresh_db, pool, shiprocket_server):  # noqa: F811
    import httpx

    from runner.config import Settings
    from runner.context import Context

    made = {**_seed(fresh_db, ["P-A"]), **_seed(fresh_db, ["P-B"]), **_seed(fresh_db, ["P-C"])}  # three stores
    assert len({t for t, _, _ in made.values()}) == 3
    for awb in made:
        shiprocket_server.set_tracking(awb, tracking_data(awb, 18, [scan(18, T0)]))
    settings = Settings(shiprocket_api_base=shiprocket_server.url, shiprocket_email=shiprocket_server.email,
                        shiprocket_password=shiprocket_server.password)
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=settings, pool=pool, http=http)
        assert await poll_stale_shipments(pool, ctx.tenant_shiprocket_client, older_than_hours=6) == 3
    assert [(who, sorted(awbs)) for who, awbs in shiprocket_server.tracked_by] == [
        (shiprocket_server.email, ["P-A", "P-B", "P-C"])]


async def test_a_rejected_platform_login_is_tried_once_a_run_and_fails_the_run(fresh_db, pool, shiprocket_server):  # noqa: F811
    import httpx

    from runner.config import Settings
    from runner.context import Context
    from runner.shiprocket import ShiprocketError

    made = {}
    for n in range(3):
        made.update(_seed(fresh_db, [f"P-{n}"]))
    settings = Settings(shiprocket_api_base=shiprocket_server.url, shiprocket_email=shiprocket_server.email,
                        shiprocket_password="not-the-password")
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=settings, pool=pool, http=http)
        with pytest.raises(ShiprocketError, match="api-user@store.test"):
            await poll_stale_shipments(pool, ctx.tenant_shiprocket_client, older_than_hours=6, limit=1)
    assert len(shiprocket_server.calls("/v1/external/auth/login")) == 1  # not once per store or per batch
    assert not any(_state(fresh_db, ship)[2] for _, _, ship in made.values())  # none marked polled


async def test_with_no_shiprocket_api_user_anywhere_the_poll_is_skipped(fresh_db, pool):
    import httpx

    from runner import scheduler
    from runner.config import Settings
    from runner.context import Context

    made = _seed(fresh_db, ["P-NOBODY"])
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=Settings(), pool=pool, http=http)
        assert (await scheduler._shipment_poll(ctx, None)).startswith("skipped: no Shiprocket API user")
    assert _state(fresh_db, made["P-NOBODY"][2])[2] is False
