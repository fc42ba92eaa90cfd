"""Settings from the environment (names fixed by SPEC.md), read once into a frozen dataclass."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def _list(name: str) -> list[str]:
    return [part.strip() for part in os.environ.get(name, "").split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    razorpay_webhook_secret: str | None = None
    shiprocket_webhook_secret: str | None = None
    razorpay_key_id: str | None = None
    razorpay_key_secret: str | None = None
    razorpay_api_base: str = "https://api.razorpay.com"
    shiprocket_email: str | None = None
    shiprocket_password: str | None = None
    shiprocket_api_base: str = "https://apiv2.shiprocket.in"
    jwt_secret: str | None = None
    dns_nameservers: list[str] = field(default_factory=list)
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    alert_url: str | None = None
    max_body_bytes: int = 1_048_576
    # Custom domains: where tenants must point their domains, and the ownership TXT label.
    platform_cname: str = "stores.storeops.in"
    platform_addresses: list[str] = field(default_factory=list)
    dns_txt_prefix: str = "_storeops-verification"
    dns_timeout: float = 5.0
    # Webhook rate limits in requests per second (burst = 5 seconds' worth); 0 turns one off.
    rate_limit_source: float = 1000.0
    rate_limit_tenant: float = 500.0

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        return cls(
            database_url=env("DATABASE_URL") or None,
            razorpay_webhook_secret=env("RAZORPAY_WEBHOOK_SECRET") or None,
            shiprocket_webhook_secret=env("SHIPROCKET_WEBHOOK_SECRET") or None,
            razorpay_key_id=env("RAZORPAY_KEY_ID") or None,
            razorpay_key_secret=env("RAZORPAY_KEY_SECRET") or None,
            razorpay_api_base=(env("RAZORPAY_API_BASE") or "https://api.razorpay.com").rstrip("/"),
            shiprocket_email=env("SHIPROCKET_EMAIL") or None,
            shiprocket_password=env("SHIPROCKET_PASSWORD") or None,
            shiprocket_api_base=(env("SHIPROCKET_API_BASE") or "https://apiv2.shiprocket.in").rstrip("/"),
            jwt_secret=env("STOREOPS_JWT_SECRET") or None,
            dns_nameservers=_list("STOREOPS_DNS_NAMESERVERS"),
            http_host=env("STOREOPS_HTTP_HOST") or "127.0.0.1",
            http_port=_int("STOREOPS_HTTP_PORT", 8000),
            alert_url=env("STOREOPS_ALERT_URL") or None,
            max_body_bytes=_int("STOREOPS_MAX_BODY_BYTES", 1_048_576),
            platform_cname=(env("STOREOPS_PLATFORM_CNAME") or "stores.storeops.in").rstrip(".").lower(),
            platform_addresses=_list("STOREOPS_PLATFORM_ADDRESSES"),
            dns_txt_prefix=env("STOREOPS_DNS_TXT_PREFIX") or "_storeops-verification",
            dns_timeout=float(env("STOREOPS_DNS_TIMEOUT") or 5.0),
            rate_limit_source=float(env("STOREOPS_RATE_LIMIT_SOURCE") or 1000.0),
            rate_limit_tenant=float(env("STOREOPS_RATE_LIMIT_TENANT") or 500.0),
        )


def resolve_database_url(settings: Settings | None = None) -> str:
    """DATABASE_URL, or the embedded cluster's URL when it is unset."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return settings.database_url
    from runner.cluster import default_cluster

    return default_cluster().url()
