"""The ids the receiver gives stored webhooks (runner.intake._uuid7s): UUIDv7s that increase in
the order they were made, across the 12-bit counter's overflow and a clock stepped back."""

from __future__ import annotations

import struct
import uuid

import pytest

from runner import intake


def _ids(array: bytes) -> list[uuid.UUID]:
    ndim, nulls, oid, count, lower = struct.unpack("!iiiii", array[:20])
    assert (ndim, nulls, oid, lower) == (1, 0, 2950, 1)  # a one-dimensional uuid[] without NULLs
    out, at = [], 20
    for _ in range(count):
        assert struct.unpack("!i", array[at:at + 4])[0] == 16
        out.append(uuid.UUID(bytes=array[at + 4:at + 20]))
        at += 20
    assert at == len(array)
    return out


@pytest.fixture
def clock(monkeypatch):
    now = {"ms": 1_800_000_000_000}
    monkeypatch.setattr(intake.time, "time_ns", lambda: now["ms"] * 1_000_000)
    monkeypatch.setattr(intake, "_uuid7_ms", 0)
    monkeypatch.setattr(intake, "_uuid7_counter", 0)
    return now


def test_ids_are_version_7_and_carry_the_millisecond(clock):
    ids = _ids(intake._uuid7s(5))
    assert [i.version for i in ids] == [7] * 5 and all(i.variant == uuid.RFC_4122 for i in ids)
    assert [i.int >> 80 for i in ids] == [clock["ms"]] * 5
    assert [(i.int >> 64) & 0xFFF for i in ids] == [0, 1, 2, 3, 4]  # the counter starts at 0 each millisecond


def test_ids_keep_increasing_past_the_counters_overflow_and_a_clock_stepped_back(clock):
    made = _ids(intake._uuid7s(3000)) + _ids(intake._uuid7s(3000))  # 6,000 in one millisecond: over 4,096
    assert made == sorted(made) and len(set(made)) == 6000
    assert made[-1].int >> 80 == clock["ms"] + 1  # the overflow moved on to the next millisecond
    clock["ms"] -= 5_000  # the clock is stepped back 5 s
    later = _ids(intake._uuid7s(10))
    assert later[0] > made[-1] and later == sorted(later)
    clock["ms"] += 10_000
    fresh = _ids(intake._uuid7s(2))
    assert fresh[0] > later[-1] and fresh[0].int >> 80 == clock["ms"] and (fresh[0].int >> 64) & 0xFFF == 0
