"""Structured JSON logs: one line per event, with request and webhook ids where there are any.
Secrets never reach a log line: callers log ids and outcomes, and `redact` masks known secret keys
in anything passed as extra fields."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_SECRET_KEYS = ("secret", "password", "token", "authorization", "signature", "api_key", "x-api-key")
_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(fields: dict) -> dict:
    out = {}
    for key, value in fields.items():
        if any(s in key.lower() for s in _SECRET_KEYS):
            out[key] = "[redacted]"
        else:
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}
        entry.update(redact(extra))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return orjson.dumps(entry, default=str).decode()


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
