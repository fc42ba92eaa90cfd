"""What every part of a running storeops process shares: settings, the pool, one HTTP client, and a
short-lived cache of per-tenant webhook settings."""

from __future__ import annotations

import collections
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from psycopg_pool import AsyncConnectionPool

from runner.config import Settings


@dataclass
class TenantWebhookConfig:
    exists: bool
    secrets: list[str]
    account_id: str | None


@dataclass
class Context:
    settings: Settings
    pool: AsyncConnectionPool
    http: httpx.AsyncClient
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    _tenant_cache: dict[tuple[str, str], tuple[float, TenantWebhookConfig]] = field(default_factory=dict)
    tenant_cache_ttl: float = 15.0
    # Set by a Worker sharing this context (storeops serve): called with "payment" or "shipping"
    # when the receiver has committed new webhooks of that kind.
    wake_local_worker: Callable[[str], None] | None = None

    def forget_tenant(self, tenant_id: str) -> None:
        """Drop a tenant's cached webhook settings (it was deleted, or they changed)."""
        for key in [k for k in self._tenant_cache if k[0] == tenant_id]:
            self._tenant_cache.pop(key, None)

    def cached_webhook_config(self, tenant_id: str, kind: str) -> TenantWebhookConfig | None:
        """The cached config when there is a fresh one, else None (no database call)."""
        hit = self._tenant_cache.get((tenant_id, kind))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    async def tenant_webhook_config(self, tenant_id: str, kind: str) -> TenantWebhookConfig:
        """The tenant's active secrets of `kind` (both during a rotation) and its Razorpay account id."""
        cfg = self.cached_webhook_config(tenant_id, kind)
        if cfg is not None:
            return cfg
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "select razorpay_account_id from storeops.tenants where id = %s", (tenant_id,))).fetchone()
            secrets: list[str] = []
            if row is not None:
                cur = await conn.execute("select secret from storeops.get_tenant_secrets(%s, %s)", (tenant_id, kind))
                secrets = [r[0] for r in await cur.fetchall()]
        cfg = TenantWebhookConfig(exists=row is not None, secrets=secrets, account_id=row[0] if row else None)
        now = time.monotonic()
        if len(self._tenant_cache) >= 10_000:  # random tenant ids in URLs must not grow it for ever
            self._tenant_cache = {k: v for k, v in self._tenant_cache.items() if v[0] > now}
            if len(self._tenant_cache) >= 10_000:
                self._tenant_cache.clear()
        self._tenant_cache[(tenant_id, kind)] = (now + self.tenant_cache_ttl, cfg)
        return cfg

    def razorpay_client(self, key_id: str | None = None, key_secret: str | None = None):
        from runner.razorpay import RazorpayClient

        return RazorpayClient(self.settings.razorpay_api_base, key_id or self.settings.razorpay_key_id or "",
                              key_secret or self.settings.razorpay_key_secret or "", http=self.http)

    async def tenant_razorpay_client(self, tenant_id: str | None):
        """The tenant's own Razorpay API key (tenant_secrets kind razorpay_api) when it has one, else
        the platform's. Raises ValueError when neither is configured."""
        row = await self._tenant_api_user(tenant_id, "razorpay_api")
        return self.razorpay_client(*row) if row else self.razorpay_client()

    async def _tenant_api_user(self, tenant_id: str | None, kind: str) -> tuple[str, str] | None:
        """The tenant's newest active (key_id, secret) of `kind` (razorpay_api, shiprocket_api), if any."""
        if not tenant_id:
            return None
        async with self.pool.connection() as conn:
            row = await (await conn.execute(
                "select key_id, secret from storeops.get_tenant_secrets(%s, %s) limit 1", (tenant_id, kind))).fetchone()
        return (row[0], row[1]) if row and row[0] else None

    def shiprocket_client(self, email: str | None = None, password: str | None = None):
        """The platform's Shiprocket API user (SHIPROCKET_EMAIL), or the one given; one client per
        user (the 1,000 most recently used are kept), so its login token (valid for days) is reused."""
        from runner.shiprocket import ShiprocketClient

        if email is None:
            email, password = self.settings.shiprocket_email or "", self.settings.shiprocket_password or ""
        clients = getattr(self, "_shiprocket_clients", None)
        if clients is None:
            clients = self._shiprocket_clients = collections.OrderedDict()
        client = clients.get(email)
        if client is None or client.password != (password or ""):  # new, or its password was rotated
            client = clients[email] = ShiprocketClient(self.settings.shiprocket_api_base, email, password or "",
                                                       http=self.http)
        clients.move_to_end(email)
        while len(clients) > 1000:  # the least recently used go; they log in again when next needed
            clients.popitem(last=False)
        return client

    async def tenant_shiprocket_client(self, tenant_id: str | None):
        """The tenant's own Shiprocket API user (tenant_secrets kind shiprocket_api: key_id the email,
        secret the password) when it has one, else the platform's; None when neither is configured."""
        row = await self._tenant_api_user(tenant_id, "shiprocket_api")
        if row:
            return self.shiprocket_client(*row)
        return self.shiprocket_client() if self.settings.shiprocket_email else None
