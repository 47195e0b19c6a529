"""Deposit addresses (design 0003): the CREATE2 address of an EIP-1167 clone of the
DepositForwarder, deployed by the ForwarderFactory with salt = deposit_salt(owner).

Computed here without a chain call, so an address can be handed out (and watched) before
anything exists at it; ForwarderFactory.addressOf returns the same address (tested).
"""

from __future__ import annotations

import functools

from eth_utils.address import to_canonical_address

from stablegate.kit.evm import checksum_address
from stablegate.kit.evm import keccak256 as keccak

DEPOSIT_SALT_PREFIX = b"stablegate.deposit"
SALT_BYTES = 32

# EIP-1167 minimal proxy creation code around the 20-byte implementation address. Must stay
# byte-equal to ForwarderFactory._cloneCode, or addresses would not match the contract's.
_CLONE_PREFIX = bytes.fromhex("3d602d80600a3d3981f3363d3d373d3d3d363d73")
_CLONE_SUFFIX = bytes.fromhex("5af43d82803e903d91602b57fd5bf3")


def deposit_salt(owner_ref: str) -> bytes:
    """keccak256("stablegate.deposit" ‖ owner_ref): one address per owner (e.g. a payment id)."""
    assert owner_ref, "an owner reference is required"
    return keccak(DEPOSIT_SALT_PREFIX + owner_ref.encode())


def clone_creation_code(implementation: str) -> bytes:
    return _CLONE_PREFIX + to_canonical_address(implementation) + _CLONE_SUFFIX


def create2_address(deployer: str, salt: bytes, init_code_hash: bytes) -> str:
    """EIP-1014: keccak256(0xff ‖ deployer ‖ salt ‖ keccak256(init_code))[12:], checksummed."""
    if len(salt) != SALT_BYTES or len(init_code_hash) != SALT_BYTES:
        raise ValueError("salt and init code hash must be 32 bytes")
    digest = keccak(b"\xff" + _canonical(deployer) + salt + init_code_hash)
    return checksum_address(digest[12:])


def deposit_address(factory: str, implementation: str, salt: bytes) -> str:
    """The checksummed deposit address for `salt` under `factory` (cloning `implementation`)."""
    return create2_address(factory, salt, _clone_code_hash(implementation.lower()))


# One factory and one implementation per chain: their bytes and the clone code's hash are
# remembered rather than derived again for every payment.
_canonical = functools.lru_cache(maxsize=64)(to_canonical_address)


@functools.lru_cache(maxsize=64)
def _clone_code_hash(implementation: str) -> bytes:
    return keccak(clone_creation_code(implementation))
