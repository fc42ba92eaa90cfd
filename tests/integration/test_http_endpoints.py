"""The HTTP endpoints of a real `storeops serve`: webhook authentication and tenancy, bad input,
dedup, and the admin endpoints' JWT checks, against a fake Razorpay server."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import psycopg
import pytest
from fakes.razorpay_server import FakeRazorpay, payment_entity, razorpay_id, signed_webhook, webhook_event
from runner_proc import JWT_SECRET, SHIPROCKET_TOKEN, WEBHOOK_SECRET, RunnerProcess

from runner.auth import make_token

SECRET_A, SECRET_B = "whsec_tenant_a", "whsec_tenant_b"
SECRET_C_OLD, SECRET_C_NEW = "whsec_c_old", "whsec_c_new"
ACCOUNT_A = "acc_TenantA0001"


@pytest.fixture(scope="module")
def fake_rzp():
    with FakeRazorpay() as fake:
        yield fake


@pytest.fixture(scope="module")
def live(module_db, fake_rzp, tmp_path_factory):
    with psycopg.connect(module_db, autocommit=True) as c:
        ids = {}
        for name, account in (("a", ACCOUNT_A), ("b", None), ("c", None), ("p", None)):
            ids[name] = c.execute("insert into storeops.tenants (name, razorpay_account_id) values (%s, %s) returning id",
                                  (f"Tenant {name}", account)).fetchone()[0]
        for tenant, secret in (("a", SECRET_A), ("b", SECRET_B), ("c", SECRET_C_OLD), ("c", SECRET_C_NEW)):
            c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'razorpay_webhook', %s)",
                      (ids[tenant], secret))
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'shiprocket_webhook', 'sr-a')",
                  (ids["a"],))
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    runner = RunnerProcess(module_db, log_path=log, env={
        "RAZORPAY_API_BASE": fake_rzp.url, "RAZORPAY_KEY_ID": fake_rzp.key_id,
        "RAZORPAY_KEY_SECRET": fake_rzp.key_secret, "STOREOPS_MAX_BODY_BYTES": "65536"}).start()
    yield {"url": runner.base_url, "db": module_db, "runner": runner, **{f"tenant_{k}": str(v) for k, v in ids.items()}}
    runner.stop()


def _order(db: str, tenant: str, amount: int = 100_000) -> tuple[str, str]:
    rzp_order = razorpay_id("order")
    with psycopg.connect(db, autocommit=True) as c:
        oid = c.execute("insert into storeops.orders (tenant_id, amount, razorpay_order_id) values (%s, %s, %s) returning id",
                        (tenant, amount, rzp_order)).fetchone()[0]
    return str(oid), rzp_order


def _captured(rzp_order: str, amount: int = 100_000, account: str = ACCOUNT_A, payment_id: str | None = None) -> dict:
    return webhook_event("payment.captured", account_id=account,
                         payment=payment_entity(payment_id, amount=amount, order_id=rzp_order, status="captured"))


def _wait_status(db: str, order_id: str, want: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    status = None
    with psycopg.connect(db, autocommit=True) as c:
        while time.monotonic() < deadline:
            status = c.execute("select status from storeops.orders where id = %s", (order_id,)).fetchone()[0]
            if status == want:
                break
            time.sleep(0.05)
    return status


def _count(db: str, sql: str, *args) -> int:
    with psycopg.connect(db, autocommit=True) as c:
        return c.execute(sql, args).fetchone()[0]


def test_signed_capture_is_stored_applied_and_deduplicated(live):
    order, rzp_order = _order(live["db"], live["tenant_a"])
    body, headers = signed_webhook(_captured(rzp_order), SECRET_A)
    url = f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_a']}"
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 200 and first.json()["status"] == "ok"
    assert first.headers["x-request-id"]
    assert _wait_status(live["db"], order, "paid") == "paid"
    again = httpx.post(url, content=body, headers=headers)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert _count(live["db"], "select count(*) from storeops.payment_webhooks where event_id = %s",
                  headers["X-Razorpay-Event-Id"]) == 1
    # Without the event id header, the body hash is the key: a redelivery is still one row.
    del headers["X-Razorpay-Event-Id"]
    for _ in range(2):
        assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert _count(live["db"], "select count(*) from storeops.payment_webhooks where event_id like 'sha256:%%' "
                  "and payload->'payload'->'payment'->'entity'->>'order_id' = %s", rzp_order) == 1


def test_tampered_body_is_refused_and_nothing_is_applied(live):
    order, rzp_order = _order(live["db"], live["tenant_a"])
    body, headers = signed_webhook(_captured(rzp_order), SECRET_A)
    tampered = body.replace(b'"amount":100000', b'"amount":1')
    assert tampered != body
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_a']}", content=tampered, headers=headers)
    assert r.status_code == 401
    assert "signature" in r.json()["error"].lower()
    time.sleep(0.3)
    assert _count(live["db"], "select count(*) from storeops.payment_webhooks where event_id = %s",
                  headers["X-Razorpay-Event-Id"]) == 0
    assert _wait_status(live["db"], order, "paid", timeout=0.5) == "pending"
    assert "webhook rejected" in live["runner"].output()


def test_another_tenants_valid_signature_is_refused(live):
    _order_id, rzp_order = _order(live["db"], live["tenant_a"])
    body, headers = signed_webhook(_captured(rzp_order), SECRET_B)  # valid, but B's secret
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_a']}", content=body, headers=headers)
    assert r.status_code == 401
    # Nor does the platform secret stand in for a tenant that has its own.
    body, headers = signed_webhook(_captured(rzp_order), WEBHOOK_SECRET)
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook", content=body, headers=headers)
    assert r.status_code == 401


def test_tenant_resolved_from_the_order_id_without_a_url_tenant(live):
    order, rzp_order = _order(live["db"], live["tenant_a"])
    body, headers = signed_webhook(_captured(rzp_order), SECRET_A)
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook", content=body, headers=headers)
    assert r.status_code == 200
    assert _wait_status(live["db"], order, "paid") == "paid"
    assert _count(live["db"], "select count(*) from storeops.payment_webhooks where event_id = %s and tenant_id = %s",
                  headers["X-Razorpay-Event-Id"], live["tenant_a"]) == 1


def test_both_secrets_work_during_a_rotation(live):
    url = f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_c']}"
    for secret in (SECRET_C_OLD, SECRET_C_NEW):
        _o, rzp_order = _order(live["db"], live["tenant_c"])
        body, headers = signed_webhook(_captured(rzp_order, account="acc_Other"), secret)
        assert httpx.post(url, content=body, headers=headers).status_code == 200
    body, headers = signed_webhook(_captured(rzp_order), SECRET_A)
    assert httpx.post(url, content=body, headers=headers).status_code == 401


def test_account_id_must_match_the_tenant(live):
    _o, rzp_order = _order(live["db"], live["tenant_a"])
    body, headers = signed_webhook(_captured(rzp_order, account="acc_SomeoneElse"), SECRET_A)
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_a']}", content=body, headers=headers)
    assert r.status_code == 401 and "account_id" in r.json()["error"]


@pytest.mark.parametrize(("path_tenant", "status"), [(str(uuid.uuid4()), 404), ("not-a-uuid", 404)])
def test_unknown_tenant_is_404(live, path_tenant, status):
    body, headers = signed_webhook(_captured("order_X"), WEBHOOK_SECRET)
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{path_tenant}", content=body, headers=headers)
    assert r.status_code == status and "tenant" in r.json()["error"]


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"payload": {}}', 400, "event"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b'{"event": "payment.captured", "x": "\\u0000"}', 400, "NUL"),
    (b'{"event": "x", "pad": "' + b"a" * 70_000 + b'"}', 413, "limit"),
])
def test_bad_bodies_get_a_clear_4xx(live, body, status, words):
    headers = {"content-type": "application/json", "x-razorpay-signature": "0" * 64}
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_p']}", content=body, headers=headers)
    assert r.status_code == status
    assert words in r.json()["error"]


def test_missing_signature_is_401(live):
    r = httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live['tenant_a']}", content=b'{"event":"x"}')
    assert r.status_code == 401 and "X-Razorpay-Signature" in r.json()["error"]


def test_shiprocket_token_checked_and_success_is_exactly_200(live):
    event = {"awb": "AWB-HTTP-1", "current_status": "IN TRANSIT", "shipment_status": "IN TRANSIT",
             "shipment_status_id": 18, "current_timestamp": "23 05 2023 11:43:52", "order_id": "x", "scans": []}
    body = json.dumps(event).encode()
    for path in ("shipping-webhook", "shiprocket-webhook"):
        url = f"{live['url']}/functions/v1/{path}/{live['tenant_a']}"
        bad = httpx.post(url, content=body, headers={"x-api-key": SHIPROCKET_TOKEN})  # platform token; A has its own
        assert bad.status_code == 401
        assert httpx.post(url, content=body).status_code == 401
    assert _count(live["db"], "select count(*) from storeops.shipping_webhooks where payload->>'awb' = 'AWB-HTTP-1'") == 0
    ok = httpx.post(f"{live['url']}/functions/v1/shipping-webhook/{live['tenant_a']}", content=body,
                    headers={"x-api-key": "sr-a"})
    assert ok.status_code == 200
    assert _count(live["db"], "select count(*) from storeops.shipping_webhooks where payload->>'awb' = 'AWB-HTTP-1'") == 1



def test_shiprocket_on_the_shared_url_checks_the_token_of_the_order_it_names(live):
    """A's first events for a shipment not recorded yet name A's order only by our uuid (order_id;
    sr_order_id is Shiprocket's own): intake finds A by it, as processing would, and checks A's token."""
    order, _ = _order(live["db"], live["tenant_a"])
    event = {"awb": "AWB-HTTP-2", "current_status": "IN TRANSIT", "shipment_status": "IN TRANSIT",
             "shipment_status_id": 18, "current_timestamp": "23 05 2023 11:43:52", "sr_order_id": 99887766,
             "order_id": order, "scans": []}
    body = json.dumps(event).encode()
    url = f"{live['url']}/functions/v1/shipping-webhook"
    # The platform token, which every store without its own knows, does not speak for A.
    assert httpx.post(url, content=body, headers={"x-api-key": SHIPROCKET_TOKEN}).status_code == 401
    assert _count(live["db"], "select count(*) from storeops.shipping_webhooks where payload->>'awb' = 'AWB-HTTP-2'") == 0
    assert httpx.post(url, content=body, headers={"x-api-key": "sr-a"}).status_code == 200
    assert _count(live["db"], "select count(*) from storeops.shipping_webhooks where payload->>'awb' = 'AWB-HTTP-2' "
                  "and tenant_id = %s", live["tenant_a"]) == 1

# -- admin endpoints ------------------------------------------------------------------------------------
def _paid_order(live, fake_rzp, tenant_key: str = "tenant_a", amount: int = 100_000) -> tuple[str, str]:
    order, rzp_order = _order(live["db"], live[tenant_key], amount)
    payment = fake_rzp.add_payment(amount=amount, order_id=rzp_order, status="captured")
    account = ACCOUNT_A if tenant_key == "tenant_a" else "acc_Other"
    body, headers = signed_webhook(_captured(rzp_order, amount, account=account, payment_id=payment["id"]),
                                   SECRET_A if tenant_key == "tenant_a" else SECRET_B)
    assert httpx.post(f"{live['url']}/functions/v1/razorpay-webhook/{live[tenant_key]}", content=body,
                      headers=headers).status_code == 200
    assert _wait_status(live["db"], order, "paid") == "paid"
    return order, payment["id"]


def _auth(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_create_refund_needs_a_valid_jwt_for_the_orders_tenant(live, fake_rzp):
    order, payment_id = _paid_order(live, fake_rzp)
    url = f"{live['url']}/functions/v1/create-refund"
    body = {"order_id": order, "amount": 100.50, "reason": "Customer requested"}
    assert httpx.post(url, json=body).status_code == 401
    expired = jwt.encode({"tenant_id": live["tenant_a"], "exp": int(time.time()) - 60}, JWT_SECRET, algorithm="HS256")
    r = httpx.post(url, json=body, headers=_auth(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    forged = make_token("not-the-secret-but-just-as-long-as-the-real-one", live["tenant_a"])
    assert httpx.post(url, json=body, headers=_auth(forged)).status_code == 401
    other = httpx.post(url, json=body, headers=_auth(make_token(JWT_SECRET, live["tenant_b"])))
    assert other.status_code == 404  # B cannot see, let alone refund, A's order
    assert fake_rzp.refunds_for(payment_id) == []

    ok = httpx.post(url, json=body, headers=_auth(make_token(JWT_SECRET, live["tenant_a"])))
    assert ok.status_code == 201, ok.text
    refund = ok.json()
    assert refund["amount"] == 10_050 and refund["razorpay_refund_id"].startswith("rfnd_")
    assert [r["amount"] for r in fake_rzp.refunds_for(payment_id)] == [10_050]


@pytest.mark.parametrize(("amount", "status"), [(0, 400), (-5, 400), ("abc", 400), (10.001, 400), (2000.00, 422)])
def test_create_refund_rejects_bad_amounts(live, fake_rzp, amount, status):
    order, payment_id = _paid_order(live, fake_rzp)
    r = httpx.post(f"{live['url']}/functions/v1/create-refund", json={"order_id": order, "amount": amount},
                   headers=_auth(make_token(JWT_SECRET, live["tenant_a"])))
    assert r.status_code == status, r.text
    assert r.json()["error"]
    assert fake_rzp.refunds_for(payment_id) == []


def test_create_refund_bad_bodies(live):
    token = _auth(make_token(JWT_SECRET, live["tenant_a"]))
    url = f"{live['url']}/functions/v1/create-refund"
    assert httpx.post(url, content=b"nope", headers=token).status_code == 400
    assert httpx.post(url, json={"amount": 10}, headers=token).status_code == 400
    assert httpx.post(url, json={"order_id": "x", "amount": 10}, headers=token).status_code == 400
    r = httpx.post(url, json={"order_id": str(uuid.uuid4()), "amount": 10}, headers=token)
    assert r.status_code == 404


def test_verify_domain_of_another_tenant_is_404(live):
    with psycopg.connect(live["db"], autocommit=True) as c:
        domain_id = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'b-shop.example.in') "
                              "returning id", (live["tenant_b"],)).fetchone()[0]
    url = f"{live['url']}/functions/v1/verify-domain-dns"
    body = {"domain": "b-shop.example.in", "domain_id": str(domain_id)}
    assert httpx.post(url, json=body).status_code == 401
    r = httpx.post(url, json=body, headers=_auth(make_token(JWT_SECRET, live["tenant_a"])))
    assert r.status_code == 404
    assert _count(live["db"], "select count(*) from storeops.domain_verification_logs where domain_id = %s", domain_id) == 0
    bad = httpx.post(url, json={"domain": "not a domain!", "domain_id": str(domain_id)},
                     headers=_auth(make_token(JWT_SECRET, live["tenant_b"])))
    assert bad.status_code == 400


@pytest.mark.parametrize("raw", [b"1e900000", b"1e999999999", b"1e-900000"])
def test_absurd_refund_amounts_are_refused_at_once(live, fake_rzp, raw):
    order, _payment_id = _paid_order(live, fake_rzp)
    body = b'{"order_id": "' + order.encode() + b'", "amount": ' + raw + b"}"
    started = time.monotonic()
    r = httpx.post(f"{live['url']}/functions/v1/create-refund", content=body,
                   headers={**_auth(make_token(JWT_SECRET, live["tenant_a"])), "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert time.monotonic() - started < 2
