"""Our compiled contracts (contracts/artifacts, built by contracts/build.py) and the event
topics the platform reads.

Artifacts are looked up in the checkout first, then in a copy packaged into the wheel
(`stablegate/_contracts`), so an installed package needs no checkout.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

CHECKOUT_ARTIFACTS_DIR = Path(__file__).resolve().parents[3] / "contracts" / "artifacts"
PACKAGED_ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "_contracts"

TRANSFER_EVENT = "Transfer(address,address,uint256)"
INTENT_PAID_EVENT = "IntentPaid(bytes32,address,address,address,uint256,uint256)"
SWEPT_EVENT = "Swept(bytes32,address,address,uint256)"


def event_topic(signature: str) -> str:
    """topics[0] of an event: 0x-hex keccak256 of its canonical signature."""
    return "0x" + keccak(text=signature).hex()


TRANSFER_TOPIC = event_topic(TRANSFER_EVENT)
INTENT_PAID_TOPIC = event_topic(INTENT_PAID_EVENT)
SWEPT_TOPIC = event_topic(SWEPT_EVENT)


def artifact_path(name: str) -> Path:
    # A name is a contract name, never a path: nothing outside the artifact directories is read.
    if not name.isidentifier():
        raise ValueError(f"not a contract name: {name!r}")
    for directory in (CHECKOUT_ARTIFACTS_DIR, PACKAGED_ARTIFACTS_DIR):
        path = directory / f"{name}.json"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no artifact for contract {name!r} in {CHECKOUT_ARTIFACTS_DIR} or {PACKAGED_ARTIFACTS_DIR}"
    )


@functools.cache
def _artifact_text(name: str) -> str:
    return artifact_path(name).read_text(encoding="utf-8")


def artifact(name: str) -> dict[str, Any]:
    """{"contractName", "abi", "bytecode", "deployedBytecode"} of contract `name`; a fresh
    copy each call (callers may change it; the file is read once)."""
    loaded: dict[str, Any] = json.loads(_artifact_text(name))
    assert loaded["contractName"] == name, f"artifact {name}.json names {loaded['contractName']}"
    assert str(loaded["bytecode"]).startswith("0x")
    return loaded


def abi(name: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = artifact(name)["abi"]
    return result


def bytecode(name: str) -> str:
    """Creation bytecode, 0x-hex."""
    return str(artifact(name)["bytecode"])
