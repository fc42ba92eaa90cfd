"""An open-loop load generator: signed Razorpay webhooks released on a fixed schedule.

wrk keeps every connection busy (a closed loop), which measures the ceiling: with the machine
full, anything else that runs adds queueing to every request. A steady rate below the ceiling is
what a receiver sees most of the time, and it is what section 6 holds fixed while the cleanup
runs. Request i is due at start + i/rate, whatever happened to the ones before it; its latency is
measured from that due time to the response being read, so a stalled server shows up in full
(no coordinated omission) even when every connection was busy and the request had to wait for one.

Run as `python -m bench.paced --port P --path /... --bodies FILE --prefix X --rate R --seconds S`;
SIGINT stops it early (as wrk). It prints one line `PACEDJSON {...}`: requests answered, non-2xx,
seconds until the last answer, p50/p99/max in ms, the errors (connect, read, timeout, and
requests never sent) and the pauses: each gap of more than 20 ms between two answers, as
(start, end) in time.perf_counter() seconds (the same clock in every process, so the harness can
line them up with what it sampled meanwhile); bench.env.run_paced turns it into the same WrkResult
as wrk's.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import signal
import time
from array import array

import orjson


def _requests(path: str, bodies: list[tuple[str, bytes]], prefix: str):
    heads = [(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\nX-Razorpay-Signature: {sig}\r\nX-Razorpay-Event-Id: ").encode()
             for sig, body in bodies]

    def build(i: int) -> bytes:
        k = i % len(bodies)
        return heads[k] + f"{prefix}_{i}\r\n\r\n".encode() + bodies[k][1]

    return build


def _percentile(sorted_values, p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


# A gap between two answers longer than this, at a steady rate of hundreds per second, is the
# server (or the host) stalled, not an idle moment.
PAUSE = 0.020
# A request not waiting in any pause but answered this late (seconds) was held up on its own.
HELD = 0.100

_STOP = {"early": False}  # SIGINT before the event loop has its own handler


async def _exchange(reader, writer, request: bytes, timeout: float) -> tuple[bytes, bool]:
    """Send one request, read its response; returns (status line's code, whether the server keeps
    the connection open)."""
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length, keep = 0, True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep = False
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout)
    return head[9:12], keep


async def drive(port: int, build, rate: float, seconds: float, connections: int, stop: asyncio.Event,
                timeout: float = 5.0, timeline: array | None = None) -> dict:
    latencies = array("d")
    answered = array("d")  # when each answer came (time.perf_counter), in order
    errors = {"connect": 0, "read": 0, "timeout": 0}
    counts = {"non_2xx": 0, "attempted": 0}
    queue: asyncio.Queue[int | None] = asyncio.Queue()
    start = time.perf_counter() + 0.05

    async def connection() -> None:
        reader = writer = None
        try:
            while (i := await queue.get()) is not None:
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    except OSError:
                        errors["connect"] += 1
                        counts["attempted"] += 1
                        continue
                counts["attempted"] += 1
                try:
                    status, keep = await _exchange(reader, writer, build(i), timeout)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as exc:
                    errors["timeout" if isinstance(exc, asyncio.TimeoutError) else "read"] += 1
                    keep, status = False, None
                if status is not None:
                    answered.append(time.perf_counter())
                    latencies.append(answered[-1] - (start + i / rate))
                    if timeline is not None:
                        timeline.extend((start + i / rate, latencies[-1]))
                    if status[:1] != b"2":
                        counts["non_2xx"] += 1
                if not keep:  # the server closed it (or we gave up on it): a new one for the next request
                    writer.close()
                    reader = writer = None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    sent = 0
    while not (stop.is_set() or _STOP["early"]):
        now = time.perf_counter()
        if now - start >= seconds:
            break
        due = int((now - start) * rate) + 1 if now >= start else 0
        while sent < due:
            queue.put_nowait(sent)
            sent += 1
        await asyncio.sleep(0.001)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = max(time.perf_counter() - start, 1e-9)  # until the last answer: a backlog lowers the rate
    values = sorted(latencies)
    unanswered = sent - counts["attempted"]
    pauses = [(a, b) for a, b in zip(answered, answered[1:], strict=False) if b - a > PAUSE]
    outside = sorted(outside_pauses(latencies, answered, pauses))
    # held up with answers still coming: some connections waiting while others were answered, which
    # the pauses (gaps between any two answers) cannot show
    held = len(outside) - bisect.bisect_right(outside, HELD)
    return {"requests": len(values), "non_2xx": counts["non_2xx"], "sent": sent, "seconds": elapsed,
            "rate": rate, "errors": {**errors, "unanswered": unanswered},
            "p50_ms": 1000 * _percentile(values, 0.50), "p90_ms": 1000 * _percentile(values, 0.90),
            "p99_ms": 1000 * _percentile(values, 0.99), "max_ms": 1000 * (values[-1] if values else 0.0),
            "p99_outside_pauses_ms": 1000 * _percentile(outside, 0.99) if outside else None,
            "held_outside_pauses": held,
            "pauses": pauses[:500]}


def outside_pauses(latencies, answered, pauses) -> list[float]:
    """The latencies of the requests that were not waiting during any pause: request k was due at
    answered[k] - latencies[k] and answered at answered[k]; pauses are (start, end), in order and
    apart. What a run's p99 would have been without its stalls (which also hides the stalls of the
    kernel's writeback, part of any run: use it to judge a run, not as its figure)."""
    ends = [end for _, end in pauses]
    out = []
    for latency, done in zip(latencies, answered, strict=True):
        due = done - latency
        k = bisect.bisect_right(ends, due)  # the first pause ending after the request was due
        if k == len(pauses) or pauses[k][0] >= done:
            out.append(latency)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.paced", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help='file of "signature<TAB>body" lines')
    parser.add_argument("--prefix", required=True, help="event ids are <prefix>_<n>")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (as wrk's)")
    parser.add_argument("--timeline", default=None,
                        help="also write each answered request's due time (time.perf_counter, comparable across "
                             "processes) and latency, both in seconds, one TAB-separated pair per line")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, lambda *_: _STOP.update(early=True))
    bodies = []
    with open(args.bodies) as fh:
        for line in fh:
            sig, _, body = line.rstrip("\n").partition("\t")
            bodies.append((sig, body.encode()))
    build = _requests(args.path, bodies, args.prefix)
    timeline = array("d") if args.timeline else None

    async def run() -> dict:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
        return await drive(args.port, build, args.rate, args.seconds, args.connections, stop, args.timeout, timeline)

    try:
        import uvloop
    except ImportError:
        uvloop = None
    result = uvloop.run(run()) if uvloop else asyncio.run(run())
    if timeline is not None:
        with open(args.timeline, "w") as fh:
            fh.writelines(f"{timeline[k]:.6f}\t{timeline[k + 1]:.6f}\n" for k in range(0, len(timeline), 2))
    print("PACEDJSON " + orjson.dumps(result).decode(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
