"""bench.paced, the open-loop load generator: requests leave on schedule, latency counts from the
due time, and a server that closes connections or stops answering is reported, not hidden."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench.paced import drive


async def _server(behaviour):
    """A tiny HTTP/1.1 server; behaviour(n) for the n-th request on the server returns
    'keep', 'close' (answers with Connection: close, then closes), 'drop' (closes unanswered),
    'slow' (answers after 0.3 s), 'freeze' (blocks the whole event loop, the client's too, for
    0.15 s before answering: the host stalling everything) or 'hang'."""
    count = {"n": 0}

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                count["n"] += 1
                what = behaviour(count["n"])
                if what == "drop":
                    break
                if what == "hang":
                    await asyncio.sleep(3600)
                if what == "slow":
                    await asyncio.sleep(0.3)
                if what == "freeze":
                    time.sleep(0.15)
                extra = b"Connection: close\r\n" if what == "close" else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + extra + b"\r\nok")
                await writer.drain()
                if what == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], count


def _build(i: int) -> bytes:
    body = b'{"n": %d}' % i
    return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _run(behaviour, *, rate=200.0, seconds=1.0, connections=4, timeout=5.0) -> tuple[dict, int]:
    async def main():
        server, port, count = await _server(behaviour)
        async with server:
            result = await drive(port, _build, rate, seconds, connections, asyncio.Event(), timeout)
        return result, count["n"]

    return asyncio.run(main())


def test_every_request_scheduled_is_sent_and_answered_at_the_rate():
    result, served = _run(lambda n: "keep")
    assert 190 <= result["sent"] <= 210  # 200/s for 1 s
    assert result["requests"] == result["sent"] == served
    assert result["errors"] == {"connect": 0, "read": 0, "timeout": 0, "unanswered": 0}
    assert result["non_2xx"] == 0
    assert 0 < result["p50_ms"] < 100


def test_a_server_that_closes_connections_gets_new_ones():
    # every request answered with Connection: close, or dropped unanswered every 10th time
    result, _ = _run(lambda n: "drop" if n % 10 == 0 else "close")
    assert result["errors"]["read"] == pytest.approx(result["sent"] / 10, abs=3)
    assert result["requests"] + result["errors"]["read"] == result["sent"]
    assert result["errors"]["unanswered"] == 0


def test_a_slow_server_shows_in_the_latency_from_the_due_time():
    # one connection, every 20th answer takes 0.3 s: the requests due meanwhile queue behind it,
    # and their latency counts from when they were due, not from when a connection was free
    result, _ = _run(lambda n: "slow" if n % 20 == 0 else "keep", rate=100.0, seconds=1.0, connections=1)
    assert result["p99_ms"] >= 250
    assert result["max_ms"] >= 290


def test_a_hung_request_times_out_and_is_counted():
    result, _ = _run(lambda n: "hang" if n == 5 else "keep", rate=50.0, seconds=0.5, connections=2, timeout=0.5)
    assert result["errors"]["timeout"] == 1
    assert result["requests"] == result["sent"] - 1


def test_a_stall_of_everything_is_reported_as_a_pause_between_answers():
    """No answer for 0.15 s at 200/s (one every 5 ms): one pause of about that length, given as
    (start, end) on time.perf_counter's clock, which the harness lines up with its own samples."""
    before = time.perf_counter()
    result, _ = _run(lambda n: "freeze" if n == 100 else "keep", rate=200.0, seconds=1.0)
    long = [(a, b) for a, b in result["pauses"] if b - a >= 0.1]
    assert len(long) == 1
    (start, end), = long
    assert 0.14 <= end - start < 0.5
    assert before < start < end < time.perf_counter()
    assert all(b - a > 0.02 for a, b in result["pauses"])


def test_the_p99_outside_pauses_leaves_out_exactly_the_requests_that_waited_in_one():
    """bench.paced's p99_outside_pauses_ms (what section 6 judges a baseline by): a request due at
    done - latency and answered at done is left out when a pause overlaps that span, and only then."""
    from bench.paced import outside_pauses

    pauses = [(10.0, 10.2), (20.0, 20.05)]
    latencies = [0.002, 0.15, 0.003, 0.002, 0.04, 0.002]
    answered = [5.0,    # far from any pause
                10.2,   # due at 10.05, inside the first pause
                10.0,   # answered as the pause began: due before, so it did not wait in it
                10.203,  # due at 10.201, just after the pause ended
                20.05,  # due at 20.01, inside the second
                19.999]  # due at 19.997, answered before the second began
    assert outside_pauses(latencies, answered, pauses) == [0.002, 0.003, 0.002, 0.002]
    assert outside_pauses(latencies, answered, []) == latencies


def test_a_stall_shows_in_the_p99_and_not_in_the_p99_outside_pauses():
    """One 0.15 s freeze at 200/s holds up about 30 of 200 requests: the p99 is the stall's, and
    the p99 of the others is the server's own."""
    result, _ = _run(lambda n: "freeze" if n == 100 else "keep", rate=200.0, seconds=1.0)
    assert result["p99_ms"] >= 100
    assert result["p99_outside_pauses_ms"] is not None and result["p99_outside_pauses_ms"] < 50
    calm, _ = _run(lambda n: "keep", rate=200.0, seconds=0.5)
    assert calm["p99_outside_pauses_ms"] is not None and calm["p99_outside_pauses_ms"] < 50
    if not calm["pauses"]:
        assert calm["p99_outside_pauses_ms"] == calm["p99_ms"]


def test_requests_held_up_while_others_are_answered_are_counted_apart_from_pauses():
    """One connection's answer held back 0.3 s while the others keep answering: no pause between
    answers (they keep coming), but one request answered after over 100 ms (held_outside_pauses),
    what a stalled server process would look like beside a working one."""
    result, _ = _run(lambda n: "slow" if n == 50 else "keep", rate=200.0, seconds=1.0, connections=8)
    assert not [p for p in result["pauses"] if p[1] - p[0] > 0.1]
    assert result["held_outside_pauses"] >= 1
    calm, _ = _run(lambda n: "keep", rate=200.0, seconds=0.5)
    assert calm["held_outside_pauses"] == 0
