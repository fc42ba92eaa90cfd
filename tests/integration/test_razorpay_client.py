"""runner.razorpay against the fake Razorpay server on loopback: signatures, exact amounts, refunds
with idempotency keys through 5xx, timeouts, 429 and malformed answers, and payment listing."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import fakes.razorpay_server as fake_razorpay
import pytest
from fakes.razorpay_server import FakeRazorpay, signed_webhook, webhook_event

from runner.razorpay import (
    RazorpayClient,
    RazorpayError,
    amount_to_paise,
    paise_to_amount,
    sign,
    verify_signature,
)

razorpay_server = fake_razorpay.razorpay_server  # fixture


def client_for(server: FakeRazorpay, **kw) -> RazorpayClient:
    kw.setdefault("timeout", 0.5)
    kw.setdefault("backoff", 0.01)
    return RazorpayClient(server.url, server.key_id, server.key_secret, **kw)


# -- signatures ---------------------------------------------------------------------------------------------

def test_sign_matches_razorpays_published_vector():
    # razorpay-python tests/test_client_utility.py: key_secret over "fake_order_id|fake_payment_id".
    assert sign(b"fake_order_id|fake_payment_id", "key_secret") == (
        "b2335e3b0801106b84a7faff035df56ecffde06918c9ddd1f0fafbb37a51cc89")


def test_verify_signature_on_raw_bytes_with_rotating_secrets():
    body, headers = signed_webhook(webhook_event("payment.captured", payment={"id": "pay_X"}), "whsec_new_0001")
    signature = headers["X-Razorpay-Signature"]
    assert verify_signature(body, signature, ["whsec_new_0001"])
    assert verify_signature(body, signature, ["whsec_old_0001", "whsec_new_0001"])  # during a rotation
    assert verify_signature(body, signature.upper(), ["whsec_new_0001"])
    assert not verify_signature(body, signature, ["whsec_old_0001"])
    assert not verify_signature(body, signature, [])
    assert not verify_signature(body, "", ["whsec_new_0001"])
    assert not verify_signature(body, "ü" * 64, ["whsec_new_0001"])
    # One changed byte, or the same JSON re-serialised, is a different body.
    tampered = body.replace(b'"pay_X"', b'"pay_Y"')
    assert not verify_signature(tampered, signature, ["whsec_new_0001"])
    reserialised = json.dumps(json.loads(body)).encode()
    assert reserialised != body and not verify_signature(reserialised, signature, ["whsec_new_0001"])


# -- amounts ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "paise"), [
    ("1000.00", 100_000), ("1000", 100_000), (1000, 100_000), (Decimal("1000.00"), 100_000),
    (Decimal("0.01"), 1), ("10.5", 1_050), (1000.5, 100_050), ("1000.500", 100_050), (" 99.99 ", 9_999),
    (json.loads('{"amount": 1000.10}', parse_float=Decimal)["amount"], 100_010),
])
def test_amount_to_paise_is_exact(value, paise):
    assert amount_to_paise(value) == paise
    assert isinstance(amount_to_paise(value), int)


@pytest.mark.parametrize("value", [
    "10.005", Decimal("0.001"), 0, "0.00", -5, "-1", "abc", "", "NaN", "Infinity", True, None, 0.1, [1],
])
def test_amount_to_paise_rejects(value):
    with pytest.raises(ValueError):
        amount_to_paise(value)


def test_paise_to_amount():
    assert paise_to_amount(100_010) == Decimal("1000.10")


# -- refunds ------------------------------------------------------------------------------------------------

async def test_create_refund_sends_paise_key_and_basic_auth(razorpay_server):
    payment = razorpay_server.add_payment(amount=50_000)
    async with client_for(razorpay_server) as client:
        refund = await client.create_refund(payment["id"], 20_000, "order-42-refund-1", notes={"reason": "size"})
    assert refund["id"].startswith("rfnd_") and refund["amount"] == 20_000 and refund["payment_id"] == payment["id"]
    [sent] = razorpay_server.requests_to("POST", "/refund")
    assert sent.path == f"/v1/payments/{payment['id']}/refund"
    assert json.loads(sent.body) == {"amount": 20_000, "notes": {"reason": "size"}}
    assert sent.headers["X-Refund-Idempotency"] == "order-42-refund-1"
    assert sent.headers["Authorization"].startswith("Basic ")


async def test_wrong_api_key_is_not_retried(razorpay_server):
    payment = razorpay_server.add_payment()
    async with RazorpayClient(razorpay_server.url, razorpay_server.key_id, "wrong", backoff=0.01) as client:
        with pytest.raises(RazorpayError) as info:
            await client.create_refund(payment["id"], 100, "order-42-refund-1")
    assert (info.value.status, info.value.retryable) == (401, False)
    assert len(razorpay_server.requests) == 1
    assert razorpay_server.refunds == []


@pytest.mark.parametrize("fault", ["5xx_before", "5xx_after", "timeout_after", "429", "malformed_after"])
async def test_a_transient_failure_is_retried_and_makes_exactly_one_refund(razorpay_server, fault):
    payment = razorpay_server.add_payment(amount=50_000)
    if fault == "5xx_before":
        razorpay_server.fail_next(2, 503)
    elif fault == "5xx_after":
        razorpay_server.fail_next(1, 500, after_processing=True)
    elif fault == "timeout_after":
        razorpay_server.delay_next(1, seconds=0.8)  # Razorpay made it, the answer came too late
    elif fault == "429":
        razorpay_server.rate_limit_next(1, retry_after=0.3)
    else:
        razorpay_server.malformed_next(1)
    started = time.monotonic()
    async with client_for(razorpay_server, retries=3) as client:
        refund = await client.create_refund(payment["id"], 20_000, "order-42-refund-1")
    assert len(razorpay_server.requests_to("POST", "/refund")) >= 2
    assert [r["id"] for r in razorpay_server.refunds] == [refund["id"]]
    assert razorpay_server.payments[payment["id"]]["amount_refunded"] == 20_000
    if fault == "429":
        assert time.monotonic() - started >= 0.3  # Retry-After honoured


# A retry after a timeout may find the first request still in flight: Razorpay answers 409 then.
@pytest.mark.parametrize(("fault", "statuses"), [("5xx", {502}), ("timeout", {None, 409}), ("429", {429}),
                                                 ("malformed", {200})])
async def test_when_retries_run_out_the_error_says_retryable(razorpay_server, fault, statuses):
    payment = razorpay_server.add_payment()
    if fault == "5xx":
        razorpay_server.fail_next(5, 502)
    elif fault == "timeout":
        razorpay_server.delay_next(5, seconds=0.6, after_processing=False)
    elif fault == "429":
        razorpay_server.rate_limit_next(5, retry_after=0.05)
    else:
        razorpay_server.malformed_next(5, after_processing=False)
    async with client_for(razorpay_server, retries=1) as client:
        with pytest.raises(RazorpayError) as info:
            await client.create_refund(payment["id"], 100, "order-42-refund-1")
    assert info.value.retryable and info.value.status in statuses
    if fault == "429":
        assert info.value.retry_after == pytest.approx(0.05)


async def test_a_long_retry_after_is_handed_to_the_caller(razorpay_server):
    payment = razorpay_server.add_payment()
    razorpay_server.rate_limit_next(1, retry_after=120)
    async with client_for(razorpay_server) as client:
        with pytest.raises(RazorpayError) as info:
            await client.create_refund(payment["id"], 100, "order-42-refund-1")
    assert (info.value.retryable, info.value.retry_after) == (True, 120)
    assert len(razorpay_server.requests) == 1


async def test_a_refusal_is_not_retried(razorpay_server):
    payment = razorpay_server.add_payment(amount=10_000)
    async with client_for(razorpay_server) as client:
        with pytest.raises(RazorpayError) as info:
            await client.create_refund(payment["id"], 10_001, "order-42-refund-1")
    assert (info.value.status, info.value.retryable, info.value.code) == (400, False, "BAD_REQUEST_ERROR")
    assert "greater than amount captured" in str(info.value)
    assert len(razorpay_server.requests) == 1


async def test_the_same_key_never_makes_a_second_refund(razorpay_server):
    payment = razorpay_server.add_payment(amount=50_000)
    async with client_for(razorpay_server) as client:
        first = await client.create_refund(payment["id"], 20_000, "order-42-refund-1")
        again = await client.create_refund(payment["id"], 20_000, "order-42-refund-1")
        with pytest.raises(RazorpayError) as info:  # a different body under a used key
            await client.create_refund(payment["id"], 30_000, "order-42-refund-1")
    assert first["id"] == again["id"]
    assert len(razorpay_server.refunds) == 1
    assert info.value.status == 400 and not info.value.retryable


async def test_create_refund_validates_before_sending(razorpay_server):
    async with client_for(razorpay_server) as client:
        for args in (("pay_X1", 0, "order-42-refund-1"), ("pay_X1", 10.5, "order-42-refund-1"),
                     ("pay_X1", 100, "short"), ("../admin", 100, "order-42-refund-1")):
            with pytest.raises(ValueError):
                await client.create_refund(*args)
    assert razorpay_server.requests == []


async def test_connection_refused_is_retryable():
    client = RazorpayClient("http://127.0.0.1:9", "rzp_test_x", "secret", retries=0)
    async with client:
        with pytest.raises(RazorpayError) as info:
            await client.fetch_payment("pay_AAAAAAAAAAAAAA")
    assert info.value.retryable and info.value.status is None


# -- payments -----------------------------------------------------------------------------------------------

async def test_list_payments_pages_through_everything_in_the_window(razorpay_server):
    base = 1_735_700_000
    ids = {razorpay_server.add_payment(created_at=base + n)["id"] for n in range(250)}
    razorpay_server.add_payment(created_at=base - 10)  # outside the window
    async with client_for(razorpay_server) as client:
        seen = [p["id"] async for p in client.list_payments(base, base + 1000)]
    assert len(seen) == 250 and set(seen) == ids
    pages = razorpay_server.requests_to("GET", "/v1/payments")
    assert [(r.query["count"], r.query["skip"]) for r in pages] == [
        (["100"], ["0"]), (["100"], ["100"]), (["100"], ["200"])]


async def test_list_payments_retries_a_failed_page(razorpay_server):
    base = 1_735_700_000
    for n in range(150):
        razorpay_server.add_payment(created_at=base + n)
    razorpay_server.fail_next(1, 500, path="/v1/payments")
    async with client_for(razorpay_server) as client:
        seen = [p["id"] async for p in client.list_payments(base, base + 1000, count=500)]
    assert len(set(seen)) == 150


async def test_fetch_payment_and_ping(razorpay_server):
    payment = razorpay_server.add_payment(amount=12_345)
    async with client_for(razorpay_server) as client:
        assert (await client.fetch_payment(payment["id"]))["amount"] == 12_345
        with pytest.raises(RazorpayError) as info:
            await client.fetch_payment("pay_DoesNotExist00")
        assert info.value.status == 400 and not info.value.retryable
        await client.ping()
    async with RazorpayClient(razorpay_server.url, "rzp_test_x", "bad") as client:
        with pytest.raises(RazorpayError):
            await client.ping()


def test_missing_credentials_are_a_clear_error():
    with pytest.raises(ValueError, match="RAZORPAY_KEY_ID"):
        RazorpayClient("https://api.razorpay.com", "", "")
