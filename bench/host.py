"""Host probes: how fast this shared machine was at one moment of the run.

The machine's speed drifts by tens of percent within minutes (other tenants), and a figure that
missed its target is only half explained by its same-run baseline: the baseline can be slow too.
A probe does the same small work every time, between sections with nothing of the bench running,
so probes compare within a run (was the host slower during section 6 than before section 1?) and
across runs' reports (was this a slow hour?):

- cpu: the wall time of a fixed pure-Python loop, the best of three (the interpreter is what the
  serve processes spend their CPU in; the best of three leaves out a single interruption, and a
  host that stays slow shows in all three);
- fsync: 8 kB written and fdatasync'd, one after another, in a file beside the cluster's data
  (the same filesystem as its WAL, whose flush every commit waits for);
- pressure: over one idle second before the rest (the bench's cluster idle but for its own
  background work), the share of time in which some task (`some`), or every non-idle task
  (`full`), waited for I/O or CPU, from the kernel's pressure-stall counters (/proc/pressure).

    python -m bench.host /tmp        # one probe, printed as JSON
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

FSYNCS = 50
FSYNC_BUDGET_S = 2.0  # a degraded disk must not hold the bench up: stop after this long
CPU_ROUNDS = 3
_CPU_ITERATIONS = 200_000
_BLOCK = os.urandom(8192)


def _loop() -> int:
    """The fixed work: integer arithmetic, a dict and a list, as a request's Python does."""
    seen: dict[int, int] = {}
    out = []
    total = 0
    for i in range(_CPU_ITERATIONS):
        total += (i * 7) ^ (i >> 3)
        if i % 16 == 0:
            seen[i & 1023] = total
            out.append(total & 0xFF)
    return total + len(seen) + len(out)


def cpu_ms(rounds: int = CPU_ROUNDS) -> float:
    """The best wall time of `rounds` runs of the fixed loop, in ms."""
    best = float("inf")
    for _ in range(max(1, rounds)):
        started = time.perf_counter()
        _loop()
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def fsync_ms(directory: Path, count: int = FSYNCS, budget: float = FSYNC_BUDGET_S) -> list[float]:
    """Latencies (ms) of `count` 8 kB writes, each followed by fdatasync, into a new file in
    `directory` (removed after); fewer when they take longer than `budget` seconds in all."""
    path = Path(directory) / f".storeops-host-probe-{os.getpid()}"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        deadline = time.perf_counter() + budget
        for i in range(count):
            started = time.perf_counter()
            os.pwrite(fd, _BLOCK, (i % 16) * len(_BLOCK))
            os.fdatasync(fd)
            times.append(1000 * (time.perf_counter() - started))
            if time.perf_counter() > deadline:
                break
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return times


PRESSURE_WINDOW_S = 1.0


def parse_pressure(text: str) -> dict[str, int]:
    """{'some': total µs, 'full': total µs} from a /proc/pressure file's text."""
    out = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        for field in rest.split():
            name, _, value = field.partition("=")
            if name == "total":
                out[kind] = int(value)
    return out


def _pressure_totals() -> dict[str, dict[str, int]]:
    out = {}
    for resource in ("io", "cpu"):
        try:
            out[resource] = parse_pressure(Path(f"/proc/pressure/{resource}").read_text())
        except OSError:  # a kernel without PSI
            out[resource] = {}
    return out


def pressure(window: float = PRESSURE_WINDOW_S) -> dict[str, float]:
    """The % of the next `window` seconds in which some task, or every task, waited for I/O or CPU:
    {'io_some', 'io_full', 'cpu_some'}, each None where the kernel does not count it."""
    first, started = _pressure_totals(), time.perf_counter()
    time.sleep(window)
    last, elapsed = _pressure_totals(), time.perf_counter() - started
    out = {}
    for resource, kind in (("io", "some"), ("io", "full"), ("cpu", "some")):
        a, b = first[resource].get(kind), last[resource].get(kind)
        out[f"{resource}_{kind}"] = None if a is None or b is None else round(100 * (b - a) / 1e6 / elapsed, 1)
    return out


def probe(directory: Path, when: str = "") -> dict:
    """One probe (see the module docstring); `when` names the moment in the report."""
    stalls = pressure()  # first, so that the probe's own fsyncs are not counted
    fsyncs = fsync_ms(directory)
    return {
        "when": when,
        "cpu_ms": round(cpu_ms(), 1),
        "fsync_p50_ms": round(statistics.median(fsyncs), 2),
        "fsync_max_ms": round(max(fsyncs), 2),
        "fsyncs": len(fsyncs),
        **stalls,
    }


def table(probes: list[dict]) -> list[str]:
    """The report's lines for a run's probes: a table, and how far apart the slowest and fastest were."""
    if not probes:
        return []

    def pct(value) -> str:
        return "" if value is None else f"{value:.1f}"

    lines = ["Host probes (bench/host.py), each between sections with nothing of the bench running: the best of "
             f"{CPU_ROUNDS} wall times of a fixed Python loop (the same work in every run: lower is a faster host); "
             f"{FSYNCS} writes of 8 kB, each fdatasync'd, beside the cluster's data (its WAL's filesystem); and, "
             f"over {PRESSURE_WINDOW_S:g} s before those with the bench's cluster idle but for its own background "
             "work, the % of the time some task waited for I/O or CPU, or every task did (`full`), from the "
             "kernel's pressure-stall counters (/proc/pressure).", "",
             "| when | Python loop ms | fsync p50 ms | fsync max ms | I/O some % | I/O full % | CPU some % |",
             "|---|---|---|---|---|---|---|"]

    def fsyncs(p: dict) -> str:
        short = "" if p["fsyncs"] >= FSYNCS else f" ({p['fsyncs']} done in {FSYNC_BUDGET_S:g} s)"
        return f"{p['fsync_max_ms']:.2f}{short}"

    lines += [f"| {p['when']} | {p['cpu_ms']:.1f} | {p['fsync_p50_ms']:.2f} | {fsyncs(p)} | "
              f"{pct(p['io_some'])} | {pct(p['io_full'])} | {pct(p['cpu_some'])} |" for p in probes]
    fast, slow = min(probes, key=lambda p: p["cpu_ms"]), max(probes, key=lambda p: p["cpu_ms"])
    if len(probes) > 1 and fast["cpu_ms"]:
        lines += ["", f"The loop took {slow['cpu_ms'] / fast['cpu_ms']:.2f}× as long at its slowest ({slow['when']}) "
                  f"as at its fastest ({fast['when']}) in this run."]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(probe(Path(args[0]) if args else Path("."), "now")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
