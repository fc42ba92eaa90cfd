"""TLS checks against a local TLS server with certificates from a test CA (trustme)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import fakes.tls_server as fake_tls

from runner.tls_check import check_certificate

tls_ca, tls_site = fake_tls.tls_ca, fake_tls.tls_site  # fixtures

HOST = "shop.test"


async def check(site, **kwargs):
    return await check_certificate(site.hostname, port=site.port, connect_host="127.0.0.1", ca_file=site.ca_file,
                                   timeout=3, **kwargs)


async def test_valid_certificate_is_active_with_issuer_and_expiry(tls_site):
    site = tls_site(HOST)
    result = await check(site)
    assert result.status == "active" and result.error is None
    assert result.hostname_matches is True
    assert "storeops test CA" in result.issuer
    assert abs(result.expires_at - site.not_after) < timedelta(seconds=2)


async def test_certificate_expiring_within_30_days(tls_site):
    result = await check(tls_site(HOST, "expiring"))
    assert result.status == "expiring"
    assert timedelta(days=9) < result.expires_at - datetime.now(UTC) < timedelta(days=11)


async def test_valid_certificate_becomes_expiring_as_the_clock_moves(tls_site):
    site = tls_site(HOST)
    later = await check(site, now=site.not_after - timedelta(days=29))
    assert later.status == "expiring"


async def test_expired_certificate(tls_site):
    result = await check(tls_site(HOST, "expired"))
    assert result.status == "expired"
    assert "expired on" in result.error
    assert result.issuer and result.expires_at < datetime.now(UTC)


async def test_wrong_hostname_fails_and_names_what_the_certificate_covers(tls_site):
    result = await check(tls_site(HOST, "wrong_hostname"))
    assert result.status == "failed" and result.hostname_matches is False
    assert "hostname mismatch" in result.error and "other-store.test" in result.error
    assert result.issuer  # what is served is still reported


async def test_untrusted_issuer_fails(tls_site):
    result = await check(tls_site(HOST, "untrusted"))
    assert result.status == "failed" and result.hostname_matches is True
    assert result.error.startswith("untrusted certificate")
    assert "someone else's CA" in result.issuer


async def test_refused_connection():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await check_certificate(HOST, port=port, connect_host="127.0.0.1", timeout=2)
    assert result.status == "failed" and result.error == f"connection refused by 127.0.0.1:{port}"


async def test_handshake_timeout():
    with socket.socket() as silent:  # accepts TCP (backlog) but never speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = await check_certificate(HOST, port=port, connect_host="127.0.0.1", timeout=0.3)
    assert result.status == "failed" and result.error.startswith("timeout after 0.3s")
