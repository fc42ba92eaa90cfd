"""Rate limiting on the webhook endpoints, and secrets never leaving the runner.

Rate limits: a runner with STOREOPS_RATE_LIMIT_SOURCE=5 and STOREOPS_RATE_LIMIT_TENANT=5 (5/s, a
burst of 25). Sources are told apart by address: the clients bind distinct loopback addresses
(127.0.x.y all reach the runner on 127.0.0.1).

Secrets: a run with tenant secrets (Razorpay webhook secret, Razorpay API key, Shiprocket token) and
platform secrets (webhook secret, Shiprocket token, Razorpay API key, Shiprocket API password, JWT
secret) configured, through good and bad webhooks, refunds via the fake Razorpay (one made, one
refused for bad credentials), failing JWTs, a domain check and a Shiprocket health check. None of the
secret values may appear in the runner's log, in any response, in /metrics, or in anything a
storeops_tenant role can select (every column of every table and view it can read, as each tenant).
"""

from __future__ import annotations

import secrets
import time
import uuid

import httpx
import jwt
import orjson
import psycopg
import pytest
from fakes.razorpay_server import FakeRazorpay, payment_entity, razorpay_id, signed_webhook, webhook_event
from fakes.shiprocket_server import FakeShiprocket
from runner_proc import JWT_SECRET, SHIPROCKET_TOKEN, WEBHOOK_SECRET, RunnerProcess, sign

from runner.auth import make_token

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

RATE = 5  # requests/s; the burst is 5 s' worth
BURST = RATE * 5


def _client(source: str) -> httpx.Client:
    """A client whose requests come from `source` (a loopback address)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)


def _unrouted_payment() -> bytes:
    """A signed-able payment event for an order no tenant has: it resolves to no tenant, so only the
    source limit applies to it."""
    return orjson.dumps(webhook_event("payment.captured", payment=payment_entity(
        amount=10_000, order_id=razorpay_id("order"), status="captured")))


def _post_rzp(client: httpx.Client, base: str, body: bytes, tenant: str | None = None) -> httpx.Response:
    path = "/functions/v1/razorpay-webhook" + (f"/{tenant}" if tenant else "")
    return client.post(base + path, content=body, headers={"content-type": "application/json",
                                                            "x-razorpay-signature": sign(body),
                                                            "x-razorpay-event-id": razorpay_id("evt")})


def _assert_429(r: httpx.Response, key_kind: str) -> int:
    assert r.status_code == 429, (r.status_code, r.text)
    retry_after = r.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, r.headers
    error = r.json()["error"]
    assert "rate limit" in error and key_kind in error, error
    return int(retry_after)


@pytest.fixture(scope="module")
def limited(module_db, tmp_path_factory):
    with psycopg.connect(module_db, autocommit=True) as c:
        tenants = [str(c.execute("insert into storeops.tenants (name) values (%s) returning id", (f"Limited {n}",))
                       .fetchone()[0]) for n in ("A", "B")]
    runner = RunnerProcess(module_db, log_path=tmp_path_factory.mktemp("limits") / "runner.log", env={
        "STOREOPS_RATE_LIMIT_SOURCE": str(RATE), "STOREOPS_RATE_LIMIT_TENANT": str(RATE)}).start()
    yield {"url": runner.base_url, "db": module_db, "tenant_a": tenants[0], "tenant_b": tenants[1], "runner": runner}
    runner.stop()


def _stored(db: str, event_ids: list[str]) -> set[str]:
    with psycopg.connect(db, autocommit=True) as c:
        return {r[0] for r in c.execute("select event_id from storeops.payment_webhooks where event_id = any (%s)",
                                        (event_ids,)).fetchall()}


def test_a_burst_from_one_source_gets_429_with_retry_after_and_is_accepted_after_waiting(limited):
    base = limited["url"]
    statuses: list[int] = []
    refused: list[httpx.Response] = []
    accepted_ids: list[str] = []
    refused_ids: list[str] = []
    bodies = [_unrouted_payment() for _ in range(BURST + 10)]
    with _client("127.0.0.2") as client:
        started = time.monotonic()
        for body in bodies:
            r = _post_rzp(client, base, body)
            statuses.append(r.status_code)
            event_id = r.request.headers["x-razorpay-event-id"]
            if r.status_code == 429:
                refused.append(r)
                refused_ids.append(event_id)
            else:
                assert r.status_code == 200, r.text
                accepted_ids.append(event_id)
        elapsed = time.monotonic() - started
        assert 429 in statuses, (statuses, elapsed)
        first_429 = statuses.index(429)
        # The burst is accepted (plus what refilled while it was sent), then refused.
        assert BURST <= first_429 <= BURST + 1 + int(elapsed * RATE), (statuses, elapsed)
        retry_after = max(_assert_429(r, "source:127.0.0.2") for r in refused)
        # The Shiprocket endpoint shares the per-source bucket.
        ship = client.post(base + "/functions/v1/shipping-webhook", content=b"{}", headers={"x-api-key": "x"})
        _assert_429(ship, "source:127.0.0.2")

        # Another source is not limited by this one.
        with _client("127.0.0.3") as other:
            assert _post_rzp(other, base, _unrouted_payment()).status_code == 200

        time.sleep(retry_after)
        again = _post_rzp(client, base, _unrouted_payment())
        assert again.status_code == 200, again.text
    # Refused deliveries were not stored (the provider retries them); accepted ones were.
    assert _stored(limited["db"], refused_ids) == set()
    assert _stored(limited["db"], accepted_ids) == set(accepted_ids)


def test_the_tenant_limit_applies_per_tenant(limited):
    base, tenant_a, tenant_b = limited["url"], limited["tenant_a"], limited["tenant_b"]
    statuses: list[int] = []
    refused: list[httpx.Response] = []
    # Every request from its own source, so only the tenant bucket can refuse them. (Clients are made
    # first: making one takes longer than the bucket needs to refill a token.)
    clients = [_client(f"127.0.1.{i + 1}") for i in range(BURST + 8)]
    bodies = [_unrouted_payment() for _ in clients]
    b_clients = [_client(f"127.0.2.{i + 1}") for i in range(5)]
    b_bodies = [_unrouted_payment() for _ in range(len(b_clients) + 2)]
    started = time.monotonic()
    for client, body in zip(clients, bodies, strict=True):
        r = _post_rzp(client, base, body, tenant=tenant_a)
        statuses.append(r.status_code)
        if r.status_code == 429:
            refused.append(r)
        else:
            assert r.status_code == 200, r.text
    elapsed = time.monotonic() - started
    assert 429 in statuses, (statuses, elapsed)
    first_429 = statuses.index(429)
    assert BURST <= first_429 <= BURST + 1 + int(elapsed * RATE), (statuses, elapsed)
    retry_after = max(_assert_429(r, f"tenant:{tenant_a}") for r in refused)

    # Right after, while A's bucket is empty: tenant B is not limited by A's flood, from new sources or
    # from one that took part in it; A still is.
    for client in b_clients:
        r = _post_rzp(client, base, b_bodies.pop(), tenant=tenant_b)
        assert r.status_code == 200, r.text
    assert _post_rzp(clients[0], base, b_bodies.pop(), tenant=tenant_b).status_code == 200
    # A's bucket refills at RATE/s while B is served, so A may get a token or two back, not a burst.
    again = [_post_rzp(c, base, _unrouted_payment(), tenant=tenant_a) for c in clients[1:6]]
    assert any(r.status_code == 429 for r in again), [r.status_code for r in again]
    _assert_429(next(r for r in again if r.status_code == 429), f"tenant:{tenant_a}")
    for client in clients + b_clients:
        client.close()
    time.sleep(retry_after)
    with _client("127.0.3.1") as client:
        r = _post_rzp(client, base, _unrouted_payment(), tenant=tenant_a)
    assert r.status_code == 200, r.text


def test_create_refund_without_razorpay_credentials_is_a_clear_503(limited):
    r = httpx.post(limited["url"] + "/functions/v1/create-refund",
                   json={"order_id": str(uuid.uuid4()), "amount": 10},
                   headers={"authorization": "Bearer " + make_token(JWT_SECRET, limited["tenant_a"])}, timeout=10)
    assert r.status_code == 503, (r.status_code, r.text[:200])
    assert r.json()["error"]


# -- secrets ----------------------------------------------------------------------------------------------
def _secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(16)}"


def test_secrets_never_appear_in_logs_responses_metrics_or_tenant_visible_data(fresh_db, tmp_path):
    s = {
        # platform
        "RAZORPAY_WEBHOOK_SECRET": _secret("whsec_platform"),
        "SHIPROCKET_WEBHOOK_SECRET": _secret("srtok_platform"),
        "RAZORPAY_KEY_SECRET": _secret("rzpkey_platform"),
        "SHIPROCKET_PASSWORD": _secret("srpass_platform"),
        "STOREOPS_JWT_SECRET": _secret("jwt_platform"),
        # tenant A
        "a_razorpay_webhook": _secret("whsec_a"),
        "a_razorpay_api": _secret("rzpkey_a"),
        "a_shiprocket_webhook": _secret("srtok_a"),
        # tenant B (its webhook secret only; refunds use the platform key, which the fake refuses)
        "b_razorpay_webhook": _secret("whsec_b"),
    }
    fake_rzp = FakeRazorpay(key_id="rzp_test_tenant_a", key_secret=s["a_razorpay_api"]).start()
    fake_sr = FakeShiprocket(email="ops@store.test", password=s["SHIPROCKET_PASSWORD"]).start()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        a = str(c.execute("insert into storeops.tenants (name, razorpay_account_id) values ('Secret A', 'acc_SecretA01') "
                          "returning id").fetchone()[0])
        b = str(c.execute("insert into storeops.tenants (name) values ('Secret B') returning id").fetchone()[0])
        for tenant, kind, key_id, secret in ((a, "razorpay_webhook", None, s["a_razorpay_webhook"]),
                                             (a, "razorpay_api", "rzp_test_tenant_a", s["a_razorpay_api"]),
                                             (a, "shiprocket_webhook", None, s["a_shiprocket_webhook"]),
                                             (b, "razorpay_webhook", None, s["b_razorpay_webhook"])):
            c.execute("insert into storeops.tenant_secrets (tenant_id, kind, key_id, secret) values (%s, %s, %s, %s)",
                      (tenant, kind, key_id, secret))
        orders = {}
        for tenant in (a, b):
            rzp_order = razorpay_id("order")
            oid = str(c.execute("insert into storeops.orders (tenant_id, amount, razorpay_order_id) values (%s, 100000, %s)"
                                " returning id", (tenant, rzp_order)).fetchone()[0])
            orders[tenant] = (oid, rzp_order)
        c.execute("insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, 'AWBSECRET1')",
                  (a, orders[a][0]))
        domain_id = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'secret-a.example.in')"
                              " returning id", (a,)).fetchone()[0]

    runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log", env={
        "RAZORPAY_WEBHOOK_SECRET": s["RAZORPAY_WEBHOOK_SECRET"], "SHIPROCKET_WEBHOOK_SECRET": s["SHIPROCKET_WEBHOOK_SECRET"],
        "RAZORPAY_KEY_ID": "rzp_test_platform", "RAZORPAY_KEY_SECRET": s["RAZORPAY_KEY_SECRET"],
        "RAZORPAY_API_BASE": fake_rzp.url, "SHIPROCKET_API_BASE": fake_sr.url, "SHIPROCKET_EMAIL": "ops@store.test",
        "SHIPROCKET_PASSWORD": s["SHIPROCKET_PASSWORD"], "STOREOPS_JWT_SECRET": s["STOREOPS_JWT_SECRET"],
        "STOREOPS_POLL_INTERVAL": "0.2"}).start()
    responses: list[tuple[str, httpx.Response]] = []
    base = runner.base_url
    jwt_a = make_token(s["STOREOPS_JWT_SECRET"], a)
    jwt_b = make_token(s["STOREOPS_JWT_SECRET"], b)
    try:
        with httpx.Client(base_url=base, timeout=15) as client:
            def call(what: str, method: str, path: str, **kw) -> httpx.Response:
                r = client.request(method, path, **kw)
                responses.append((what, r))
                return r

            # Razorpay webhooks: good for A and B; A's signed with B's secret, with the platform secret,
            # with a garbage signature, unsigned.
            payments = {}
            for tenant, secret, account in ((a, s["a_razorpay_webhook"], "acc_SecretA01"),
                                            (b, s["b_razorpay_webhook"], "acc_Other0001")):
                pay = fake_rzp.add_payment(amount=100_000, order_id=orders[tenant][1], status="captured")
                payments[tenant] = pay["id"]
                body, headers = signed_webhook(webhook_event("payment.captured", payment=pay, account_id=account), secret)
                assert call(f"good webhook {tenant}", "POST", f"/functions/v1/razorpay-webhook/{tenant}",
                            content=body, headers=headers).status_code == 200
            body, headers = signed_webhook(webhook_event("payment.captured", account_id="acc_SecretA01", payment=payment_entity(
                amount=100_000, order_id=orders[a][1])), s["b_razorpay_webhook"])
            for what, sig in (("B's secret", headers["X-Razorpay-Signature"]),
                              ("platform secret", sign(body, s["RAZORPAY_WEBHOOK_SECRET"])),
                              ("garbage signature", "00" * 32)):
                assert call(what, "POST", f"/functions/v1/razorpay-webhook/{a}", content=body,
                            headers={**headers, "X-Razorpay-Signature": sig}).status_code == 401
            assert call("unsigned", "POST", f"/functions/v1/razorpay-webhook/{a}", content=body).status_code == 401
            assert call("wrong platform secret", "POST", "/functions/v1/razorpay-webhook", content=_unrouted_payment(),
                        headers={"x-razorpay-signature": sign(b"x", WEBHOOK_SECRET)}).status_code == 401

            # Shiprocket: A's token good; the platform token, a wrong token and a missing one refused for A.
            scan_body = orjson.dumps({"awb": "AWBSECRET1", "current_status": "IN TRANSIT", "shipment_status": "IN TRANSIT",
                                      "shipment_status_id": 18, "current_timestamp": "23 05 2023 11:43:52",
                                      "order_id": orders[a][0], "scans": []})
            assert call("good shiprocket", "POST", f"/functions/v1/shipping-webhook/{a}", content=scan_body,
                        headers={"x-api-key": s["a_shiprocket_webhook"]}).status_code == 200
            for what, token in (("platform token for A", s["SHIPROCKET_WEBHOOK_SECRET"]), ("wrong token", SHIPROCKET_TOKEN),
                                ("A's token, truncated", s["a_shiprocket_webhook"][:-1])):
                assert call(what, "POST", f"/functions/v1/shipping-webhook/{a}", content=scan_body,
                            headers={"x-api-key": token}).status_code == 401
            assert call("platform token, no tenant", "POST", "/functions/v1/shipping-webhook", content=scan_body,
                        headers={"x-api-key": s["SHIPROCKET_WEBHOOK_SECRET"]}).status_code in (200, 401)

            deadline = time.monotonic() + 10
            with psycopg.connect(fresh_db, autocommit=True) as c:
                while c.execute("select count(*) from storeops.orders where amount_paid > 0").fetchone()[0] < 2:
                    assert time.monotonic() < deadline, "payments not applied"
                    time.sleep(0.05)

            # Refunds: A's through A's own API key (made); B's through the platform key, which the fake
            # refuses (401 from Razorpay: refund failed, answered 502).
            r = call("refund A", "POST", "/functions/v1/create-refund", json={"order_id": orders[a][0], "amount": 100},
                     headers={"authorization": f"Bearer {jwt_a}"})
            assert r.status_code == 201, r.text
            assert len(fake_rzp.refunds_for(payments[a])) == 1
            r = call("refund B", "POST", "/functions/v1/create-refund", json={"order_id": orders[b][0], "amount": 100},
                     headers={"authorization": f"Bearer {jwt_b}"})
            assert r.status_code in (502, 202), r.text
            assert fake_rzp.refunds_for(payments[b]) == []

            # Failing JWTs: wrong signature, expired, none, malformed, for another tenant's order.
            forged = make_token(s["STOREOPS_JWT_SECRET"][::-1], a)
            expired = jwt.encode({"tenant_id": a, "exp": int(time.time()) - 600}, s["STOREOPS_JWT_SECRET"], algorithm="HS256")
            for what, header in (("forged JWT", f"Bearer {forged}"), ("expired JWT", f"Bearer {expired}"),
                                 ("no JWT", None), ("garbage JWT", "Bearer not.a.jwt"),
                                 ("alg none", "Bearer " + jwt.encode({"tenant_id": a, "exp": int(time.time()) + 60}, None,
                                                                      algorithm="none"))):
                r = call(what, "POST", "/functions/v1/create-refund", json={"order_id": orders[a][0], "amount": 1},
                         headers={"authorization": header} if header else {})
                assert r.status_code == 401, (what, r.text)
            assert call("B refunds A's order", "POST", "/functions/v1/create-refund",
                        json={"order_id": orders[a][0], "amount": 1},
                        headers={"authorization": f"Bearer {jwt_b}"}).status_code == 404

            # A domain check (DNS at a dead address: a failure, recorded) and the public endpoints.
            assert call("verify domain", "POST", "/functions/v1/verify-domain-dns",
                        json={"domain_id": str(domain_id), "domain": "secret-a.example.in"},
                        headers={"authorization": f"Bearer {jwt_a}"}).status_code == 200
            for path in ("/healthz", "/readyz", "/openapi.json", "/metrics", "/nope"):
                call(path, "GET", path)
            # The worker and the scheduler's first health checks (Shiprocket login included) have run.
            deadline = time.monotonic() + 15
            with psycopg.connect(fresh_db, autocommit=True) as c:
                while (c.execute("select count(distinct check_type) from storeops.system_health_checks").fetchone()[0] < 4
                       or c.execute("select count(*) from storeops.shipping_webhooks where not processed").fetchone()[0]):
                    assert time.monotonic() < deadline, "health checks or webhooks not done"
                    time.sleep(0.1)
            call("/metrics after the run", "GET", "/metrics")
    finally:
        runner.stop()
        fake_rzp.stop()
        fake_sr.stop()

    secret_values = dict(s)
    secret_values.update({f"shiprocket API token {n}": t for n, t in enumerate(fake_sr.tokens)})
    assert fake_sr.logins >= 1, "the Shiprocket health check never logged in"
    # Bearer credentials the clients sent are not to be echoed or logged either.
    credentials = {"jwt_a": jwt_a, "jwt_b": jwt_b, "forged jwt": forged}

    def leaks(text: str) -> list[str]:
        # The whole value, or either half of its random part (a truncated or partly masked leak).
        found = [name for name, value in secret_values.items()
                 if value in text or value[-32:-16] in text or value[-16:] in text]
        return found + [name for name, value in credentials.items() if value in text]

    log = runner.output()
    assert "webhook rejected" in log and "webhooks stored" in log, "the log is not the one of this run"
    assert leaks(log) == [], leaks(log)
    for what, r in responses:
        body = r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        assert leaks(body) == [], (what, leaks(body))
    assert any(what.startswith("/metrics") and "storeops_" in r.text for what, r in responses)

    # Everything a tenant role can select, as each tenant (by setting and by JWT claims).
    for tenant, via in ((a, "setting"), (b, "jwt")):
        text, seen, errors = _visible_text(fresh_db, "storeops_tenant", tenant, via)
        assert errors == [], errors[:5]
        assert orders[tenant][0] in text, "the scan did not see the tenant's own rows"
        assert orders[a if tenant == b else b][0] not in text, "the scan saw another tenant's rows"
        assert "storeops.tenant_secrets" not in seen
        assert leaks(text) == [], (tenant, leaks(text))
    # The scan does find secrets where they are visible: the runner role reads tenant_secrets.
    text, seen, _errors = _visible_text(fresh_db, "storeops_runner", a, "setting")
    assert "storeops.tenant_secrets" in seen
    assert {"a_razorpay_webhook", "a_razorpay_api", "a_shiprocket_webhook", "b_razorpay_webhook"} <= set(leaks(text))


def _visible_text(db: str, role: str, tenant: str, via: str) -> tuple[str, set[str], list[str]]:
    """All rows of every relation `role` may SELECT, as text, acting as `tenant` (set through the
    storeops.tenant_id setting or request.jwt.claims)."""
    chunks: list[str] = []
    seen: set[str] = set()
    errors: list[str] = []
    with psycopg.connect(db, autocommit=True) as c:
        # Statistics (pg_stats) hold column values too: make sure the secrets table has some.
        c.execute("analyze storeops.tenant_secrets")
        assert not c.execute("select has_function_privilege('storeops_tenant', "
                             "'storeops.get_tenant_secrets(uuid, text, timestamptz)', 'execute')").fetchone()[0]
    with psycopg.connect(db) as c:
        c.execute(f"set role {role}")
        if via == "jwt":
            c.execute("select set_config('request.jwt.claims', %s, false)", (orjson.dumps({"tenant_id": tenant}).decode(),))
        else:
            c.execute("select set_config('storeops.tenant_id', %s, false)", (tenant,))
        relations = c.execute("""
            select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where c.relkind in ('r', 'v', 'm', 'p', 'f') and has_table_privilege(c.oid, 'select')
              -- information_schema only re-presents pg_catalog (scanned), and slowly
              and n.nspname <> 'information_schema'
            order by 1, 2""").fetchall()
        assert any(schema == "storeops" for schema, _ in relations)
        for schema, name in relations:
            qualified = f"{schema}.{name}"
            seen.add(qualified)
            try:
                with c.transaction():
                    row = c.execute(f'select coalesce(string_agg(t::text, E\'\\n\'), \'\') from "{schema}"."{name}" t'  # noqa: S608
                                    ).fetchone()
                chunks.append(f"## {qualified}\n{row[0]}")
            except psycopg.Error as exc:
                if schema in ("storeops", "storeops_private"):
                    errors.append(f"{qualified}: {exc}")
        c.rollback()
    return "\n".join(chunks), seen, errors
