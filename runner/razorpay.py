"""Razorpay: webhook signatures, amounts, and the REST calls the runner makes (refunds, payment
listing for missed-webhook recovery, a health ping). Pure I/O: nothing here touches the database.

Facts (see ../shared/reference/razorpay_shiprocket.md):
- `X-Razorpay-Signature` is the lowercase hex HMAC-SHA256 of the raw request body keyed with the
  webhook secret (not the API key secret). During a rotation two secrets may be live.
- API calls use HTTP Basic auth `key_id:key_secret`. Amounts are integers in paise.
- `POST /v1/payments/{id}/refund` deduplicates on `X-Refund-Idempotency` (10+ chars of
  `[A-Za-z0-9_-]`); a retry must send the identical body; 409 means the first request with that key
  is still in flight.
- `GET /v1/payments?from&to&count&skip` pages with count <= 100.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_-]{10,64}$")
_ENTITY_ID = re.compile(r"^[a-z]+_[A-Za-z0-9]+$")
MAX_PAGE = 100


class RazorpayError(Exception):
    """A failed Razorpay call. `retryable` says whether sending the same request again later can
    succeed (5xx, timeouts, connection errors, 429, 409 in-flight, malformed JSON); `retry_after`
    is Razorpay's Retry-After in seconds when it sent one. `status` is the HTTP status (None when
    no response came back); `code` is Razorpay's error code (e.g. BAD_REQUEST_ERROR)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code

    def __str__(self) -> str:
        return self.message


# -- webhook signatures ------------------------------------------------------------------------------

def sign(body: bytes, secret: str) -> str:
    """The `X-Razorpay-Signature` Razorpay sends for `body`: hex HMAC-SHA256 keyed with `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, signature: str, secrets: Sequence[str]) -> bool:
    """True when `signature` is the HMAC of the raw `body` under any of `secrets` (several are live
    during a rotation). Compares in constant time; never parses the body."""
    if not signature or not isinstance(signature, str):
        return False
    given = signature.strip().lower()
    try:
        given.encode("ascii")
    except UnicodeEncodeError:
        return False
    ok = False
    for secret in secrets:
        if secret:
            # No early exit: every live secret costs the same, match or not.
            ok |= hmac.compare_digest(sign(body, secret), given)
    return ok


# -- amounts ---------------------------------------------------------------------------------------------

def amount_to_paise(value: str | int | Decimal | float, decimals: int = 2) -> int:
    """A human amount in major units (create-refund's `"amount": 1000.00`) as integer minor units.

    Exact: ints, Decimals and numeric strings are converted without rounding; more than `decimals`
    places of precision (e.g. 10.005), zero, negative, NaN and infinity are rejected with ValueError.
    A float is accepted only when its exact binary value has at most `decimals` places (1000.5 yes,
    0.1 no): parse JSON with `json.loads(body, parse_float=Decimal)` so `1000.10` arrives exact.
    """
    if isinstance(value, bool):
        raise ValueError("amount must be a number, not true/false")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, float):
        amount = Decimal(value)  # the float's exact binary value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError("amount is empty")
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"amount {value!r} is not a number") from exc
    else:
        raise ValueError(f"amount must be a number, got {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError(f"amount {value!r} is not a finite number")
    # Before any arithmetic: 1e900000 would otherwise cost seconds of CPU (or overflow) to refuse.
    if amount.adjusted() > 15:
        raise ValueError("amount is larger than any payment can be")
    if amount.adjusted() < -decimals - 1 and amount != 0:
        raise ValueError(f"amount has more than {decimals} decimal places")
    minor = amount.scaleb(decimals)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {value!r} has more than {decimals} decimal places")
    if minor <= 0:
        raise ValueError(f"amount {value!r} must be above zero")
    return int(minor)


def paise_to_amount(paise: int, decimals: int = 2) -> Decimal:
    """Minor units back to an exact major-unit Decimal (50000 -> Decimal('500.00'))."""
    return Decimal(paise).scaleb(-decimals).quantize(Decimal(1).scaleb(-decimals))


# -- REST client -----------------------------------------------------------------------------------------

def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError):
        return None


def _error_from_response(response: httpx.Response) -> RazorpayError:
    status = response.status_code
    code = description = None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("code")
            description = error.get("description")
    except ValueError:
        pass
    what = description or response.reason_phrase or "error"
    retry_after = _retry_after(response.headers.get("Retry-After"))
    if status == 429:
        return RazorpayError(f"Razorpay rate limit (HTTP 429): {what}", status, True, retry_after, code)
    if status >= 500:
        return RazorpayError(f"Razorpay server error (HTTP {status}): {what}", status, True, retry_after, code)
    if status == 409:
        # Documented for refunds: a request with the same idempotency key is still being processed.
        return RazorpayError(f"Razorpay is still processing this request (HTTP 409): {what}", status, True,
                             retry_after, code)
    if status == 401:
        return RazorpayError(f"Razorpay rejected the API key (HTTP 401): {what}; check RAZORPAY_KEY_ID and "
                             "RAZORPAY_KEY_SECRET", status, False, None, code)
    return RazorpayError(f"Razorpay refused the request (HTTP {status}): {what}", status, False, None, code)


class RazorpayClient:
    """Async Razorpay API client over httpx.

    Each call is retried in-process up to `retries` times when the failure is retryable (5xx,
    timeout, connection error, 429 honouring Retry-After up to `max_retry_wait` seconds, 409 in
    flight, malformed JSON), with a short jittered backoff. Then RazorpayError is raised, with
    `retryable` telling the caller whether to queue it for later. Refund creation is always sent
    with the caller's idempotency key, so repeating it never creates a second refund.
    """

    def __init__(self, base_url: str, key_id: str, key_secret: str, http: httpx.AsyncClient | None = None,
                 timeout: float = 10.0, retries: int = 2, backoff: float = 0.2, max_retry_wait: float = 5.0):
        if not key_id or not key_secret:
            raise ValueError("Razorpay API credentials missing: set RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET")
        self.base_url = base_url.rstrip("/")
        self._auth = httpx.BasicAuth(key_id, key_secret)
        self._own_http = http is None
        self._http = http or httpx.AsyncClient()
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> RazorpayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                       json_body: Mapping[str, Any] | None = None,
                       headers: Mapping[str, str] | None = None) -> Any:
        attempt = 0
        while True:
            try:
                return await self._request_once(method, path, params=params, json_body=json_body, headers=headers)
            except RazorpayError as exc:
                if not exc.retryable or attempt >= self.retries:
                    raise
                wait = self.backoff * (2 ** attempt) * (0.5 + random.random())
                if exc.retry_after is not None:
                    if exc.retry_after > self.max_retry_wait:
                        raise
                    wait = max(wait, exc.retry_after)
                attempt += 1
                await asyncio.sleep(wait)

    async def _request_once(self, method: str, path: str, *, params: Mapping[str, Any] | None,
                            json_body: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> Any:
        url = self.base_url + path
        try:
            response = await self._http.request(
                method, url, params=params, json=json_body, headers=headers, auth=self._auth,
                timeout=httpx.Timeout(self.timeout))
        except httpx.TimeoutException as exc:
            raise RazorpayError(f"Razorpay did not answer {method} {path} within {self.timeout:g}s",
                                None, True) from exc
        except httpx.TransportError as exc:
            raise RazorpayError(f"cannot reach Razorpay at {self.base_url}: {exc.__class__.__name__}: {exc}",
                                None, True) from exc
        if response.status_code >= 400:
            raise _error_from_response(response)
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise RazorpayError(f"Razorpay sent malformed JSON for {method} {path} (HTTP {response.status_code})",
                                response.status_code, True) from exc

    async def create_refund(self, payment_id: str, amount: int, idempotency_key: str,
                            notes: Mapping[str, str] | None = None) -> dict:
        """POST /v1/payments/{id}/refund for `amount` paise. The same key always yields the same
        refund at Razorpay; `notes` must be the same on every retry (Razorpay rejects a different
        body under a used key). Returns the refund entity (id rfnd_..., status pending|processed)."""
        _check_id(payment_id, "payment")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValueError(f"refund amount must be a positive whole number of paise, got {amount!r}")
        if not _IDEMPOTENCY_KEY.match(idempotency_key or ""):
            raise ValueError("idempotency key must be 10 to 64 characters of A-Z, a-z, 0-9, _ and -")
        body: dict[str, Any] = {"amount": amount}
        if notes:
            body["notes"] = {str(k): str(v)[:255] for k, v in list(notes.items())[:15]}
        result = await self._request("POST", f"/v1/payments/{quote(payment_id)}/refund", json_body=body,
                                     headers={"X-Refund-Idempotency": idempotency_key})
        if not isinstance(result, dict) or not str(result.get("id", "")).startswith("rfnd_"):
            raise RazorpayError("Razorpay answered the refund without a refund id", None, True)
        return result

    async def fetch_payment(self, payment_id: str) -> dict:
        """GET /v1/payments/{id}: the payment entity."""
        _check_id(payment_id, "payment")
        result = await self._request("GET", f"/v1/payments/{quote(payment_id)}")
        if not isinstance(result, dict):
            raise RazorpayError("Razorpay answered the payment fetch with something that is not a payment", None, True)
        return result

    async def fetch_refund(self, refund_id: str) -> dict:
        """GET /v1/refunds/{id}: the refund entity (status pending, processed or failed)."""
        _check_id(refund_id, "refund")
        result = await self._request("GET", f"/v1/refunds/{quote(refund_id)}")
        if not isinstance(result, dict) or result.get("id") != refund_id:
            raise RazorpayError(f"Razorpay answered the fetch of refund {refund_id} with something else", None, True)
        return result

    async def list_payments(self, from_ts: int, to_ts: int, count: int = MAX_PAGE) -> AsyncIterator[dict]:
        """Every payment created in [from_ts, to_ts] (unix seconds), paging with count <= 100 and skip."""
        count = min(max(int(count), 1), MAX_PAGE)
        skip = 0
        while True:
            page = await self._request("GET", "/v1/payments",
                                       params={"from": int(from_ts), "to": int(to_ts), "count": count, "skip": skip})
            items = page.get("items") if isinstance(page, dict) else None
            if not isinstance(items, list):
                raise RazorpayError("Razorpay answered the payment list without items", None, True)
            for item in items:
                yield item
            if len(items) < count:
                return
            skip += len(items)

    async def ping(self) -> None:
        """A cheap authenticated call for health checks; raises RazorpayError when it fails."""
        await self._request_once("GET", "/v1/payments", params={"count": 1}, json_body=None, headers=None)


def _check_id(value: str, kind: str) -> None:
    if not isinstance(value, str) or not _ENTITY_ID.match(value):
        raise ValueError(f"{kind} id {value!r} is not a Razorpay id (like pay_XXXXXXXXXXXXXX)")
