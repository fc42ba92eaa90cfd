"""A fake Shiprocket API on 127.0.0.1 speaking the documented formats, and webhook payload builders.

Server (`FakeShiprocket`, fixture `shiprocket_server`):
- `POST /v1/external/auth/login` `{"email","password"}` -> 200 `{..., "token": ...}` (400 on bad creds);
- `POST /v1/external/courier/track/awbs` `{"awbs": [...]}` (max 50) -> `{awb: {"tracking_data": ...}}`;
- `GET /v1/external/courier/track/awb/{awb}` -> `{"tracking_data": ...}`;
- `GET /v1/external/channels` -> `{"data": [...]}` (the client's health check);
- any call with a missing, expired or revoked bearer token -> 401.
AWBs without data answer `track_status: 0` with Shiprocket's "no activities" message (HTTP 200).

Builders (reused by the HTTP intake tests and the benchmark): `webhook_payload(...)` builds a
tracking webhook shaped like Shiprocket's official sample; `tracking_data(...)` a tracking API result.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

IST = timezone(timedelta(hours=5, minutes=30))
NO_DATA_MESSAGE = "Aahh! There is no activities found in our DB. Please have some patience it will be updated soon."

# shipment_status_id -> label as Shiprocket writes it in webhooks.
STATUS_LABELS: dict[int, str] = {
    1: "AWB ASSIGNED", 3: "PICKUP GENERATED", 5: "MANIFEST GENERATED", 6: "SHIPPED", 7: "DELIVERED",
    8: "CANCELED", 9: "RTO INITIATED", 10: "RTO DELIVERED", 14: "RTO ACKNOWLEDGED", 17: "OUT FOR DELIVERY",
    18: "IN TRANSIT", 19: "OUT FOR PICKUP", 21: "UNDELIVERED", 38: "REACHED AT DESTINATION HUB",
    40: "RTO NDR", 41: "RTO OFD", 42: "PICKED UP", 45: "CANCELLED BEFORE DISPATCHED", 46: "RTO IN TRANSIT",
}
# Courier scan codes and activities, as in the samples (Delhivery / Xpressbees style).
_COURIER_SCANS: dict[int, tuple[str, str]] = {
    5: ("X-UCI", "Manifested - Manifest uploaded"),
    42: ("X-PPOM", "In Transit - Shipment picked up"),
    6: ("PKD", "Picked Shipment InScan from Manifest"),
    18: ("X-DBL1F", "In Transit - Added to Bag"),
    38: ("RAD", "Reached at Destination Shipment BagOut From Bag"),
    17: ("OFD", "Out for Delivery"),
    7: ("DLVD", "Delivered"),
    21: ("UD", "Consignee unavailable"),
    9: ("RT", "RTO Initiated"),
    46: ("RT-IT", "RTO In Transit"),
    10: ("RTD", "RTO Delivered to shipper"),
}


def ist_webhook_time(at: datetime) -> str:
    """`current_timestamp` format: "DD MM YYYY HH:mm:ss" in IST."""
    return at.astimezone(IST).strftime("%d %m %Y %H:%M:%S")


def ist_scan_time(at: datetime) -> str:
    """Scan / API date format: "YYYY-MM-DD HH:mm:ss" in IST."""
    return at.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S")


def scan(code: int | None, at: datetime, location: str = "Chomu_SamodRd_D (Rajasthan)",
         activity: str | None = None, courier_status: str | None = None) -> dict[str, Any]:
    """One entry of `scans[]` / `shipment_track_activities[]`; code None gives an "NA" scan."""
    default_status, default_activity = _COURIER_SCANS.get(code or -1, ("X-DBL1F", "In Transit - Added to Bag"))
    return {
        "date": ist_scan_time(at),
        "status": courier_status or default_status,
        "activity": activity or default_activity,
        "location": location,
        "sr-status": str(code) if code is not None else "NA",
        "sr-status-label": STATUS_LABELS.get(code, "NA") if code is not None else "NA",
    }


def webhook_payload(awb: str, status_id: int, at: datetime | None = None, *, label: str | None = None,
                    scans: list[dict[str, Any]] | None = None, is_return: bool = False,
                    sr_order_id: int | str = 348456385, order_id: str = "1373900_150876814",
                    courier_name: str = "Delhivery Surface", timestamp_format: str = "dmy",
                    current_status_id: int | None = None) -> dict[str, Any]:
    """A Shiprocket tracking webhook body shaped like the official sample.

    `timestamp_format`: "dmy" gives "23 05 2023 11:43:52" (what Shiprocket sends), "iso" gives
    "2023-05-23 11:43:52". Without `scans`, the event's own scan plus a manifest scan are included.
    """
    at = at or datetime.now(UTC)
    label = label or STATUS_LABELS.get(status_id, "UNKNOWN STATUS")
    if scans is None:
        scans = [scan(5, at - timedelta(days=2)), scan(status_id, at)]
    stamp = ist_webhook_time(at) if timestamp_format == "dmy" else ist_scan_time(at)
    return {
        "awb": awb,
        "courier_name": courier_name,
        "current_status": label,
        "current_status_id": current_status_id if current_status_id is not None else status_id + 2,
        "shipment_status": label,
        "shipment_status_id": status_id,
        "current_timestamp": stamp,
        "order_id": order_id,
        "sr_order_id": sr_order_id,
        "awb_assigned_date": ist_scan_time(at - timedelta(days=4)),
        "pickup_scheduled_date": ist_scan_time(at - timedelta(days=4)),
        "etd": ist_scan_time(at + timedelta(days=2)),
        "scans": scans,
        "is_return": 1 if is_return else 0,
        "channel_id": 3422553,
        "pod_status": "OTP Based Delivery",
        "pod": "Not Available",
        "qc_image": "",
        "qc_failure_reason": "",
    }


def tracking_data(awb: str, status_id: int, activities: list[dict[str, Any]], *,
                  courier_name: str = "Xpressbees Surface", sr_order_id: int = 237157589,
                  delivered_at: datetime | None = None) -> dict[str, Any]:
    """A tracking API `tracking_data` object (track_status 1), activities newest first as Shiprocket sends."""
    return {
        "track_status": 1,
        "shipment_status": status_id,
        "shipment_track": [{
            "id": 236612717, "awb_code": awb, "courier_company_id": 51, "shipment_id": 236612717,
            "order_id": sr_order_id, "pickup_date": None,
            "delivered_date": ist_scan_time(delivered_at) if delivered_at else None,
            "weight": "0.30", "packages": 1,
            "current_status": STATUS_LABELS.get(status_id, "Unknown").title(),
            "delivered_to": "Chittoor", "destination": "Chittoor", "consignee_name": "", "origin": "Banglore",
            "courier_agent_details": None, "courier_name": courier_name, "edd": None, "pod": "Available",
            "pod_status": "",
        }],
        "shipment_track_activities": sorted(activities, key=lambda a: a["date"], reverse=True),
        "track_url": f"https://shiprocket.co//tracking/{awb}",
        "etd": "2022-07-20 19:28:00",
        "qc_response": {"qc_image": "", "qc_failed_reason": ""},
    }


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # not the default 5: concurrent clients must not see dropped connections


class FakeShiprocket:
    """The fake API's state; tests change it directly (tracking, tokens, injected failures)."""

    def __init__(self, email: str = "api-user@store.test", password: str = "api-password",
                 token_ttl: float = 10 * 24 * 3600) -> None:
        self.email = email
        self.password = password
        self.token_ttl = token_ttl
        self.accounts: dict[str, str] = {email: password}  # API users: email -> password
        self.tracking: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str] = {}  # AWB -> the only account that may track it (else any)
        self.tokens: dict[str, tuple[float, str]] = {}  # token -> (expiry, account email)
        self.tracked_by: list[tuple[str, list[str]]] = []  # (account email, AWBs asked), per tracking call
        self.logins = 0
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.failures: list[tuple[int, dict[str, Any], dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeShiprocket:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-shiprocket", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def revoke_tokens(self) -> None:
        """Every issued token is now rejected with 401 (as after expiry or a logout)."""
        with self._lock:
            self.tokens.clear()

    def fail_next(self, status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> None:
        """The next authenticated API call answers `status` with `body`."""
        self.failures.append((status, body or {"message": f"HTTP {status}", "status_code": status}, headers or {}))

    def add_account(self, email: str, password: str) -> None:
        """Another Shiprocket account (a store with its own): its own login and token."""
        self.accounts[email] = password

    def set_tracking(self, awb: str, data: dict[str, Any], account: str | None = None) -> None:
        """Tracking for `awb`; with `account`, only that account's token sees it (as Shiprocket shows
        an account its own shipments), any other gets "no data"."""
        self.tracking[awb] = data
        if account is not None:
            self.owners[awb] = account

    def calls(self, path: str) -> list[dict[str, Any] | None]:
        return [body for _method, p, body in self.requests if p == path]

    # -- request handling ----------------------------------------------------------------------
    def _login(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        email = body.get("email")
        if not isinstance(email, str) or self.accounts.get(email) != body.get("password"):
            return 400, {"message": "Invalid email and password combination", "status_code": 400}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.logins += 1
            self.tokens[token] = (time.monotonic() + self.token_ttl, email)
        return 200, {"id": 1, "first_name": "API", "last_name": "User", "email": email,
                     "company_id": 12345, "created_at": "2023-05-19 11:59:16", "token": token}

    def _account(self, header: str | None) -> str | None:
        """The account a bearer token was issued to, None if it is missing, unknown or expired."""
        if not header or not header.startswith("Bearer "):
            return None
        with self._lock:
            found = self.tokens.get(header[len("Bearer "):])
        return found[1] if found is not None and found[0] > time.monotonic() else None

    def _track(self, awb: str, account: str) -> dict[str, Any]:
        data = self.tracking.get(awb)
        if data is None or self.owners.get(awb, account) != account:
            return {"tracking_data": {"track_status": 0, "error": NO_DATA_MESSAGE}}
        return {"tracking_data": data}

    def handle(self, method: str, path: str, headers: Any, body: dict[str, Any] | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.requests.append((method, path, body))
        if method == "POST" and path == "/v1/external/auth/login":
            status, payload = self._login(body or {})
            return status, payload, {}
        account = self._account(headers.get("Authorization"))
        if account is None:
            return 401, {"message": "Unauthenticated.", "status_code": 401}, {}
        if self.failures:
            return self.failures.pop(0)
        if method == "POST" and path == "/v1/external/courier/track/awbs":
            awbs = (body or {}).get("awbs")
            if not isinstance(awbs, list) or not awbs:
                return 422, {"message": "The awbs field is required.", "status_code": 422}, {}
            if len(awbs) > 50:
                return 422, {"message": "Maximum 50 AWBs are allowed.", "status_code": 422}, {}
            self.tracked_by.append((account, [str(a) for a in awbs]))
            return 200, {str(a): self._track(str(a), account) for a in awbs}, {}
        if method == "GET" and path.startswith("/v1/external/courier/track/awb/"):
            return 200, self._track(path.rsplit("/", 1)[1], account), {}
        if method == "GET" and path == "/v1/external/channels":
            return 200, {"data": [{"id": 3422553, "name": "CUSTOM", "status": "Active"}]}, {}
        return 404, {"message": "404 Not Found", "status_code": 404}, {}


def _handler(fake: FakeShiprocket) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            return

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            status, payload, extra = fake.handle(self.command, self.path.split("?", 1)[0], self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler


@pytest.fixture
def shiprocket_server() -> Iterator[FakeShiprocket]:
    """A started fake Shiprocket API; `.url` is its base URL, `.email` / `.password` the API user."""
    fake = FakeShiprocket().start()
    try:
        yield fake
    finally:
        fake.stop()
