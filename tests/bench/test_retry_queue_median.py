"""Section 4's headline figure: storeops drains the same jobs several times; the median drain counts."""

from __future__ import annotations

from bench.retry_queue import DRAINS, median_drain


def _drain(per_second: float) -> dict:
    return {"jobs": 5000, "per_second": per_second, "seconds": 5000 / per_second, "completed": 5000}


def test_one_drain_slowed_by_the_host_does_not_set_the_figure():
    """A 5,000-job drain lasts about half a second, so one pause of the host halves it (9,516/s at
    21:03 UTC on 26 Nov against 16,129/s for the longer drain just after). The median of three is
    the figure: neither the slowed drain nor the fastest one."""
    slowed, fast, faster = _drain(9_516), _drain(18_897), _drain(19_979)
    ordered, median = median_drain([fast, slowed, faster])
    assert median is fast
    assert ordered == [slowed, fast, faster]
    assert median_drain([slowed])[1] is slowed
    assert median_drain([faster, slowed])[1] is slowed  # of two, the slower: never the better one
    assert DRAINS % 2 == 1
