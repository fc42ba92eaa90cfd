"""TLS certificate check of a custom domain: a real handshake with SNI, as a browser would do it.
Pure I/O: returns an SSLResult, never touches the database (runner.domains records it).

status: active; expiring (expires within 30 days); expired; failed with a reason (untrusted,
hostname mismatch, refused, timeout, handshake error). Issuer and expiry are reported whenever a
certificate was presented, even an untrusted or mismatched one, so the user sees what is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import idna
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

EXPIRING_WITHIN = timedelta(days=30)
# OpenSSL verify codes that still tell us something specific.
_X509_V_ERR_CERT_HAS_EXPIRED = 10
_X509_V_ERR_HOSTNAME_MISMATCH = 62


@dataclass(frozen=True, slots=True)
class SSLResult:
    status: str  # active | expiring | expired | failed
    issuer: str | None
    expires_at: datetime | None
    hostname_matches: bool | None
    error: str | None


def _sni_name(hostname: str) -> str:
    name = hostname.strip().rstrip(".").lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except idna.IDNAError:
        return name


def hostname_matches(cert: x509.Certificate, hostname: str) -> bool:
    """RFC 6125 matching against the DNS SANs (CN only when there are none); a wildcard covers
    exactly one left-most label."""
    try:
        names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if isinstance(a.value, str)]
    host = hostname.lower()
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _issuer(cert: x509.Certificate) -> str:
    org = [a.value for a in cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    cn = [a.value for a in cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if org or cn:
        return " / ".join(str(v) for v in (*org, *cn))
    return cert.issuer.rfc4514_string()


def _dns_names(cert: x509.Certificate) -> list[str]:
    try:
        return cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value \
            .get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return []


async def _handshake(host: str, port: int, sni: str, context: ssl.SSLContext, timeout: float) -> bytes:
    """Connect, complete the TLS handshake with SNI and return the leaf certificate (DER)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=sni, ssl_handshake_timeout=timeout),
        timeout,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise ssl.SSLError("the server presented no certificate")
        return der
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


async def check_certificate(hostname: str, *, port: int = 443, connect_host: str | None = None,
                            ca_file: str | None = None, timeout: float = 10.0,
                            now: datetime | None = None) -> SSLResult:
    """Handshake with `connect_host or hostname`:port using SNI `hostname` and classify what is served.

    `ca_file` replaces the system trust store (tests use a private CA); `now` fixes the clock for
    the active/expiring/expired decision.
    """
    sni = _sni_name(hostname)
    target = connect_host or sni
    now = now or datetime.now(UTC)
    where = f"{target}:{port}"

    verifying = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    verify_error: ssl.SSLCertVerificationError | None = None
    try:
        der = await _handshake(target, port, sni, verifying, timeout)
    except ssl.SSLCertVerificationError as exc:
        verify_error = exc
        relaxed = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        relaxed.check_hostname = False
        relaxed.verify_mode = ssl.CERT_NONE
        try:
            der = await _handshake(target, port, sni, relaxed, timeout)
        except (OSError, TimeoutError, ssl.SSLError) as again:
            return SSLResult("failed", None, None, None, f"untrusted certificate at {where}: "
                             f"{exc.verify_message or exc} (and no certificate on retry: {again})")
    except ConnectionRefusedError:
        return SSLResult("failed", None, None, None, f"connection refused by {where}")
    except TimeoutError:
        return SSLResult("failed", None, None, None, f"timeout after {timeout:g}s connecting to {where}")
    except ssl.SSLError as exc:
        return SSLResult("failed", None, None, None, f"TLS handshake with {where} failed: {exc.reason or exc}")
    except OSError as exc:
        return SSLResult("failed", None, None, None, f"cannot connect to {where}: {exc.strerror or exc}")

    cert = x509.load_der_x509_certificate(der)
    issuer = _issuer(cert)
    expires_at = cert.not_valid_after_utc
    matches = hostname_matches(cert, sni)

    if not matches:
        names = ", ".join(_dns_names(cert)[:5]) or "no DNS names"
        return SSLResult("failed", issuer, expires_at, False,
                         f"hostname mismatch: the certificate served for {sni} covers {names}")
    if verify_error is not None and verify_error.verify_code not in (_X509_V_ERR_CERT_HAS_EXPIRED,
                                                                     _X509_V_ERR_HOSTNAME_MISMATCH):
        return SSLResult("failed", issuer, expires_at, True,
                         f"untrusted certificate: {verify_error.verify_message or verify_error} (issuer {issuer})")
    if expires_at <= now:
        return SSLResult("expired", issuer, expires_at, True, f"certificate expired on {expires_at:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        return SSLResult("failed", issuer, expires_at, True,
                         f"certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if expires_at - now <= EXPIRING_WITHIN:
        return SSLResult("expiring", issuer, expires_at, True, None)
    return SSLResult("active", issuer, expires_at, True, None)
