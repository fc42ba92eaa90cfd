"""A fake Razorpay API on loopback, plus builders for realistic signed Razorpay webhooks.

The server (`FakeRazorpay`, fixture `razorpay_server`) is a real HTTP server in a thread speaking
Razorpay's documented formats (../shared/reference/razorpay_shiprocket.md):

- HTTP Basic auth with key_id:key_secret on every call (401 with Razorpay's error shape otherwise);
- `POST /v1/payments/{id}/refund` with `{"amount": paise, "notes", "receipt", "speed"}` honouring
  `X-Refund-Idempotency`: the same key and body give back the same refund, a different body under a
  used key is a 400, and a second request while the first is still in flight is a 409;
- `GET /v1/payments?from&to&count&skip` (count <= 100, newest first) and `GET /v1/payments/{id}`;
- `GET /v1/refunds/{id}` (a refund made here; `settle_refund` moves a pending one on, as Razorpay
  does later for normal and instant refunds);
- errors as `{"error": {"code": "BAD_REQUEST_ERROR", "description": ..., ...}}`.

Fault injection applies to the next N requests (optionally only those whose path contains a
string): `fail_next` (5xx, optionally after the refund was made), `delay_next` (answer late, after
processing, so a client that timed out retries a refund Razorpay already made), `rate_limit_next`
(429 with Retry-After) and `malformed_next` (a 200 with broken JSON). `refunds` is every refund the
server created, so a test can assert "exactly one refund at Razorpay".

Webhook builders (`payment_entity`, `refund_entity`, `order_entity`, `webhook_event`,
`signed_webhook`) make bodies in Razorpay's documented shape: amounts in paise, `account_id`,
unix `created_at`, `notes` as `[]` when empty. The runner's tests and the benchmark reuse them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

_ALNUM = string.ascii_letters + string.digits
_IDEMPOTENCY_KEY_CHARS = set(_ALNUM + "_-")


def razorpay_id(prefix: str) -> str:
    """An id in Razorpay's shape: prefix_ + 14 base62 characters (pay_, order_, rfnd_, acc_, evt_)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALNUM) for _ in range(14))


# -- webhook and entity builders -------------------------------------------------------------------------

def payment_entity(payment_id: str | None = None, *, amount: int = 50_000, currency: str = "INR",
                   status: str = "captured", order_id: str | None = None, method: str = "upi",
                   created_at: int | None = None, amount_refunded: int = 0, refund_status: str | None = None,
                   notes: Mapping[str, str] | None = None, **extra: Any) -> dict:
    """A payment entity as in payment.* webhooks and GET /v1/payments (status created, authorized,
    captured, refunded or failed)."""
    failed = status == "failed"
    captured = status in ("captured", "refunded")
    entity: dict[str, Any] = {
        "id": payment_id or razorpay_id("pay"), "entity": "payment", "amount": amount, "currency": currency,
        "base_amount": amount, "status": status, "order_id": order_id, "invoice_id": None, "international": False,
        "method": method, "amount_refunded": amount_refunded, "amount_transferred": 0,
        "refund_status": refund_status, "captured": captured, "description": None, "card_id": None,
        "bank": None, "wallet": None, "vpa": "gaurav.kumar@upi" if method == "upi" else None,
        "email": "gaurav.kumar@example.com", "contact": "+919876543210", "notes": dict(notes) if notes else [],
        "fee": 2 * amount // 100 if captured else None, "tax": 0 if captured else None,
        "error_code": "BAD_REQUEST_ERROR" if failed else None,
        "error_description": "Payment failed" if failed else None,
        "error_source": "bank" if failed else None, "error_step": "payment_authorization" if failed else None,
        "error_reason": "payment_failed" if failed else None,
        "acquirer_data": {"rrn": "0125836177"} if method == "upi" else {"bank_transaction_id": "0125836177"},
        "created_at": created_at if created_at is not None else int(time.time()),
    }
    if method == "upi":
        entity["upi"] = {"payer_account_type": "bank_account", "vpa": "gaurav.kumar@upi", "flow": "intent"}
    entity.update(extra)
    return entity


def refund_entity(refund_id: str | None = None, *, payment_id: str, amount: int, currency: str = "INR",
                  status: str = "processed", notes: Mapping[str, str] | None = None, receipt: str | None = None,
                  created_at: int | None = None, speed_requested: str = "normal") -> dict:
    """A refund entity as in refund.* webhooks and the create-refund response."""
    return {
        "id": refund_id or razorpay_id("rfnd"), "entity": "refund", "amount": amount, "currency": currency,
        "payment_id": payment_id, "notes": dict(notes) if notes else [], "receipt": receipt,
        "acquirer_data": {"arn": None}, "created_at": created_at if created_at is not None else int(time.time()),
        "batch_id": None, "status": status, "speed_processed": "normal", "speed_requested": speed_requested,
    }


def order_entity(order_id: str, *, amount: int, amount_paid: int | None = None, currency: str = "INR",
                 status: str = "paid", attempts: int = 1, created_at: int | None = None) -> dict:
    """An order entity as in order.paid."""
    paid = amount if amount_paid is None else amount_paid
    return {
        "id": order_id, "entity": "order", "amount": amount, "amount_paid": paid, "amount_due": amount - paid,
        "currency": currency, "receipt": "rcptid #1", "offer_id": None, "status": status, "attempts": attempts,
        "notes": [], "created_at": created_at if created_at is not None else int(time.time()) - 60,
    }


def webhook_event(event: str, *, payment: dict | None = None, refund: dict | None = None,
                  order: dict | None = None, account_id: str = "acc_BFQ7uQEaa7j2z7",
                  created_at: int | None = None) -> dict:
    """The webhook envelope: entity event, account_id, event, contains, payload.<name>.entity, created_at."""
    payload: dict[str, Any] = {}
    for name, entity in (("refund", refund), ("payment", payment), ("order", order)):
        if entity is not None:
            payload[name] = {"entity": entity}
    return {
        "entity": "event", "account_id": account_id, "event": event, "contains": list(payload),
        "payload": payload, "created_at": created_at if created_at is not None else int(time.time()),
    }


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_webhook(event: dict, secret: str, event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers Razorpay would POST: X-Razorpay-Signature (hex HMAC-SHA256 of the
    exact bytes) and x-razorpay-event-id."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Razorpay-Signature": sign(body, secret),
        "X-Razorpay-Event-Id": event_id or razorpay_id("evt"),
        "User-Agent": "Razorpay-Webhook/v1",
    }
    return body, headers


# -- the server --------------------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str  # error, delay, rate_limit, malformed
    remaining: int
    path: str | None = None
    status: int = 500
    seconds: float = 0.0
    retry_after: float = 1.0
    after_processing: bool = False


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class _Idempotent:
    body: dict
    refund: dict


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # not the default 5: concurrent clients must not see dropped connections


class FakeRazorpay:
    """The fake Razorpay API. Thread-safe; start()/stop() or use as a context manager."""

    def __init__(self, key_id: str = "rzp_test_storeops01", key_secret: str = "fake_key_secret_0123456789",
                 refund_status: str = "processed", account_id: str = "acc_BFQ7uQEaa7j2z7") -> None:
        self.key_id = key_id
        self.key_secret = key_secret
        self.refund_status = refund_status
        self.account_id = account_id
        self.payments: dict[str, dict] = {}
        self.refunds: list[dict] = []
        self.events: list[dict] = []  # refund.* webhooks Razorpay would send for refunds made here
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._idempotency: dict[str, _Idempotent] = {}
        self._in_flight: set[str] = set()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> FakeRazorpay:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeRazorpay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeRazorpay is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # state
    def add_payment(self, payment_id: str | None = None, **fields: Any) -> dict:
        """Store a payment (see payment_entity for fields) and return its entity."""
        entity = payment_entity(payment_id, **fields)
        with self._lock:
            self.payments[entity["id"]] = entity
        return entity

    def refunds_for(self, payment_id: str) -> list[dict]:
        with self._lock:
            return [r for r in self.refunds if r["payment_id"] == payment_id]

    def settle_refund(self, refund_id: str, status: str = "processed") -> dict:
        """Razorpay finishing a pending refund made here (processed or failed); returns its entity.
        A failed refund gives its amount back to the payment. No webhook is queued for it."""
        assert status in ("processed", "failed"), status
        with self._lock:
            refund = next(r for r in self.refunds if r["id"] == refund_id)
            refund["status"] = status
            if status == "failed":
                payment = self.payments[refund["payment_id"]]
                payment["amount_refunded"] -= refund["amount"]
                payment["refund_status"] = "partial" if payment["amount_refunded"] else None
                if payment["status"] == "refunded":
                    payment["status"] = "captured"
            return dict(refund)

    def clear_faults(self) -> None:
        """Forget every fault not yet used."""
        with self._lock:
            self._faults.clear()

    def requests_to(self, method: str, path_contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == method and path_contains in r.path]

    # fault injection
    def fail_next(self, n: int = 1, status: int = 500, *, after_processing: bool = False, path: str | None = None) -> None:
        """The next n requests answer `status` (with Razorpay's error body); with after_processing a
        refund is made first, as when Razorpay fails after committing."""
        self._add(Fault("error", n, path, status=status, after_processing=after_processing))

    def delay_next(self, n: int = 1, seconds: float = 1.0, *, after_processing: bool = True,
                   path: str | None = None) -> None:
        """The next n requests answer only after `seconds`; by default the work is done first, so a
        client that gave up has still made the refund."""
        self._add(Fault("delay", n, path, seconds=seconds, after_processing=after_processing))

    def rate_limit_next(self, n: int = 1, retry_after: float = 1.0, path: str | None = None) -> None:
        """The next n requests answer 429 Too Many Requests with Retry-After, doing nothing."""
        self._add(Fault("rate_limit", n, path, status=429, retry_after=retry_after))

    def malformed_next(self, n: int = 1, *, after_processing: bool = True, path: str | None = None) -> None:
        """The next n requests answer 200 with a truncated JSON body (after doing the work)."""
        self._add(Fault("malformed", n, path, after_processing=after_processing))

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and (fault.path is None or fault.path in path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # API behaviour: each returns (status, body dict) ------------------------------------------------
    def _create_refund(self, payment_id: str, body: Any, key: str | None) -> tuple[int, dict]:
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object")
        extra = sorted(set(body) - {"amount", "speed", "notes", "receipt"})
        if extra:
            return _error(400, f"{', '.join(extra)} is/are not required and should not be sent", field=extra[0])
        if key is not None and (len(key) < 10 or not set(key) <= _IDEMPOTENCY_KEY_CHARS):
            return _error(400, "The idempotency key must be at least 10 characters of A-Z, a-z, 0-9, _ and -")
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return _error(400, "The id provided does not exist", field="id")
            amount = body.get("amount", payment["amount"] - payment["amount_refunded"])
            if isinstance(amount, bool) or not isinstance(amount, int):
                return _error(400, "The amount must be an integer.", field="amount")
            if key is not None and key in self._idempotency:
                entry = self._idempotency[key]
                if entry.body != body:
                    return _error(400, "Different request with the same idempotency key has already been processed")
                return 200, entry.refund
            if payment["status"] not in ("captured", "refunded"):
                return _error(400, "Only captured payments can be refunded")
            if payment["amount_refunded"] >= payment["amount"]:
                return _error(400, "The payment has been fully refunded already")
            if amount < 100:
                return _error(400, "The amount must be at least INR 1.00", field="amount")
            if amount > payment["amount"] - payment["amount_refunded"]:
                return _error(400, "The refund amount provided is greater than amount captured", field="amount")
            refund = refund_entity(payment_id=payment_id, amount=amount, currency=payment["currency"],
                                   status=self.refund_status, notes=body.get("notes") or None,
                                   receipt=body.get("receipt"), speed_requested=body.get("speed", "normal"))
            self.refunds.append(refund)
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] >= payment["amount"]
            payment["refund_status"] = "full" if full else "partial"
            if full:
                payment["status"] = "refunded"
            if key is not None:
                self._idempotency[key] = _Idempotent(body=body, refund=refund)
            for event in ("refund.created", "refund.processed") if refund["status"] == "processed" else ("refund.created",):
                self.events.append(webhook_event(event, refund=dict(refund), payment=dict(payment),
                                                 account_id=self.account_id))
            return 200, refund

    def _list_payments(self, query: dict[str, list[str]]) -> tuple[int, dict]:
        try:
            count = int(query.get("count", ["10"])[0])
            skip = int(query.get("skip", ["0"])[0])
            start = int(query["from"][0]) if "from" in query else None
            end = int(query["to"][0]) if "to" in query else None
        except ValueError:
            return _error(400, "from, to, count and skip must be integers")
        if count > 100:
            return _error(400, "The count may not be greater than 100.", field="count")
        if count < 1 or skip < 0:
            return _error(400, "The count must be at least 1.", field="count")
        with self._lock:
            items = [p for p in self.payments.values()
                     if (start is None or p["created_at"] >= start) and (end is None or p["created_at"] <= end)]
        items.sort(key=lambda p: (p["created_at"], p["id"]), reverse=True)
        page = [dict(p) for p in items[skip:skip + count]]
        return 200, {"entity": "collection", "count": len(page), "items": page}

    def _handle(self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str],
                body: bytes) -> tuple[int, dict | bytes, dict[str, str]]:
        if not self._authorized(headers.get("Authorization", "")):
            status, payload = _error(401, "The api key provided is invalid")
            return status, payload, {}
        fault = self._take_fault(path)
        if fault is not None and fault.kind == "rate_limit":
            status, payload = _error(429, "Too many requests")
            return status, payload, {"Retry-After": f"{fault.retry_after:g}"}
        # While a refund request is being worked on, another with the same key gets a 409.
        key = headers.get("X-Refund-Idempotency") if method == "POST" and path.endswith("/refund") else None
        if key is not None:
            with self._lock:
                if key in self._in_flight:
                    status, payload = _error(409, "A request with the same idempotency key is being processed")
                    return status, payload, {}
                self._in_flight.add(key)
        try:
            if fault is not None and not fault.after_processing:
                if fault.kind == "delay":
                    time.sleep(fault.seconds)
                elif fault.kind == "error":
                    status, payload = _server_error(fault.status)
                    return status, payload, {}
                elif fault.kind == "malformed":
                    return 200, b'{"entity": "collection", "items": [', {}
            status, payload = self._route(method, path, query, headers, body)
        finally:
            if key is not None:
                with self._lock:
                    self._in_flight.discard(key)

        if fault is not None and fault.after_processing:
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "error":
                status, payload = _server_error(fault.status)
            elif fault.kind == "malformed":
                text = json.dumps(payload).encode()
                return 200, text[: max(len(text) // 2, 1)], {}
        return status, payload, {}

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str],
               body: bytes) -> tuple[int, dict]:
        parts = [p for p in path.split("/") if p]
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "payments"] and parts[3] == "refund":
            try:
                parsed = json.loads(body or b"{}")
            except ValueError:
                return _error(400, "The request body is not valid JSON")
            return self._create_refund(parts[2], parsed, headers.get("X-Refund-Idempotency"))
        if method == "GET" and parts == ["v1", "payments"]:
            return self._list_payments(query)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "refunds"]:
            with self._lock:
                refund = next((dict(r) for r in self.refunds if r["id"] == parts[2]), None)
            if refund is None:
                return _error(400, "The id provided does not exist", field="id")
            return 200, refund
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "payments"]:
            with self._lock:
                payment = self.payments.get(parts[2])
            if payment is None:
                return _error(400, "The id provided does not exist", field="id")
            return 200, dict(payment)
        return _error(404, "The requested URL was not found on the server.", code="NOT_FOUND")

    def _authorized(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(decoded, f"{self.key_id}:{self.key_secret}")


def _server_error(status: int) -> tuple[int, dict]:
    return _error(status, "We are facing some trouble completing your request at the moment. Please try again "
                  "shortly.", code="SERVER_ERROR")


def _error(status: int, description: str, code: str = "BAD_REQUEST_ERROR", field: str | None = None) -> tuple[int, dict]:
    return status, {"error": {"code": code, "description": description, "field": field, "source": "business",
                              "step": "payment_initiation", "reason": "input_validation_failed", "metadata": {}}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeRazorpay
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items()}
        # Header names are case-insensitive: look them up through the Message object.
        lookup = _Headers(self.headers)
        record = RecordedRequest(method, split.path, parse_qs(split.query), headers, body)
        with self.fake._lock:
            self.fake.requests.append(record)
        status, payload, extra = self.fake._handle(method, split.path, record.query, lookup, body)
        record.status = status
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")


class _Headers(Mapping[str, str]):
    def __init__(self, message: Any) -> None:
        self._message = message

    def __getitem__(self, name: str) -> str:
        value = self._message.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        return self._message.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._message.keys())

    def __len__(self) -> int:
        return len(self._message.keys())


@pytest.fixture
def razorpay_server() -> Iterator[FakeRazorpay]:
    """A started FakeRazorpay on 127.0.0.1 (see the module docstring); stopped after the test."""
    with FakeRazorpay() as server:
        yield server


def store_webhook(conn: Any, event: dict, tenant_id: Any = None, event_id: str | None = None) -> Any:
    """Store a webhook body the way the runner's intake does (psycopg connection, sync): INSERT ...
    ON CONFLICT (event_id) DO NOTHING. Returns the new row's id, or None for a duplicate delivery."""
    from psycopg.types.json import Jsonb

    row = conn.execute(
        "insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload) "
        "values (%(tenant_id)s, %(event_id)s, %(webhook_type)s, %(payload)s) "
        "on conflict (event_id) do nothing returning id",
        {"tenant_id": tenant_id, "event_id": event_id or razorpay_id("evt"), "webhook_type": event["event"],
         "payload": Jsonb(event)},
    ).fetchone()
    return row[0] if row else None
