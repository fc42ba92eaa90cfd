"""Start real `storeops serve` / `storeops work` processes for integration tests."""

from __future__ import annotations

import hashlib
import hmac
import os
import signal as _signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from runner.cluster import free_port

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_test_platform"
SHIPROCKET_TOKEN = "sr-token-platform"
JWT_SECRET = "jwt-test-secret-0123456789abcdef0123456789"


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class RunnerProcess:
    def __init__(self, database_url: str, *, command: str = "serve", env: dict[str, str] | None = None,
                 log_path: Path | None = None, args: tuple[str, ...] = ()):
        self.database_url = database_url
        self.command = command
        self.args = tuple(args)
        self.port = free_port()
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "STOREOPS_HTTP_PORT": str(self.port),
            "RAZORPAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SHIPROCKET_WEBHOOK_SECRET": SHIPROCKET_TOKEN,
            "STOREOPS_JWT_SECRET": JWT_SECRET,
            "RAZORPAY_API_BASE": "http://127.0.0.1:9",  # nothing listens: health says down, quickly
            "SHIPROCKET_API_BASE": "http://127.0.0.1:9",
            "STOREOPS_DNS_NAMESERVERS": "127.0.0.1:9",
            "STOREOPS_DNS_TIMEOUT": "0.5",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True, timeout: float = 30) -> RunnerProcess:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        self._log = out if self.log_path else None
        self.proc = subprocess.Popen([sys.executable, "-m", "runner", self.command, *self.args], cwd=ROOT, env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT)
        if wait and self.command == "serve":
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runner exited with {self.proc.returncode}: {self.output()[-2000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"runner did not become ready: {self.output()[-2000:]}")

    def output(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = _signal.SIGTERM, timeout: float = 15) -> tuple[int | None, float]:
        """Send `sig` and wait; returns (exit code, seconds it took)."""
        if not self.proc:
            return None, 0.0
        started = time.monotonic()
        self.signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = None
        if self._log:
            self._log.close()
            self._log = None
        return code, time.monotonic() - started

    def __enter__(self) -> RunnerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.stop(_signal.SIGKILL)
