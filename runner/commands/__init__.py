"""CLI command modules; each defines `register(subparsers)`. See runner/cli.py."""
