"""Property: out-of-order and duplicated events of one shipment end in the same state.

Whatever order Shiprocket delivers a shipment's events in, and however often it repeats them,
the shipment's status, the order's status and the tracking history equal those of applying the
events once in time order.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from _shipping_helpers import (
    apply_event,
    history,
    make_shipment,
    order_status,
    set_order_status,
    shipment_state,
)
from fakes.shiprocket_server import scan, webhook_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import make_order, make_tenant

FORWARD = [5, 42, 6, 18, 38, 17, 7]
RTO = [5, 42, 6, 18, 17, 21, 9, 46, 10]
CANCELLED = [5, 8]
T0 = datetime(2024, 1, 15, 4, 30, tzinfo=UTC)
_awbs = itertools.count(1)


def _events(path: list[int], is_return: bool, unknown_at: int | None, formats: list[str]) -> list[dict]:
    """Webhooks as Shiprocket sends them: each carries every scan so far."""
    scans: list[dict] = []
    events = []
    awb = "PLACEHOLDER"
    for i, code in enumerate(path):
        at = T0 + timedelta(hours=3 * i)
        scans.append(scan(code, at, location=f"Hub {i}"))
        if i % 3 == 1:
            scans.append(scan(None, at + timedelta(minutes=20), location=f"Hub {i}"))  # an "NA" courier scan
        events.append(webhook_payload(awb, code, at, scans=list(scans), is_return=is_return,
                                      timestamp_format=formats[i % len(formats)]))
        if unknown_at == i:
            events.append(webhook_payload(awb, 888, at + timedelta(hours=1), label="NEW CODE", scans=list(scans),
                                          is_return=is_return))
    return events


def _run(conn, events: list[dict], start_status: str):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    set_order_status(conn, order, start_status)
    awb = f"PROP{next(_awbs):08d}"
    ship = make_shipment(conn, tenant, order, awb=awb, is_return=events[0]["is_return"] == 1)
    for event in events:
        apply_event(conn, tenant, {**event, "awb": awb})
    hist = [row for row in history(conn, ship)]
    return shipment_state(conn, ship), order_status(conn, order), hist


@st.composite
def scenarios(draw):
    path = draw(st.sampled_from([FORWARD, RTO, CANCELLED]))
    length = draw(st.integers(min_value=1, max_value=len(path)))
    prefix = path[:length]
    is_return = draw(st.booleans()) if path is FORWARD else False
    unknown_at = draw(st.none() | st.integers(min_value=0, max_value=length - 1))
    formats = draw(st.lists(st.sampled_from(["dmy", "iso"]), min_size=1, max_size=3))
    events = _events(prefix, is_return, unknown_at, formats)
    # Shuffle, and redeliver some events (Shiprocket repeats and reorders).
    repeats = draw(st.lists(st.sampled_from(range(len(events))), max_size=len(events)))
    delivered = draw(st.permutations(events + [events[i] for i in repeats]))
    start = draw(st.sampled_from(["pending", "paid"]))
    return prefix, is_return, events, delivered, start, unknown_at


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_any_arrival_order_ends_in_the_same_state(conn, scenario):
    prefix, is_return, in_order, delivered, start, unknown_at = scenario
    expected = _run(conn, in_order, start)
    actual = _run(conn, delivered, start)
    assert actual == expected

    (status, code, terminal, _at), order, hist = actual
    last = prefix[-1]
    terminal_codes = (7, 8, 10)
    if unknown_at == len(prefix) - 1 and last not in terminal_codes:
        # An unknown code reported after the last known one is the latest thing Shiprocket said.
        assert (status, code, terminal) == ("NEW CODE", 888, False)
    else:
        assert (code, terminal) == (last, last in terminal_codes)
    assert any(row[2] == 888 and row[4] for row in hist) == (len(in_order) > len(prefix))
    if is_return:
        assert order == start
    elif last == 7:
        assert order == "delivered"
    elif last in (9, 46, 10, 8):
        assert order == "cancelled"
    elif last == 5:
        assert order == start
    elif set(prefix) & {42, 6, 18, 38, 17, 21}:
        assert order == "shipped"
