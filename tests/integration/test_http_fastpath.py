"""The webhook fast path (runner.fasthttp) against a real `storeops serve`, with exact bytes on the
wire: a plain webhook POST is answered by the HTTP protocol itself, everything else (chunked
bodies, oversized Content-Length, query strings, Expect: 100-continue, proxied or pipelined
requests) by uvicorn and the ASGI route. Both must give the same answers, keep responses in
order on one connection, honour Connection: close / HTTP/1.0, and store exactly what they
acknowledge."""

from __future__ import annotations

import json
import socket
import time
import uuid

import httpx
import psycopg
import pytest
from fakes.razorpay_server import payment_entity, razorpay_id, sign, signed_webhook, webhook_event
from runner_proc import RunnerProcess

SECRET_R = "whsec_fast_r"       # tenant r: the comparison tests
SECRET_K = "whsec_fast_k"       # tenant k: keep-alive, pipelining, connection handling
SECRET_F = "whsec_fast_f"       # tenant f: untouched until the cache test (first request uncached)
SR_TOKEN = "sr-fast-s"          # tenant s: Shiprocket, untouched until the cache test
MAX_BODY = 65536

RZP = "/functions/v1/razorpay-webhook"


@pytest.fixture(scope="module")
def live(module_db, tmp_path_factory):
    with psycopg.connect(module_db, autocommit=True) as c:
        ids = {}
        for name in ("r", "k", "f", "s"):
            ids[name] = c.execute("insert into storeops.tenants (name) values (%s) returning id",
                                  (f"Fastpath {name}",)).fetchone()[0]
        for name, secret in (("r", SECRET_R), ("k", SECRET_K), ("f", SECRET_F)):
            c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'razorpay_webhook', %s)",
                      (ids[name], secret))
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'shiprocket_webhook', %s)",
                  (ids["s"], SR_TOKEN))
    log = tmp_path_factory.mktemp("runner") / "runner.log"
    runner = RunnerProcess(module_db, log_path=log, env={"STOREOPS_MAX_BODY_BYTES": str(MAX_BODY)}).start()
    yield {"url": runner.base_url, "port": runner.port, "db": module_db, "runner": runner,
           **{f"tenant_{k}": str(v) for k, v in ids.items()}}
    runner.stop()


# -- raw HTTP/1.1 on a socket -------------------------------------------------------------------------

class Response:
    def __init__(self, status_line: bytes, headers: list[tuple[str, str]], body: bytes):
        self.status_line = status_line
        self.status = int(status_line.split()[1])
        self.headers = headers
        self.body = body

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status_line!r} {self.headers} {self.body[:200]!r}>"


class Wire:
    """One client connection: send exact bytes, read back exact responses in order."""

    def __init__(self, port: int, timeout: float = 5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"server closed the connection; unread bytes: {self.buf!r}")
        self.buf += chunk

    def _take_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, interim: bool = False) -> Response:
        status_line = self._take_line()
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers = []
        while True:
            line = self._take_line()
            if not line:
                break
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
        resp = Response(status_line, headers, b"")
        if interim or 100 <= resp.status < 200:
            return resp
        length = resp.header("content-length")
        if length is not None:
            resp.body = self._take(int(length))
        elif resp.header("transfer-encoding") == "chunked":
            parts = []
            while True:
                size = int(self._take_line().split(b";")[0], 16)
                if size == 0:
                    while self._take_line():
                        pass
                    break
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n"
            resp.body = b"".join(parts)
        else:
            raise AssertionError(f"response without a length: {resp}")
        return resp

    def closed_by_server(self, timeout: float = 3.0) -> bool:
        """True when the server closed the connection (EOF) with nothing more to read."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _head(method: str, target: str, headers: dict[str, str], version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain(target: str, body: bytes, headers: dict[str, str] | None = None, version: str = "1.1") -> bytes:
    """A POST with Content-Length: the fast path's kind of request."""
    return _head("POST", target, {**(headers or {}), "Content-Length": str(len(body))}, version) + body


def chunked(target: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """The same POST with Transfer-Encoding: chunked (in two chunks): uvicorn and the ASGI route."""
    head = _head("POST", target, {**(headers or {}), "Transfer-Encoding": "chunked"})
    half = len(body) // 2
    out = head
    for part in (body[:half], body[half:]):
        if part:
            out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def get(target: str) -> bytes:
    return _head("GET", target, {})


def exchange(port: int, request: bytes) -> Response:
    with Wire(port) as w:
        w.send(request)
        return w.read_response()


# -- webhooks and the database -------------------------------------------------------------------

def rzp_webhook(secret: str, event_id: str | None = None, **payment) -> tuple[bytes, dict[str, str], str]:
    event = webhook_event("payment.captured", account_id="acc_FastPath0001",
                          payment=payment_entity(order_id=razorpay_id("order"), **payment))
    body, headers = signed_webhook(event, secret, event_id)
    return body, headers, headers["X-Razorpay-Event-Id"]


def sr_event(awb: str) -> tuple[bytes, str]:
    stamp = "23 05 2023 11:43:52"
    event = {"awb": awb, "current_status": "IN TRANSIT", "shipment_status": "IN TRANSIT",
             "shipment_status_id": 18, "current_timestamp": stamp, "order_id": "SR-" + awb, "scans": []}
    return json.dumps(event).encode(), f"{awb}|18|{stamp}"


def stored(db: str, event_id: str, table: str = "payment_webhooks") -> int:
    with psycopg.connect(db, autocommit=True) as c:
        return c.execute(f"select count(*) from storeops.{table} where event_id = %s",  # noqa: S608 (fixed names)
                         (event_id,)).fetchone()[0]


def stored_tenant(db: str, event_id: str) -> str | None:
    with psycopg.connect(db, autocommit=True) as c:
        row = c.execute("select tenant_id from storeops.payment_webhooks where event_id = %s", (event_id,)).fetchone()
    return str(row[0]) if row and row[0] else None


def assert_ok(resp: Response, event_id: str | None, status: str = "ok") -> None:
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/json", resp
    want = {"status": status} if event_id is None else {"status": status, "event_id": event_id}
    assert resp.json() == want, resp


# -- 1. both ways give the same answer --------------------------------------------------------------

def _cases(live) -> list[tuple[str, str, object]]:
    """(name, path, make) where make() gives (body, headers, event id or None) for a fresh request."""
    r = live["tenant_r"]

    def valid():
        return rzp_webhook(SECRET_R)

    def bad_signature():
        body, headers, _ = rzp_webhook(SECRET_R)
        return body, {**headers, "X-Razorpay-Signature": "0" * 64}, None

    def malformed():
        body = b'{"event": "payment.captured", "payload": {not json'
        _b, headers, _ = rzp_webhook(SECRET_R)
        return body, {**headers, "X-Razorpay-Signature": sign(body, SECRET_R)}, None

    def unsigned():
        body, headers, _ = rzp_webhook(SECRET_R)
        del headers["X-Razorpay-Signature"]
        return body, headers, None

    return [
        ("valid", f"{RZP}/{r}", valid),
        ("bad_signature", f"{RZP}/{r}", bad_signature),
        ("malformed_json", f"{RZP}/{r}", malformed),
        ("unknown_tenant", f"{RZP}/{uuid.uuid4()}", valid),
        ("non_uuid_tenant", f"{RZP}/not-a-uuid", valid),
        ("missing_signature", f"{RZP}/{r}", unsigned),
    ]


WANT = {"valid": 200, "bad_signature": 401, "malformed_json": 400, "unknown_tenant": 404,
        "non_uuid_tenant": 404, "missing_signature": 401}


@pytest.mark.parametrize("case", list(WANT))
def test_fast_path_and_asgi_route_give_the_same_answer(live, case):
    _name, path, make = next(c for c in _cases(live) if c[0] == case)
    answers = {}
    for way, build in (("fast", plain), ("chunked", chunked)):
        body, headers, event_id = make()
        rid = f"rid-{case}-{way}-{uuid.uuid4().hex[:8]}"
        resp = exchange(live["port"], build(path, body, {**headers, "X-Request-Id": rid}))
        assert resp.status == WANT[case], (way, resp)
        assert resp.all("x-request-id") == [rid], (way, resp)  # the caller's id, exactly once
        assert resp.header("content-type") == "application/json", (way, resp)
        assert int(resp.header("content-length")) == len(resp.body)
        answers[way] = resp.json()
        if case == "valid":
            assert_ok(resp, event_id)
            assert stored(live["db"], event_id) == 1
            assert stored_tenant(live["db"], event_id) == live["tenant_r"]
            # A redelivery, sent each way: a duplicate, still one row.
            for again_way, again in (("fast", plain), ("chunked", chunked)):
                dup = exchange(live["port"], again(path, body, headers))
                assert_ok(dup, event_id, "duplicate")
                assert len(dup.all("x-request-id")) == 1 and dup.header("x-request-id"), (again_way, dup)
            assert stored(live["db"], event_id) == 1
        elif event_id is not None:
            assert stored(live["db"], event_id) == 0
        # Without a caller's id, the server makes one: present exactly once, and not reused.
        body, headers, _ = make()
        first = exchange(live["port"], build(path, body, headers))
        second = exchange(live["port"], build(path, *make()[:2]))
        assert first.status == second.status == WANT[case]
        ids = first.all("x-request-id") + second.all("x-request-id")
        assert len(ids) == 2 and ids[0] != ids[1] and all(ids), (first, second)
    if case == "valid":
        assert answers["fast"].keys() == answers["chunked"].keys() == {"status", "event_id"}
        assert answers["fast"]["status"] == answers["chunked"]["status"] == "ok"
    else:
        assert answers["fast"] == answers["chunked"], answers  # the same {"error": ...}, word for word
        assert list(answers["fast"]) == ["error"] and answers["fast"]["error"]


def test_query_string_and_expect_continue_take_the_asgi_route_with_the_same_answers(live):
    path = f"{RZP}/{live['tenant_r']}"
    body, headers, event_id = rzp_webhook(SECRET_R)
    resp = exchange(live["port"], plain(path + "?source=dashboard", body, headers))
    assert_ok(resp, event_id)
    assert len(resp.all("x-request-id")) == 1
    assert stored(live["db"], event_id) == 1

    # Expect: 100-continue: the interim response first, then the body, then the answer.
    body, headers, event_id = rzp_webhook(SECRET_R)
    with Wire(live["port"]) as w:
        w.send(_head("POST", path, {**headers, "Content-Length": str(len(body)), "Expect": "100-continue"}))
        interim = w.read_response(interim=True)
        assert interim.status == 100, interim
        w.send(body)
        assert_ok(w.read_response(), event_id)
    assert stored(live["db"], event_id) == 1

    # Other methods on a webhook path: the router's 405, with one request id.
    resp = exchange(live["port"], get(path))
    assert resp.status == 405, resp
    assert "not allowed" in resp.json()["error"]
    assert len(resp.all("x-request-id")) == 1


# -- 2. keep-alive -----------------------------------------------------------------------------------

def test_keep_alive_connection_answers_each_webhook_in_turn(live):
    path = f"{RZP}/{live['tenant_k']}"
    sent = []
    with Wire(live["port"]) as w:
        for i in range(6):
            body, headers, event_id = rzp_webhook(SECRET_K, amount=10_000 + i)
            rid = f"keepalive-{i}-{uuid.uuid4().hex[:6]}"
            w.send(plain(path, body, {**headers, "X-Request-Id": rid}))
            resp = w.read_response()
            assert_ok(resp, event_id)
            assert resp.header("x-request-id") == rid
            assert resp.header("connection") is None  # kept open
            sent.append(event_id)
        # The connection is still usable for something else, then another webhook.
        w.send(get("/healthz"))
        health = w.read_response()
        assert health.status == 200 and health.json() == {"status": "ok"}
        body, headers, event_id = rzp_webhook(SECRET_K)
        w.send(plain(path, body, headers))
        assert_ok(w.read_response(), event_id)
        sent.append(event_id)
        assert not w.buf  # nothing extra was written
    for event_id in sent:
        assert stored(live["db"], event_id) == 1, event_id


# -- 3. pipelining -----------------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(live):
    path = f"{RZP}/{live['tenant_k']}"
    a_body, a_headers, a_id = rzp_webhook(SECRET_K)
    b_body, b_headers, b_id = rzp_webhook(SECRET_K)
    with Wire(live["port"]) as w:
        w.send(plain(path, a_body, {**a_headers, "X-Request-Id": "pipe-a"}) + get("/healthz")
               + plain(path, b_body, {**b_headers, "X-Request-Id": "pipe-b"}))
        first, second, third = w.read_response(), w.read_response(), w.read_response()
        assert_ok(first, a_id)
        assert first.header("x-request-id") == "pipe-a"
        assert second.status == 200 and second.json() == {"status": "ok"}, second
        assert_ok(third, b_id)
        assert third.header("x-request-id") == "pipe-b"

        # Again on the same connection, led by a webhook refused at once (bad signature, cached
        # tenant) and with the chunked kind in the middle.
        c_body, c_headers, c_id = rzp_webhook(SECRET_K)
        d_body, d_headers, d_id = rzp_webhook(SECRET_K)
        e_body, e_headers, e_id = rzp_webhook(SECRET_K)
        bad = {**e_headers, "X-Razorpay-Signature": "f" * 64}
        w.send(plain(path, e_body, bad) + plain(path, c_body, c_headers) + chunked(path, d_body, d_headers)
               + get("/healthz") + plain(path, c_body, c_headers))
        answers = [w.read_response() for _ in range(5)]
        assert answers[0].status == 401, answers[0]
        assert "signature" in answers[0].json()["error"].lower()
        assert_ok(answers[1], c_id)
        assert_ok(answers[2], d_id)
        assert answers[3].status == 200 and answers[3].json() == {"status": "ok"}, answers[3]
        assert_ok(answers[4], c_id, "duplicate")
        assert not w.buf
    for event_id in (a_id, b_id, c_id, d_id):
        assert stored(live["db"], event_id) == 1, event_id
    assert stored(live["db"], e_id) == 0


def test_request_pipelined_behind_a_refused_webhook_is_not_cut_off(live):
    """uvicorn closes a keep-alive connection after 5 s idle, never one with a request in progress.
    A request pipelined behind a webhook that the fast path refuses at once (bad signature,
    cached tenant), whose body the client is still sending, must get its answer however slowly
    the body comes. The same behind GET /healthz (uvicorn's own way) is the control."""
    path = f"{RZP}/{live['tenant_k']}"
    warm_body, warm_headers, _ = rzp_webhook(SECRET_K)
    assert exchange(live["port"], plain(path, warm_body, warm_headers)).status == 200  # tenant k cached
    conns = {}
    for lead in ("healthz", "refused_webhook"):
        body, headers, event_id = rzp_webhook(SECRET_K)
        head = _head("POST", path, {**headers, "Transfer-Encoding": "chunked"})
        start = head + b"%x\r\n" % 10 + body[:10] + b"\r\n"
        rest = b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n"
        if lead == "healthz":
            first = get("/healthz")
        else:
            e_body, e_headers, _ = rzp_webhook(SECRET_K)
            first = plain(path, e_body, {**e_headers, "X-Razorpay-Signature": "f" * 64})
        w = Wire(live["port"], timeout=10)
        w.send(first + start)
        assert w.read_response().status == (200 if lead == "healthz" else 401)
        conns[lead] = (w, rest, event_id)
    time.sleep(5.5)  # longer than uvicorn's keep-alive timeout (5 s), while the upload is under way
    results = {}
    for lead, (w, rest, _event_id) in conns.items():
        try:
            w.send(rest)
            resp = w.read_response()
            results[lead] = (resp.status, resp.json())
        except (ConnectionError, OSError) as exc:
            results[lead] = ("connection closed", repr(exc))
        finally:
            w.close()
    for lead, (_w, _rest, event_id) in conns.items():
        assert results[lead] == (200, {"status": "ok", "event_id": event_id}), (lead, results)
        assert stored(live["db"], event_id) == 1, lead


# -- 4. Connection: close and HTTP/1.0 ---------------------------------------------------------------

@pytest.mark.parametrize(("version", "extra", "build"), [
    ("1.1", {"Connection": "close"}, plain),
    ("1.0", {}, plain),
    ("1.0", {"Connection": "keep-alive"}, plain),
    ("1.1", {"Connection": "close"}, chunked),
], ids=["http11-close", "http10", "http10-keepalive-header", "http11-close-chunked"])
def test_connection_close_and_http10_close_after_the_answer(live, version, extra, build):
    path = f"{RZP}/{live['tenant_k']}"
    body, headers, event_id = rzp_webhook(SECRET_K)
    request = build(path, body, {**headers, **extra}) if build is chunked else build(path, body, {**headers, **extra}, version)
    with Wire(live["port"]) as w:
        w.send(request)
        resp = w.read_response()
        assert_ok(resp, event_id)
        assert resp.header("connection") == "close", resp
        assert w.closed_by_server(), "the server kept the connection open after connection: close"
    assert stored(live["db"], event_id) == 1


# -- 5. the body limit ---------------------------------------------------------------------------------

def _padded_webhook(secret: str, size: int) -> tuple[bytes, dict[str, str], str]:
    event = webhook_event("payment.captured", account_id="acc_FastPath0001",
                          payment=payment_entity(order_id=razorpay_id("order")))
    event["pad"] = ""
    base = len(json.dumps(event, separators=(",", ":")).encode())
    event["pad"] = "p" * (size - base)
    body, headers = signed_webhook(event, secret)
    assert len(body) == size
    return body, headers, headers["X-Razorpay-Event-Id"]


def test_body_limit_refuses_above_and_accepts_exactly_at_it(live):
    path = f"{RZP}/{live['tenant_k']}"
    for build in (plain, chunked):
        body, headers, event_id = _padded_webhook(SECRET_K, MAX_BODY + 1)
        resp = exchange(live["port"], build(path, body, headers))
        assert resp.status == 413, (build.__name__, resp)
        assert "limit" in resp.json()["error"]
        assert len(resp.all("x-request-id")) == 1
        assert stored(live["db"], event_id) == 0

        body, headers, event_id = _padded_webhook(SECRET_K, MAX_BODY)
        resp = exchange(live["port"], build(path, body, headers))
        assert_ok(resp, event_id)
        assert stored(live["db"], event_id) == 1

    # A Content-Length far above the limit is refused before the body is sent at all.
    body, headers, event_id = rzp_webhook(SECRET_K)
    with Wire(live["port"]) as w:
        w.send(_head("POST", path, {**headers, "Content-Length": str(10 * MAX_BODY)}))
        resp = w.read_response()
        assert resp.status == 413, resp
    time.sleep(0.2)
    assert stored(live["db"], event_id) == 0

    # httpx sees the same.
    body, headers, event_id = _padded_webhook(SECRET_K, MAX_BODY + 1)
    r = httpx.post(live["url"] + path, content=body, headers=headers)
    assert r.status_code == 413 and stored(live["db"], event_id) == 0


# -- 6. proxied requests --------------------------------------------------------------------------------

def test_forwarded_requests_still_work(live):
    path = f"{RZP}/{live['tenant_k']}"
    for proxy in ({"X-Forwarded-For": "203.0.113.7"},
                  {"X-Forwarded-For": "203.0.113.7, 10.0.0.1", "X-Forwarded-Proto": "https"},
                  {"Forwarded": "for=203.0.113.8;proto=https"}):
        body, headers, event_id = rzp_webhook(SECRET_K)
        r = httpx.post(live["url"] + path, content=body, headers={**headers, **proxy})
        assert r.status_code == 200, (proxy, r.text)
        assert r.json() == {"status": "ok", "event_id": event_id}
        assert r.headers.get_list("x-request-id") and len(r.headers.get_list("x-request-id")) == 1
        assert stored(live["db"], event_id) == 1
    # And on a raw keep-alive connection, mixed with plain ones.
    with Wire(live["port"]) as w:
        for proxy in ({}, {"X-Forwarded-For": "198.51.100.9"}, {}):
            body, headers, event_id = rzp_webhook(SECRET_K)
            w.send(plain(path, body, {**headers, **proxy}))
            assert_ok(w.read_response(), event_id)
            assert stored(live["db"], event_id) == 1


# -- 7. first (uncached) and later (cached) requests for a tenant -----------------------------------------

def test_first_and_cached_requests_for_a_tenant_agree(live):
    path = f"{RZP}/{live['tenant_f']}"
    events = []
    with Wire(live["port"]) as w:
        for i in range(4):  # the first waits for the tenant's secrets; the rest use the cache
            body, headers, event_id = rzp_webhook(SECRET_F, amount=20_000 + i)
            w.send(plain(path, body, headers))
            resp = w.read_response()
            assert_ok(resp, event_id)
            events.append((body, headers, event_id))
        # A redelivery of the first (now on the cached way) is a duplicate.
        body, headers, event_id = events[0]
        w.send(plain(path, body, headers))
        assert_ok(w.read_response(), event_id, "duplicate")
        # Refusals agree too: a bad signature on the cached way.
        body, headers, event_id = rzp_webhook(SECRET_R)  # another tenant's secret
        w.send(plain(path, body, headers))
        refused = w.read_response()
        assert refused.status == 401 and "signature" in refused.json()["error"].lower(), refused
    for _body, _headers, event_id in events:
        assert stored(live["db"], event_id) == 1
        assert stored_tenant(live["db"], event_id) == live["tenant_f"]


def test_shiprocket_with_tenant_in_url_first_and_cached(live):
    url = f"/functions/v1/shipping-webhook/{live['tenant_s']}"
    body, event_id = sr_event("AWB-FAST-" + uuid.uuid4().hex[:8].upper())
    with Wire(live["port"]) as w:
        w.send(plain(url, body, {"x-api-key": SR_TOKEN, "Content-Type": "application/json"}))
        assert_ok(w.read_response(), None)  # Shiprocket's answer has no event id
        w.send(plain(url, body, {"x-api-key": SR_TOKEN, "Content-Type": "application/json"}))
        assert_ok(w.read_response(), None, "duplicate")
        w.send(plain(url, body, {"x-api-key": "wrong-token"}))
        assert w.read_response().status == 401
    assert stored(live["db"], event_id, "shipping_webhooks") == 1
    # The other path name and the chunked way agree.
    body2, event_id2 = sr_event("AWB-FAST-" + uuid.uuid4().hex[:8].upper())
    url2 = f"/functions/v1/shiprocket-webhook/{live['tenant_s']}"
    assert_ok(exchange(live["port"], chunked(url2, body2, {"x-api-key": SR_TOKEN})), None)
    assert_ok(exchange(live["port"], plain(url2, body2, {"x-api-key": SR_TOKEN})), None, "duplicate")
    assert stored(live["db"], event_id2, "shipping_webhooks") == 1


# -- 8. a client that goes away mid-body ------------------------------------------------------------------

@pytest.mark.parametrize("tenant", ["tenant_k", "tenant_fresh"])
def test_client_disconnect_mid_body_stores_nothing_and_server_stays_healthy(live, tenant):
    if tenant == "tenant_fresh":  # a tenant the server has not seen: nothing cached
        with psycopg.connect(live["db"], autocommit=True) as c:
            tid = str(c.execute("insert into storeops.tenants (name) values ('Fastpath fresh') returning id").fetchone()[0])
            c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'razorpay_webhook', %s)",
                      (tid, SECRET_K))
    else:
        tid = live[tenant]
    path = f"{RZP}/{tid}"
    # The half that is sent is itself a complete, correctly signed webhook: were a cut-off body
    # taken for the whole one, it would be stored.
    event = {"entity": "event", "event": "payment.captured", "contains": [], "payload": {}, "pad": ""}
    event["pad"] = "h" * (500 - len(json.dumps(event, separators=(",", ":"))))
    half, headers = signed_webhook(event, SECRET_K)
    event_id = headers["X-Razorpay-Event-Id"]
    assert len(half) == 500
    with Wire(live["port"]) as w:
        w.send(_head("POST", path, {**headers, "Content-Length": "1000"}) + half)
        time.sleep(0.1)
    time.sleep(0.3)
    assert stored(live["db"], event_id) == 0
    health = httpx.get(live["url"] + "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    body, headers, event_id = rzp_webhook(SECRET_K)
    resp = exchange(live["port"], plain(path, body, headers))
    assert_ok(resp, event_id)
    assert stored(live["db"], event_id) == 1


def test_an_event_id_too_long_for_storage_is_refused_400_and_its_neighbours_are_stored(live):
    long_id = "evt_" + "x" * 300
    body, headers, _ = rzp_webhook(SECRET_K, event_id=long_id)
    r = httpx.post(f"{live['url']}{RZP}/{live['tenant_k']}", content=body, headers=headers)
    assert r.status_code == 400 and "longer than 255" in r.json()["error"]
    ok_body, ok_headers, ok_id = rzp_webhook(SECRET_K)
    assert httpx.post(f"{live['url']}{RZP}/{live['tenant_k']}", content=ok_body, headers=ok_headers).status_code == 200
    with psycopg.connect(live["db"]) as c:
        ids = {r[0] for r in c.execute("select event_id from storeops.payment_webhooks where event_id in (%s, %s)",
                                       (long_id, ok_id)).fetchall()}
    assert ids == {ok_id}


def test_a_tenant_deleted_while_its_secrets_are_cached_gets_404_not_500(live):
    with psycopg.connect(live["db"], autocommit=True) as c:
        tenant = str(c.execute("insert into storeops.tenants (name) values ('Soon gone') returning id").fetchone()[0])
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'razorpay_webhook', %s)",
                  (tenant, SECRET_K))
    body, headers, _ = rzp_webhook(SECRET_K)
    assert httpx.post(f"{live['url']}{RZP}/{tenant}", content=body, headers=headers).status_code == 200
    with psycopg.connect(live["db"], autocommit=True) as c:
        c.execute("delete from storeops.tenants where id = %s", (tenant,))
    for _ in range(2):  # the first finds the row gone at insert time; the second, the cache dropped
        body, headers, _ = rzp_webhook(SECRET_K)
        r = httpx.post(f"{live['url']}{RZP}/{tenant}", content=body, headers=headers)
        assert r.status_code == 404, r.text
        assert "unknown tenant" in r.json()["error"]
