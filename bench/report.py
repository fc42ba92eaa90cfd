"""bench/RESULTS.md: figures beside their same-run baselines, ratios, targets, machine facts."""

from __future__ import annotations

import json
from pathlib import Path

from bench import host
from bench.common import Row, Section, fmt
from bench.ingest import describe_profile


def _value(v: float | None, unit: str) -> str:
    if v is None:
        return "—"
    if unit in ("ms",):
        return f"{v:,.2f} ms" if abs(v) < 100 else f"{v:,.0f} ms"
    digits = 0 if abs(v) >= 100 or float(v).is_integer() else 2
    return f"{fmt(v, digits)}{(' ' + unit) if unit else ''}"


def _ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return ""
    if r >= 100:
        return f"{r:,.0f}×"
    if r >= 0.01:
        return f"{r:.2f}×"
    return f"{r:.4f}×"


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "**yes**" if row.met else "**NO**"


def _row_line(row: Row) -> str:
    base = f"{_value(row.baseline, row.unit)} ({row.baseline_label})" if row.baseline is not None else ""
    return f"| {row.metric} | {_value(row.value, row.unit)} | {base} | {_ratio(row)} | {row.target} | {_met(row)} |"


def _cpu_table(cpu: dict[str, dict[str, float]]) -> list[str]:
    if not cpu:
        return []
    cols: list[str] = []
    for split in cpu.values():
        for k in split:
            if k not in cols and k != "machine":
                cols.append(k)
    cols.append("machine")
    lines = ["CPU in cores (average over the measured phase; `other` is everything else on this shared machine; "
             "`steal` is time the hypervisor ran other guests while this one had work to run, counted in `machine` "
             "since session 7):",
             "", "| phase | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for phase, split in cpu.items():
        lines.append(f"| {phase} | " + " | ".join(f"{split[c]:.2f}" if c in split else "" for c in cols) + " |")
    return lines


def render(sections: list[Section], facts: dict[str, str], meta: dict, analysis: dict[int, list[str]]) -> str:
    out: list[str] = ["# storeops benchmarks", ""]
    out += [f"Run {meta['started']} UTC, {meta['mode']}, {meta['duration']}. Every figure sits beside a baseline "
            "measured in the same run on the same machine, which is shared and noisy: compare ratios across runs, "
            "not absolute numbers.", "",
            f"Rerun: `{meta['command']}` (the full run is what `make bench` runs: `.venv/bin/python -m bench`). Smoke version (tiny sizes, under a minute, "
            "run by tests/bench/test_bench_smoke.py): `.venv/bin/python -m bench --smoke --out /tmp/bench-smoke.md`.",
            ""]
    out += ["## Summary", "", "| # | figure | result | baseline (same run) | ratio | target | met |",
            "|---|---|---|---|---|---|---|"]
    for s in sections:
        if s.skipped or s.error:
            out.append(f"| {s.number} | {s.title} | {'skipped' if s.skipped else 'ERROR'} | | | | |")
            continue
        for row in s.rows:
            if row.target:
                out.append(f"| {s.number} " + _row_line(row))
    out += ["", "## Machine and setup", ""]
    out += [f"- **{k}**: {v}" for k, v in facts.items()]
    out += [f"- **{k}**: {v}" for k, v in meta.get("setup", {}).items()]
    out.append("")
    if meta.get("probes"):
        out += host.table(meta["probes"]) + [""]
    for s in sections:
        out += [f"## {s.number}. {s.title}", ""]
        if s.skipped:
            out += [f"Skipped: {s.skipped}", ""]
            continue
        if s.error:
            out += [f"**ERROR** after {s.seconds:.1f} s: `{s.error}`", ""]
            continue
        out += ["| figure | result | baseline (same run) | ratio | target | met |", "|---|---|---|---|---|---|"]
        out += [_row_line(r) for r in s.rows]
        out.append("")
        for note in s.notes:
            out += [f"- {note}"]
        if s.notes:
            out.append("")
        for line in analysis.get(s.number, []):
            out.append(line)
        if analysis.get(s.number):
            out.append("")
        if s.cpu:
            out += _cpu_table(s.cpu) + [""]
        if s.number == 1 and "profile" in s.details:
            out += ["Profile of the runner under wrk (intake, `serve --no-worker`):", ""]
            out += describe_profile(s.details.get("profile")) + [""]
        shown = {k: v for k, v in s.details.items() if k != "profile"}
        if shown:
            out += ["<details><summary>raw figures</summary>", "", "```json",
                    json.dumps(shown, indent=1, default=str), "```", "</details>", ""]
        out += [f"_Section time: {s.seconds:.1f} s._", ""]
    return "\n".join(out).rstrip() + "\n"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
