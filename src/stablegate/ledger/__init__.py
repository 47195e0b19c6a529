"""The ledger: double-entry, append-only, multi-asset, two-phase (design 0002)."""
