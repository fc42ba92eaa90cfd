"""Local fake servers the integration tests start on loopback."""
