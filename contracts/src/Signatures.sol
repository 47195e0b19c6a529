// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

// Half the secp256k1 group order: an `s` above it is the malleable twin of a valid
// signature (EIP-2), so only the lower one is accepted.
uint256 constant SECP256K1_HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

/// The signer of `digest`, or address(0) for any non-canonical or invalid signature
/// (high s, v other than 27/28, or a point ecrecover rejects).
function recoverSigner(bytes32 digest, uint8 v, bytes32 r, bytes32 s) pure returns (address) {
    if (uint256(s) > SECP256K1_HALF_ORDER) return address(0);
    if (v != 27 && v != 28) return address(0);
    return ecrecover(digest, v, r, s);
}

/// The EIP-712 digest of `structHash` under `domainSeparator`.
function typedDataDigest(bytes32 domainSeparator, bytes32 structHash) pure returns (bytes32) {
    return keccak256(abi.encodePacked(hex"1901", domainSeparator, structHash));
}

bytes32 constant EIP712_DOMAIN_TYPEHASH =
    keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");

/// The EIP-712 domain separator for (name, version, this chain, `verifyingContract`).
function domainSeparatorOf(bytes32 nameHash, bytes32 versionHash, address verifyingContract) view returns (bytes32) {
    return keccak256(abi.encode(EIP712_DOMAIN_TYPEHASH, nameHash, versionHash, block.chainid, verifyingContract));
}
