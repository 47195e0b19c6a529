"""Transaction signers (design 0006, "Signers"): the only code that touches a private key.

The split: everything about *what* is signed lives here and is shared — `Eip1559Tx`, its
EIP-1559 signing hash and the signed EIP-2718 envelope (RLP hand-encoded below, proved
byte-identical to eth-account by a property test). A `Signer` only turns a 32-byte digest
into `(y_parity, r, s)` with low s (EIP-2), so a new backend is one small class and can
never change the encoding. `sign_transaction` checks every signature it gets back — ranges
and that it recovers to `signer.address` — before building the envelope, so a faulty
backend fails here rather than on the chain.

Two backends:

- `LocalSigner` (development): a private key decrypted from an eth-account v3 keystore
  (scrypt), signing with coincurve (libsecp256k1: deterministic RFC 6979 nonces, low s).
  `write_keystore` writes the file 0600 and atomically (temporary file + rename).
- `KmsSigner` (production): an AWS KMS key with KeySpec `ECC_SECG_P256K1`. KMS signs the
  digest (`MessageType=DIGEST`, `ECDSA_SHA_256`) and returns an ASN.1 DER signature without
  a recovery id and with s in either half, so we parse the DER strictly, fold s into the
  low half and find the recovery id by recovering both candidates against the key's public
  key (read once, from `GetPublicKey`'s SubjectPublicKeyInfo).

The private key never leaves KMS; the API process holds neither kind of signer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import boto3
import coincurve
from botocore.exceptions import BotoCoreError, ClientError
from eth_account import Account
from eth_utils.crypto import keccak

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
UINT256_LIMIT = 2**256
UINT64_LIMIT = 2**64  # geth keeps nonce and gas in a uint64 (nonce: EIP-2681)
EIP1559_TX_TYPE = 0x02
DIGEST_BYTES = 32
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")

KMS_KEY_SPEC = "ECC_SECG_P256K1"
KMS_KEY_USAGE = "SIGN_VERIFY"
KMS_SIGNING_ALGORITHM = "ECDSA_SHA_256"

# DER tags and the SubjectPublicKeyInfo AlgorithmIdentifier of a secp256k1 key:
# OID id-ecPublicKey (1.2.840.10045.2.1) then OID secp256k1 (1.3.132.0.10).
DER_SEQUENCE = 0x30
DER_INTEGER = 0x02
DER_BIT_STRING = 0x03
SECP256K1_SPKI_ALGORITHM = bytes.fromhex("06072a8648ce3d0201" + "06052b8104000a")
# An INTEGER below the curve order needs at most 32 bytes plus one 0x00 sign byte.
DER_MAX_UINT_BYTES = 33

RlpItem: TypeAlias = int | bytes | list["RlpItem"]


class SignerError(Exception):
    """A key could not be loaded or a signature could not be made or trusted."""


@dataclass(frozen=True)
class SignedTransaction:
    raw: bytes  # the EIP-2718 envelope 0x02 ‖ rlp([...]), ready for eth_sendRawTransaction
    tx_hash: str  # 0x + 64 lower-case hex: keccak256(raw)


@dataclass(frozen=True)
class Eip1559Tx:
    """One type-2 transaction with an empty access list. Amounts and fees are wei."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas_limit: int
    to: str  # 0x address, any case (no contract creation: payouts always have a recipient)
    value: int
    data: bytes

    def __post_init__(self) -> None:
        numbers = {
            "chain_id": self.chain_id,
            "nonce": self.nonce,
            "max_priority_fee_per_gas": self.max_priority_fee_per_gas,
            "max_fee_per_gas": self.max_fee_per_gas,
            "gas_limit": self.gas_limit,
            "value": self.value,
        }
        for name, number in numbers.items():
            # bool is an int subclass: True would silently encode as 1.
            if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < UINT256_LIMIT:
                raise ValueError(f"{name} must be an int in [0, 2**256), got {number!r}")
        if self.chain_id == 0:
            raise ValueError("chain_id must be positive: EIP-155 replay protection names a real chain")
        if self.nonce >= UINT64_LIMIT or self.gas_limit >= UINT64_LIMIT:
            raise ValueError("nonce and gas_limit must be below 2**64")
        if self.max_fee_per_gas < self.max_priority_fee_per_gas:
            raise ValueError("max_fee_per_gas must be at least max_priority_fee_per_gas")
        if not isinstance(self.to, str) or ADDRESS_RE.fullmatch(self.to) is None:
            raise ValueError(f"to must be a 0x-prefixed 20-byte hex address, got {self.to!r}")
        if not isinstance(self.data, bytes):
            raise ValueError("data must be bytes")


class Signer(Protocol):
    address: str  # lower-case 0x hex

    async def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        """(y_parity 0/1, r, s) over a 32-byte digest, s in the low half (EIP-2)."""
        ...


# --- encoding -------------------------------------------------------------------------


def _rlp_length_prefix(length: int, short_base: int) -> bytes:
    # RLP: short_base + length up to 55; longer payloads carry their length's own bytes.
    if length <= 55:
        return bytes([short_base + length])
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([short_base + 55 + len(length_bytes)]) + length_bytes


def _rlp(item: RlpItem) -> bytes:
    if isinstance(item, list):
        payload = b"".join(_rlp(element) for element in item)
        return _rlp_length_prefix(len(payload), 0xC0) + payload
    if isinstance(item, int):
        # Integers are minimal big-endian byte strings; zero is the empty string.
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if len(item) == 1 and item[0] < 0x80:
        return item
    return _rlp_length_prefix(len(item), 0x80) + item


def _unsigned_fields(tx: Eip1559Tx) -> list[RlpItem]:
    access_list: list[RlpItem] = []
    return [
        tx.chain_id,
        tx.nonce,
        tx.max_priority_fee_per_gas,
        tx.max_fee_per_gas,
        tx.gas_limit,
        bytes.fromhex(tx.to[2:]),
        tx.value,
        tx.data,
        access_list,
    ]


def signing_hash(tx: Eip1559Tx) -> bytes:
    """keccak256(0x02 ‖ rlp([chainId, nonce, maxPriority, maxFee, gas, to, value, data, [] ]))."""
    return keccak(bytes([EIP1559_TX_TYPE]) + _rlp(_unsigned_fields(tx)))


def _check_signature_ranges(y_parity: int, r: int, s: int) -> None:
    if y_parity not in (0, 1):
        raise SignerError(f"y_parity must be 0 or 1, got {y_parity!r}")
    if not 1 <= r < SECP256K1_N:
        raise SignerError("signature r is out of range")
    if not 1 <= s <= SECP256K1_HALF_N:
        raise SignerError("signature s is out of range or in the high half (EIP-2 rejects it)")


def encode_signed(tx: Eip1559Tx, y_parity: int, r: int, s: int) -> bytes:
    """The EIP-2718 envelope: 0x02 ‖ rlp([...unsigned fields, yParity, r, s])."""
    _check_signature_ranges(y_parity, r, s)
    return bytes([EIP1559_TX_TYPE]) + _rlp([*_unsigned_fields(tx), y_parity, r, s])


def _address_of(public_key: bytes) -> str:
    """Address of an uncompressed public key (0x04 ‖ X ‖ Y): keccak256(X ‖ Y)[12:]."""
    return "0x" + keccak(public_key[1:])[12:].hex()


def _recover(digest: bytes, y_parity: int, r: int, s: int) -> bytes | None:
    """The uncompressed public key that made this signature, or None if none can have."""
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([y_parity])
    try:
        recovered = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except (ValueError, TypeError):
        return None
    return recovered.format(compressed=False)


async def sign_transaction(signer: Signer, tx: Eip1559Tx) -> SignedTransaction:
    digest = signing_hash(tx)
    y_parity, r, s = await signer.sign_digest(digest)
    _check_signature_ranges(y_parity, r, s)
    # A wrong recovery id or key would make a valid-looking transaction from someone else's
    # address (usually unfunded): refuse it here, where the cause is still visible.
    public_key = _recover(digest, y_parity, r, s)
    if public_key is None or _address_of(public_key) != signer.address:
        raise SignerError(f"signature from {signer.address} does not recover to it")
    raw = encode_signed(tx, y_parity, r, s)
    return SignedTransaction(raw=raw, tx_hash="0x" + keccak(raw).hex())


def _check_digest(digest: bytes) -> None:
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise SignerError("a digest is exactly 32 bytes")


# --- local keystore -------------------------------------------------------------------


class LocalSigner:
    """A private key held in this process, for development (anvil's keys, a dev keystore)."""

    def __init__(self, private_key: bytes) -> None:
        try:
            self._key = coincurve.PrivateKey(private_key)
        except (ValueError, TypeError):
            raise SignerError("not a valid secp256k1 private key") from None  # never echo the key
        self.address = _address_of(self._key.public_key.format(compressed=False))

    def __repr__(self) -> str:
        return f"LocalSigner({self.address})"

    @classmethod
    def from_keystore(cls, path: Path, passphrase: str) -> LocalSigner:
        keystore = _read_keystore(path)
        try:
            private_key = bytes(Account.decrypt(keystore, passphrase))
        except (ValueError, KeyError, TypeError, NotImplementedError) as exc:
            # `from None` keeps eth-account's frames (and their arguments) out of tracebacks.
            raise SignerError(f"keystore {path}: {_decrypt_failure(exc)}") from None
        signer = cls(private_key)
        stated = _stated_address(keystore)
        if stated is not None and stated != signer.address:
            raise SignerError(f"keystore {path}: says {stated} but holds the key of {signer.address}")
        return signer

    async def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        _check_digest(digest)
        # libsecp256k1 always returns low s, and the recovery id alongside.
        signature = self._key.sign_recoverable(digest, hasher=None)
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:64], "big")
        return signature[64], r, s


def _decrypt_failure(exc: Exception) -> str:
    # The MAC is over the derived key and the ciphertext: a mismatch is a wrong passphrase
    # (or a tampered ciphertext, which the passphrase's owner can rule out).
    if isinstance(exc, ValueError) and str(exc) == "MAC mismatch":
        return "wrong passphrase (MAC mismatch)"
    return f"not a usable v3 keystore ({type(exc).__name__})"


def _read_keystore(path: Path) -> dict[str, Any]:
    try:
        keystore = json.loads(path.read_bytes())
    except OSError as exc:
        raise SignerError(f"keystore {path}: cannot read it ({exc.strerror})") from exc
    except ValueError as exc:
        raise SignerError(f"keystore {path}: not JSON") from exc
    if not isinstance(keystore, dict) or keystore.get("version") != 3 or "crypto" not in keystore:
        raise SignerError(f"keystore {path}: not a v3 keystore")
    return keystore


def _stated_address(keystore: dict[str, Any]) -> str | None:
    """The keystore's plaintext `address` field, lower-case 0x, if it has a valid one."""
    stated = keystore.get("address")
    if not isinstance(stated, str):
        return None
    stated = "0x" + stated.lower().removeprefix("0x")
    return stated if ADDRESS_RE.fullmatch(stated) else None


def _private_key_bytes(private_key: str) -> bytes:
    try:
        key = bytes.fromhex(private_key.removeprefix("0x"))
    except ValueError:
        raise SignerError("private key must be 32 bytes of hex") from None
    if len(key) != 32:
        raise SignerError("private key must be 32 bytes of hex")
    return key


def write_keystore(path: Path, private_key: str, passphrase: str, *, kdf_iterations: int | None = None) -> str:
    """Encrypt `private_key` into a v3 keystore at `path` and return its address.

    scrypt always (memory-hard; eth-account's default); `kdf_iterations` is scrypt's cost N,
    a power of two (None: eth-account's 2**18; tests pass a small one). Rewriting the same
    key (a new passphrase) is allowed; replacing another key is refused: that would lose it.
    """
    if kdf_iterations is not None and (kdf_iterations < 2 or kdf_iterations & (kdf_iterations - 1)):
        raise SignerError("kdf_iterations is scrypt's N: a power of two, at least 2")
    key = _private_key_bytes(private_key)
    address = LocalSigner(key).address
    if path.exists():
        try:
            existing = _stated_address(_read_keystore(path))
        except SignerError as exc:
            raise SignerError(f"{exc}; refusing to overwrite it") from exc
        if existing != address:
            raise SignerError(f"keystore {path} holds another key ({existing}); refusing to overwrite it")
    keystore = Account.encrypt(key, passphrase, kdf="scrypt", iterations=kdf_iterations)
    _write_private_file(path, json.dumps(keystore).encode())
    return address


def _write_private_file(path: Path, content: bytes) -> None:
    """Write 0600 via a temporary file in the same directory and a rename: a crash leaves
    the old file or the new one, never half of one (the suffix keeps it out of *.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def load_keystore_dir(directory: Path, passphrase: str) -> dict[str, Signer]:
    """Every *.json keystore in `directory` (one passphrase for all), by lower-case address."""
    if not directory.is_dir():
        raise SignerError(f"keystore directory {directory} does not exist")
    signers: dict[str, Signer] = {}
    for path in sorted(directory.glob("*.json")):
        signer = LocalSigner.from_keystore(path, passphrase)
        if signer.address in signers:
            raise SignerError(f"keystore {path}: {signer.address} is already in another file")
        signers[signer.address] = signer
    return signers


# --- DER (the little of it KMS returns) -------------------------------------------------


def _der_read(data: bytes, offset: int, tag: int) -> tuple[bytes, int]:
    """The contents of the TLV at `offset` (which must carry `tag`) and the offset after it.
    Short-form lengths only: everything we parse is under 128 bytes, and strict DER forbids
    the long form there."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise SignerError(f"DER: expected tag 0x{tag:02x} at byte {offset}")
    length = data[offset + 1]
    if length >= 0x80:
        raise SignerError("DER: long-form length where the short form is required")
    end = offset + 2 + length
    if end > len(data):
        raise SignerError("DER: length runs past the end")
    return data[offset + 2 : end], end


def _der_whole(data: bytes, tag: int) -> bytes:
    contents, end = _der_read(data, 0, tag)
    if end != len(data):
        raise SignerError("DER: trailing bytes")
    return contents


def _der_unsigned(contents: bytes) -> int:
    if not 1 <= len(contents) <= DER_MAX_UINT_BYTES:
        raise SignerError(f"DER: INTEGER of {len(contents)} bytes")
    if contents[0] & 0x80:
        raise SignerError("DER: negative INTEGER")
    # A 0x00 byte is only allowed to keep the next byte's high bit from reading as a sign.
    if len(contents) > 1 and contents[0] == 0 and not contents[1] & 0x80:
        raise SignerError("DER: INTEGER with a redundant leading zero")
    return int.from_bytes(contents, "big")


def decode_der_signature(der: bytes) -> tuple[int, int]:
    """(r, s) from an ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }, strict DER."""
    if not isinstance(der, bytes):
        raise SignerError("DER: a signature is bytes")
    body = _der_whole(der, DER_SEQUENCE)
    r_contents, offset = _der_read(body, 0, DER_INTEGER)
    s_contents, offset = _der_read(body, offset, DER_INTEGER)
    if offset != len(body):
        raise SignerError("DER: trailing bytes inside the SEQUENCE")
    r, s = _der_unsigned(r_contents), _der_unsigned(s_contents)
    if not (1 <= r < SECP256K1_N and 1 <= s < SECP256K1_N):
        raise SignerError("DER: r or s outside [1, n)")
    return r, s


def decode_spki_secp256k1(der: bytes) -> bytes:
    """The uncompressed point (0x04 ‖ X ‖ Y) of a secp256k1 SubjectPublicKeyInfo."""
    body = _der_whole(der, DER_SEQUENCE)
    algorithm, offset = _der_read(body, 0, DER_SEQUENCE)
    if algorithm != SECP256K1_SPKI_ALGORITHM:
        raise SignerError("public key is not an EC key on secp256k1")
    bit_string, offset = _der_read(body, offset, DER_BIT_STRING)
    if offset != len(body):
        raise SignerError("DER: trailing bytes in the SubjectPublicKeyInfo")
    # One leading byte counts unused bits (0); then 0x04 marks an uncompressed point.
    if len(bit_string) != 66 or bit_string[:2] != b"\x00\x04":
        raise SignerError("public key is not an uncompressed secp256k1 point")
    try:
        return coincurve.PublicKey(bit_string[1:]).format(compressed=False)
    except ValueError:
        raise SignerError("public key is not a point on secp256k1") from None


# --- AWS KMS ----------------------------------------------------------------------------


class KmsSigner:
    """An AWS KMS key (ECC_SECG_P256K1, SIGN_VERIFY); the private key never leaves KMS."""

    def __init__(self, key_id: str, client: Any) -> None:
        self.key_id = key_id
        self._client = client
        # Read once (a blocking call, at startup): the address never changes for a key.
        self._public_key = _kms_public_key(key_id, client)
        self.address = _address_of(self._public_key)

    def __repr__(self) -> str:
        return f"KmsSigner({self.key_id}, {self.address})"

    async def sign_digest(self, digest: bytes) -> tuple[int, int, int]:
        _check_digest(digest)
        der = await asyncio.to_thread(self._sign_der, digest)  # boto3 is blocking
        r, s = decode_der_signature(der)
        if s > SECP256K1_HALF_N:
            s = SECP256K1_N - s  # KMS returns either half; both verify, EIP-2 accepts the low one
        for y_parity in (0, 1):
            if _recover(digest, y_parity, r, s) == self._public_key:
                return y_parity, r, s
        raise SignerError(f"KMS key {self.key_id}: signature does not verify against its public key")

    def _sign_der(self, digest: bytes) -> bytes:
        try:
            reply = self._client.sign(
                KeyId=self.key_id,
                Message=digest,
                MessageType="DIGEST",  # KMS must not hash again: the digest is keccak256 already
                SigningAlgorithm=KMS_SIGNING_ALGORITHM,
            )
        except (BotoCoreError, ClientError) as exc:
            raise SignerError(f"KMS key {self.key_id}: Sign failed: {exc}") from exc
        signature = reply.get("Signature")
        if not isinstance(signature, bytes):
            raise SignerError(f"KMS key {self.key_id}: Sign returned no signature")
        return signature


def _kms_public_key(key_id: str, client: Any) -> bytes:
    try:
        reply = client.get_public_key(KeyId=key_id)
    except (BotoCoreError, ClientError) as exc:
        raise SignerError(f"KMS key {key_id}: GetPublicKey failed: {exc}") from exc
    # KMS returns KeySpec and its deprecated alias CustomerMasterKeySpec; moto only the latter.
    key_spec = reply.get("KeySpec") or reply.get("CustomerMasterKeySpec")
    if key_spec != KMS_KEY_SPEC:
        raise SignerError(f"KMS key {key_id}: KeySpec is {key_spec}, not {KMS_KEY_SPEC}")
    if reply.get("KeyUsage") != KMS_KEY_USAGE:
        raise SignerError(f"KMS key {key_id}: KeyUsage is {reply.get('KeyUsage')}, not {KMS_KEY_USAGE}")
    public_key = reply.get("PublicKey")
    if not isinstance(public_key, bytes):
        raise SignerError(f"KMS key {key_id}: GetPublicKey returned no public key")
    return decode_spki_secp256k1(public_key)


def kms_signers(key_ids: Sequence[str], region: str | None, endpoint_url: str | None = None) -> dict[str, Signer]:
    """One KmsSigner per key id (or alias / ARN), by lower-case address, sharing one client."""
    client = boto3.client("kms", region_name=region, endpoint_url=endpoint_url)
    signers: dict[str, Signer] = {}
    for key_id in key_ids:
        signer = KmsSigner(key_id, client)
        if signer.address in signers:
            raise SignerError(f"KMS key {key_id}: {signer.address} is already configured under another id")
        signers[signer.address] = signer
    return signers
