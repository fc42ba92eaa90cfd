"""Shiprocket: webhook token check, webhook dedup key and type, and the tracking API client.

Pure I/O: nothing here touches the database. Facts used (see the Shiprocket reference):
- webhooks carry a static token in `x-api-key` (no signature, no event id);
- `POST /v1/external/auth/login` with an API user's email/password returns `{"token": ...}`,
  valid for 10 days, sent as `Authorization: Bearer <token>`;
- `POST /v1/external/courier/track/awbs` with `{"awbs": [...]}` (at most 50) returns an object
  keyed by AWB, each `{"tracking_data": {...}}`; `track_status: 0` in a 200 means "no scans yet".
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx

LOGIN_PATH = "/v1/external/auth/login"
TRACK_AWBS_PATH = "/v1/external/courier/track/awbs"
PING_PATH = "/v1/external/channels"
# Shiprocket documents 10 days; refresh a day early, and on any 401.
TOKEN_TTL_SECONDS = 9 * 24 * 3600.0
TRACK_BATCH_SIZE = 50

__all__ = [
    "ShiprocketClient",
    "ShiprocketError",
    "event_key",
    "poll_result_to_event",
    "verify_token",
    "webhook_type",
]


class ShiprocketError(Exception):
    """A Shiprocket call that did not succeed. `retryable`: try again later (429, 5xx, network)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after


def verify_token(provided: str | None, tokens: Sequence[str]) -> bool:
    """True when `provided` (the x-api-key header) equals one of `tokens`, compared in constant time.

    Every token is compared (no early exit), so timing does not tell which one nearly matched.
    """
    if not provided:
        return False
    given = provided.encode()
    ok = False
    for token in tokens:
        if token and hmac.compare_digest(given, token.encode()):
            ok = True
    return ok


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def event_key(payload: dict[str, Any]) -> str:
    """The dedup key of a tracking webhook: `awb|shipment_status_id|current_timestamp`.

    Shiprocket sends no event id; these three identify one tracking event (the reference, §9).
    Readable on purpose (operators grep for an AWB). Without an AWB or a timestamp the key falls
    back to a hash of the whole body, so distinct events are never merged.
    """
    awb = _scalar(payload.get("awb"))
    status_id = _scalar(payload.get("shipment_status_id"))
    stamp = " ".join(_scalar(payload.get("current_timestamp")).split())
    if awb and stamp:
        return f"{awb}|{status_id}|{stamp}"
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def webhook_type(payload: dict[str, Any]) -> str:
    """The event's status as a word: "IN TRANSIT" -> "in_transit"; "unknown" when there is none."""
    for field in ("shipment_status", "current_status"):
        raw = payload.get(field)
        if isinstance(raw, str):
            word = re.sub(r"[^a-z0-9]+", "_", raw.strip().lower()).strip("_")
            if word and word != "na":
                return word
    return "unknown"


def poll_result_to_event(awb: str, tracking: dict[str, Any]) -> dict[str, Any] | None:
    """A polled `tracking_data` in the webhook's shape, for storeops.apply_tracking_event.

    None when Shiprocket has no data yet (`track_status: 0`) or the shape is unusable.
    """
    data = tracking.get("tracking_data") if "tracking_data" in tracking else tracking
    if not isinstance(data, dict) or data.get("track_status") in (0, "0", None):
        return None
    tracks = data.get("shipment_track") or []
    first = tracks[0] if tracks and isinstance(tracks[0], dict) else {}
    activities = [a for a in (data.get("shipment_track_activities") or []) if isinstance(a, dict)]
    status_id = data.get("shipment_status")
    stamp = None
    if status_id in (7, "7") and first.get("delivered_date"):
        stamp = first["delivered_date"]
    elif activities:
        dated = [a["date"] for a in activities if isinstance(a.get("date"), str)]
        # "YYYY-MM-DD HH:mm:ss" sorts as text.
        stamp = max(dated) if dated else None
    event: dict[str, Any] = {
        "awb": awb,
        "shipment_status_id": status_id,
        "shipment_status": first.get("current_status"),
        "current_status": first.get("current_status"),
        "current_timestamp": stamp,
        "courier_name": first.get("courier_name"),
        "scans": activities,
    }
    if first.get("order_id") is not None:
        event["sr_order_id"] = first.get("order_id")
    return event


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    text = response.text.strip()
    return text[:200] if text else response.reason_phrase


class ShiprocketClient:
    """Shiprocket's external API with a cached bearer token (refreshed before expiry and on 401)."""

    def __init__(self, base_url: str, email: str, password: str, http: httpx.AsyncClient | None = None,
                 timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.email = email
        self.password = password
        self.timeout = timeout
        self._http = http
        self._owns_http = http is None
        self._token: str | None = None
        self._token_expires = 0.0
        self._login_lock = asyncio.Lock()

    async def __aenter__(self) -> ShiprocketClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        return self._http

    async def _send(self, method: str, path: str, json_body: Any = None,
                    token: str | None = None) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return await self.http.request(method, self.base_url + path, json=json_body, headers=headers,
                                           timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise ShiprocketError(f"Shiprocket did not answer {method} {path} within {self.timeout:g}s",
                                  retryable=True) from exc
        except httpx.HTTPError as exc:
            raise ShiprocketError(f"could not reach Shiprocket at {self.base_url}: {exc}", retryable=True) from exc

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status == 429 or status >= 500
        raise ShiprocketError(f"Shiprocket {what} failed with HTTP {status}: {_error_message(response)}",
                              status=status, retryable=retryable, retry_after=_retry_after(response))

    async def _login(self) -> str:
        response = await self._send("POST", LOGIN_PATH, {"email": self.email, "password": self.password})
        if response.status_code in (400, 401, 403, 422):
            raise ShiprocketError(
                f"Shiprocket rejected the API user login (HTTP {response.status_code}): "
                f"{_error_message(response)}; check the password of API user {self.email} "
                "(SHIPROCKET_PASSWORD for the platform's, else the tenant's shiprocket_api secret)",
                status=response.status_code)
        self._raise_for(response, "login")
        try:
            token = response.json().get("token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise ShiprocketError("Shiprocket login answered without a token", status=response.status_code,
                                  retryable=True)
        self._token = token
        self._token_expires = time.monotonic() + TOKEN_TTL_SECONDS
        return token

    async def _valid_token(self, stale: str | None = None) -> str:
        async with self._login_lock:
            # Another task may have refreshed while this one waited.
            if self._token is not None and self._token != stale and time.monotonic() < self._token_expires:
                return self._token
            return await self._login()

    def invalidate_token(self) -> None:
        """Forget the cached token (the next call logs in again)."""
        self._token = None
        self._token_expires = 0.0

    async def _authed(self, method: str, path: str, json_body: Any = None) -> httpx.Response:
        token = await self._valid_token()
        response = await self._send(method, path, json_body, token)
        if response.status_code == 401:
            # Expired or revoked before our clock said so: log in again and retry once.
            token = await self._valid_token(stale=token)
            response = await self._send(method, path, json_body, token)
        return response

    async def track_awbs(self, awbs: list[str]) -> dict[str, dict[str, Any]]:
        """Tracking for each AWB: `{awb: {"tracking_data": {...}}}`, in batches of 50.

        AWBs Shiprocket does not return are absent. `track_status: 0` entries are returned as they
        are (no data yet); they are not errors.
        """
        result: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(str(a).strip() for a in awbs if str(a).strip()))
        for start in range(0, len(unique), TRACK_BATCH_SIZE):
            batch = unique[start:start + TRACK_BATCH_SIZE]
            response = await self._authed("POST", TRACK_AWBS_PATH, {"awbs": batch})
            self._raise_for(response, "tracking")
            try:
                body = response.json()
            except ValueError as exc:
                raise ShiprocketError("Shiprocket tracking answered with something that is not JSON",
                                      status=response.status_code, retryable=True) from exc
            # Documented as an object keyed by AWB; some accounts get a list of such objects.
            items = body if isinstance(body, list) else [body]
            for item in items:
                if not isinstance(item, dict):
                    continue
                for awb, tracking in item.items():
                    if isinstance(tracking, dict):
                        result[str(awb)] = tracking
        return result

    async def ping(self) -> float:
        """Logs in if needed and makes one cheap authenticated call; returns the round trip in ms."""
        started = time.perf_counter()
        response = await self._authed("GET", PING_PATH)
        self._raise_for(response, "health check")
        return (time.perf_counter() - started) * 1000.0
