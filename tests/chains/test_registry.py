"""Chain configuration: names that become part of asset codes are checked at load."""

from __future__ import annotations

import pytest

from stablegate.chains import registry


@pytest.mark.parametrize("name", ["local", "base-sepolia", "a", "x" * 24])
def test_chain_names_that_can_name_assets(name: str) -> None:
    assert registry.from_dict({"name": name, "chain_id": 7, "rpc_urls": ["http://127.0.0.1:1"]}).name == name


@pytest.mark.parametrize("name", ["base-", "-base", "Base", "my_chain", "", "x" * 25])
def test_chain_names_refused_at_load(name: str) -> None:
    """A trailing '-' would make every receipt's asset (USDC.<name>) unusable by the ledger."""
    with pytest.raises(ValueError, match="chain name"):
        registry.from_dict({"name": name, "chain_id": 7, "rpc_urls": ["http://127.0.0.1:1"]})
