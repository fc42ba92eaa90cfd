"""storeops runner: the thin I/O layer around the storeops Postgres pack."""

__version__ = "0.1.0"
