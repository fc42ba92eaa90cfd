"""runner.shiprocket against the fake Shiprocket API on loopback, plus its pure helpers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes.shiprocket_server import NO_DATA_MESSAGE, scan, shiprocket_server, tracking_data, webhook_payload  # noqa: F401

from runner.shiprocket import (
    TRACK_AWBS_PATH,
    ShiprocketClient,
    ShiprocketError,
    event_key,
    poll_result_to_event,
    verify_token,
    webhook_type,
)

T0 = datetime(2024, 2, 1, 10, 0, tzinfo=UTC)


def _client(server, **kw) -> ShiprocketClient:
    return ShiprocketClient(server.url, kw.pop("email", server.email), kw.pop("password", server.password), **kw)


def test_verify_token_accepts_any_active_token_and_nothing_else():
    assert verify_token("tok-new", ["tok-old", "tok-new"])
    assert not verify_token("tok-ne", ["tok-old", "tok-new"])
    assert not verify_token(None, ["tok"])
    assert not verify_token("", [""])
    assert not verify_token("tok", [])


def test_event_key_identifies_one_tracking_event():
    a = webhook_payload("19041424751540", 18, T0)
    assert event_key(a) == f"19041424751540|18|{a['current_timestamp']}"
    # A redelivery (other fields changed) is the same event; a new status or time is not.
    assert event_key({**a, "scans": []}) == event_key(a)
    assert event_key({**a, "shipment_status_id": 17}) != event_key(a)
    assert event_key({**a, "awb": 19041424751540}) == event_key(a)
    # Without the identifying fields, distinct bodies never collide.
    assert event_key({"foo": 1}) != event_key({"foo": 2})


def test_webhook_type_is_the_normalised_status():
    assert webhook_type({"current_status": "OUT FOR DELIVERY"}) == "out_for_delivery"
    assert webhook_type({"shipment_status": "RTO_NDR", "current_status": "x"}) == "rto_ndr"
    assert webhook_type({}) == "unknown"


def test_poll_result_with_no_data_is_not_an_event():
    assert poll_result_to_event("A1", {"tracking_data": {"track_status": 0, "error": NO_DATA_MESSAGE}}) is None
    data = tracking_data("A1", 7, [scan(17, T0), scan(7, T0.replace(hour=12))], delivered_at=T0.replace(hour=12))
    event = poll_result_to_event("A1", {"tracking_data": data})
    assert event["shipment_status_id"] == 7 and event["current_timestamp"] == "2024-02-01 17:30:00"
    assert len(event["scans"]) == 2


async def test_token_is_cached_and_refreshed_after_a_401(shiprocket_server):  # noqa: F811
    shiprocket_server.set_tracking("A1", tracking_data("A1", 18, [scan(18, T0)]))
    async with _client(shiprocket_server) as client:
        first = await client.track_awbs(["A1"])
        await client.track_awbs(["A1"])
        await client.ping()
        assert shiprocket_server.logins == 1
        assert first["A1"]["tracking_data"]["shipment_status"] == 18

        shiprocket_server.revoke_tokens()  # expired or revoked on Shiprocket's side
        again = await client.track_awbs(["A1"])
        assert again == first
        assert shiprocket_server.logins == 2


async def test_track_status_zero_is_returned_not_raised(shiprocket_server):  # noqa: F811
    async with _client(shiprocket_server) as client:
        result = await client.track_awbs(["NOT-YET"])
    assert result["NOT-YET"]["tracking_data"]["track_status"] == 0


async def test_awbs_are_sent_in_batches_of_50(shiprocket_server):  # noqa: F811
    awbs = [f"B{i:04d}" for i in range(120)]
    async with _client(shiprocket_server) as client:
        result = await client.track_awbs(awbs + awbs[:5])
    batches = shiprocket_server.calls(TRACK_AWBS_PATH)
    assert [len(b["awbs"]) for b in batches] == [50, 50, 20]
    assert set(result) == set(awbs)


async def test_errors_say_whether_to_retry(shiprocket_server):  # noqa: F811
    async with _client(shiprocket_server, password="wrong") as client:
        with pytest.raises(ShiprocketError) as bad_login:
            await client.track_awbs(["A1"])
    assert bad_login.value.status == 400 and not bad_login.value.retryable
    assert "SHIPROCKET_PASSWORD" in bad_login.value.message and "api-user@store.test" in bad_login.value.message

    async with _client(shiprocket_server) as client:
        shiprocket_server.fail_next(429, {"message": "You have exceeded the API call rate limit."},
                                    {"Retry-After": "30"})
        with pytest.raises(ShiprocketError) as limited:
            await client.track_awbs(["A1"])
        assert (limited.value.status, limited.value.retryable, limited.value.retry_after) == (429, True, 30.0)
        assert "rate limit" in str(limited.value)

        shiprocket_server.fail_next(502)
        with pytest.raises(ShiprocketError) as down:
            await client.ping()
        assert down.value.retryable

    url = shiprocket_server.url
    shiprocket_server.stop()
    async with ShiprocketClient(url, "e", "p", timeout=2.0) as client:
        with pytest.raises(ShiprocketError) as unreachable:
            await client.ping()
    assert unreachable.value.retryable and unreachable.value.status is None
