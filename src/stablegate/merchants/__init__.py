"""Merchants, their modes (test/live) and API keys; authentication resolves here."""
