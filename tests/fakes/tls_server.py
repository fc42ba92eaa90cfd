"""A TLS server on loopback presenting certificates from a test CA (trustme): valid, expiring
(< 30 days left), expired, for the wrong hostname, or from a CA the client does not trust.

Fixture `tls_site` gives a factory: `tls_site("shop.test", kind="expiring")` -> TLSSite with
`.port` and `.ca_file`; the server runs in a thread and stops after the test.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

KINDS = ("valid", "expiring", "expired", "wrong_hostname", "untrusted")


@dataclass
class TLSSite:
    hostname: str
    kind: str
    port: int
    ca_file: str
    not_after: datetime


class _Server:
    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(2)
            with contextlib.suppress(OSError, ssl.SSLError):
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # wait for the client to close
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _issue(ca: trustme.CA, hostname: str, kind: str, now: datetime) -> tuple[trustme.LeafCert, datetime]:
    if kind == "expiring":
        not_before, not_after = now - timedelta(days=60), now + timedelta(days=10)
    elif kind == "expired":
        not_before, not_after = now - timedelta(days=90), now - timedelta(days=1)
    else:
        not_before, not_after = now - timedelta(days=1), now + timedelta(days=90)
    names = ["other-store.test", "www.other-store.test"] if kind == "wrong_hostname" else [hostname]
    leaf = ca.issue_cert(*names, organization_name="storeops tests", not_before=not_before, not_after=not_after)
    return leaf, not_after.replace(microsecond=0)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA(organization_name="storeops test CA")


@pytest.fixture
def tls_site(tls_ca: trustme.CA, tmp_path: Path) -> Iterator[Callable[..., TLSSite]]:
    servers: list[_Server] = []
    ca_file = tmp_path / "test-ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))

    def start(hostname: str, kind: str = "valid") -> TLSSite:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        issuer = trustme.CA(organization_name="someone else's CA") if kind == "untrusted" else tls_ca
        leaf, not_after = _issue(issuer, hostname, kind, datetime.now(UTC))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(context)
        server = _Server(context)
        servers.append(server)
        return TLSSite(hostname, kind, server.port, str(ca_file), not_after)

    yield start
    for server in servers:
        server.stop()
