"""Payment intents for the PaymentRouter (design 0003): the operator signs the exact terms
of one payment (EIP-712), the payer submits them with the signature, the contract checks
them and pays at most once per id.

Also signs EIP-2612 permits, as a payer's wallet does, for the one-transaction path
(`payWithPermit`) in the demo and tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import coincurve
from eth_account import Account
from eth_account.messages import SignableMessage, encode_typed_data
from eth_utils.address import is_address, to_checksum_address

from stablegate.kit.evm import keccak256 as keccak

INTENT_ID_PREFIX = b"stablegate.intent"
ROUTER_DOMAIN_NAME = "Stablegate PaymentRouter"
ROUTER_DOMAIN_VERSION = "1"
UINT256_LIMIT = 2**256
ID_BYTES = 32
SIGNATURE_BYTES = 65
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
# Field for field the PaymentRouter's INTENT_TYPEHASH: a change on either side breaks every signature.
_INTENT_FIELDS = [
    {"name": "id", "type": "bytes32"},
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint256"},
    {"name": "fee", "type": "uint256"},
    {"name": "recipient", "type": "address"},
    {"name": "feeRecipient", "type": "address"},
    {"name": "deadline", "type": "uint256"},
]
_PERMIT_FIELDS = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Intent:
    """One payment's terms. Amounts are token base units; `amount` is what the payer pays
    in total, `fee` the platform's part of it; `deadline` is unix seconds (inclusive)."""

    id: bytes
    token: str
    amount: int
    fee: int
    recipient: str
    fee_recipient: str
    deadline: int

    def __post_init__(self) -> None:
        if len(self.id) != ID_BYTES:
            raise ValueError(f"intent id must be {ID_BYTES} bytes, got {len(self.id)}")
        if not 0 < self.amount < UINT256_LIMIT:
            raise ValueError(f"amount must be a positive uint256, got {self.amount}")
        if not 0 <= self.fee <= self.amount:
            raise ValueError(f"fee must be within 0..amount, got {self.fee} of {self.amount}")
        if not 0 <= self.deadline < UINT256_LIMIT:
            raise ValueError(f"deadline must be a uint256, got {self.deadline}")
        for field in ("token", "recipient", "fee_recipient"):
            if not is_address(getattr(self, field)):
                raise ValueError(f"{field} is not an address: {getattr(self, field)!r}")


def intent_id(owner_ref: str) -> bytes:
    """keccak256("stablegate.intent" ‖ owner_ref): one intent per owner (e.g. a payment id),
    so signing twice for one owner yields the same id and the router pays it only once."""
    assert owner_ref, "an owner reference is required"
    return keccak(INTENT_ID_PREFIX + owner_ref.encode())


def intent_args(intent: Intent) -> tuple[bytes, str, int, int, str, str, int]:
    """The `Intent` struct argument of PaymentRouter.pay / payWithPermit."""
    return (
        intent.id,
        to_checksum_address(intent.token),
        intent.amount,
        intent.fee,
        to_checksum_address(intent.recipient),
        to_checksum_address(intent.fee_recipient),
        intent.deadline,
    )


def intent_typed_data(intent: Intent, *, chain_id: int, router: str) -> SignableMessage:
    message: dict[str, Any] = {
        field["name"]: value for field, value in zip(_INTENT_FIELDS, intent_args(intent), strict=True)
    }
    return encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_FIELDS, "Intent": _INTENT_FIELDS},
            "primaryType": "Intent",
            "domain": {
                "name": ROUTER_DOMAIN_NAME,
                "version": ROUTER_DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(router),
            },
            "message": message,
        }
    )


def typed_data_digest(signable: SignableMessage) -> bytes:
    """The 32 bytes an EIP-712 signature signs: keccak256(0x19 ‖ 0x01 ‖ domain ‖ struct)."""
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


# The router's EIP-712 constants, for the hand-encoded digest below (one keccak per
# struct instead of eth-account's generic typed-data encoder: 60 µs instead of 3 ms a
# signature, which was most of the cost of creating a payment).
_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
_INTENT_TYPEHASH = keccak(
    b"Intent(bytes32 id,address token,uint256 amount,uint256 fee,address recipient,address feeRecipient,"
    b"uint256 deadline)"
)


@functools.lru_cache(maxsize=64)
def _domain_separator(chain_id: int, router: str) -> bytes:
    return keccak(
        _DOMAIN_TYPEHASH
        + keccak(ROUTER_DOMAIN_NAME.encode())
        + keccak(ROUTER_DOMAIN_VERSION.encode())
        + chain_id.to_bytes(32, "big")
        + _address_word(router)
    )


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address.removeprefix("0x"))


def intent_digest(intent: Intent, *, chain_id: int, router: str) -> bytes:
    """Equals PaymentRouter.intentDigest(intent) on that chain and router (and eth-account's
    encoding of `intent_typed_data`, which tests check it against)."""
    struct = keccak(
        _INTENT_TYPEHASH
        + intent.id
        + _address_word(intent.token)
        + intent.amount.to_bytes(32, "big")
        + intent.fee.to_bytes(32, "big")
        + _address_word(intent.recipient)
        + _address_word(intent.fee_recipient)
        + intent.deadline.to_bytes(32, "big")
    )
    return keccak(b"\x19\x01" + _domain_separator(chain_id, router.lower()) + struct)


@functools.lru_cache(maxsize=8)
def _signing_key(private_key: str) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(bytes.fromhex(private_key.removeprefix("0x")))


def sign_intent(intent: Intent, *, chain_id: int, router: str, private_key: str) -> bytes:
    """The operator's 65-byte signature (r ‖ s ‖ v, v in {27, 28}, low s) of `intent`."""
    # libsecp256k1 signs deterministically (RFC 6979) with a normalised (low) s.
    recoverable = _signing_key(private_key).sign_recoverable(
        intent_digest(intent, chain_id=chain_id, router=router), hasher=None
    )
    signature = recoverable[:64] + bytes([27 + recoverable[64]])
    assert len(signature) == SIGNATURE_BYTES and int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_N
    return signature


@dataclass(frozen=True)
class PermitToken:
    """What an EIP-2612 signature binds to: the token's EIP-712 domain."""

    address: str
    name: str  # the token's EIP-712 domain name, e.g. "USD Coin"
    version: str  # the token's EIP-712 domain version, e.g. "2" for USD Coin
    chain_id: int


@dataclass(frozen=True)
class Permit:
    owner: str
    spender: str
    value: int  # base units
    nonce: int  # the token's nonces(owner)
    deadline: int  # unix seconds


def sign_permit(token: PermitToken, permit: Permit, private_key: str) -> tuple[int, bytes, bytes]:
    """(v, r, s) of an EIP-2612 permit signed by `permit.owner`'s key, as a wallet would."""
    signable = encode_typed_data(
        full_message={
            "types": {"EIP712Domain": _DOMAIN_FIELDS, "Permit": _PERMIT_FIELDS},
            "primaryType": "Permit",
            "domain": {
                "name": token.name,
                "version": token.version,
                "chainId": token.chain_id,
                "verifyingContract": to_checksum_address(token.address),
            },
            "message": {
                "owner": to_checksum_address(permit.owner),
                "spender": to_checksum_address(permit.spender),
                "value": permit.value,
                "nonce": permit.nonce,
                "deadline": permit.deadline,
            },
        }
    )
    signed = Account.sign_message(signable, private_key)
    return signed.v, signed.r.to_bytes(32, "big"), signed.s.to_bytes(32, "big")
