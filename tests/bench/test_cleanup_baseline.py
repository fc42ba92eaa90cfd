"""Section 6's baseline: ingest alone, measured before and after the cleanup (bench.cleanup)."""

from __future__ import annotations

from bench.cleanup import _calmer
from bench.env import WrkResult


def _run(p99: float, non_2xx: int = 0, errors: dict | None = None) -> WrkResult:
    return WrkResult(requests=1000, non_2xx=non_2xx, seconds=1.0, p50_ms=1.0, p99_ms=p99, max_ms=p99,
                     errors=errors or {})


def test_a_stall_in_one_baseline_run_cannot_make_the_target_easier():
    stalled, calm = _run(450.0), _run(7.1)
    assert _calmer(stalled, calm) is calm
    assert _calmer(calm, stalled) is calm


def test_a_baseline_run_with_errors_is_not_chosen_for_its_p99_and_one_run_is_itself():
    failing, clean = _run(2.0, errors={"timeout": 3}), _run(9.0)
    assert _calmer(failing, clean) is clean
    assert _calmer(clean, _run(1.0, non_2xx=5)) is clean
    only = _run(5.0)
    assert _calmer(only) is only
