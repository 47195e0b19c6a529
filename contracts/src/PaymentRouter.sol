// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {domainSeparatorOf, recoverSigner, typedDataDigest} from "./Signatures.sol";
import {safeTransferFrom} from "./TokenCalls.sol";

interface IERC2612 {
    function permit(address owner, address spender, uint256 value, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;
}

/// Pays an operator-signed payment intent: the exact amount of the exact token, not after
/// its deadline, at most once per id, with the merchant's share and the platform fee moved
/// in the same call. The router never holds funds: it moves them from the payer directly.
contract PaymentRouter {
    struct Intent {
        bytes32 id;
        address token;
        uint256 amount; // what the payer pays in total, token base units
        uint256 fee; // of which the platform's fee
        address recipient;
        address feeRecipient;
        uint256 deadline; // unix seconds, inclusive
    }

    bytes32 public constant INTENT_TYPEHASH = keccak256(
        "Intent(bytes32 id,address token,uint256 amount,uint256 fee,address recipient,address feeRecipient,uint256 deadline)"
    );
    bytes32 private constant NAME_HASH = keccak256("Stablegate PaymentRouter");
    bytes32 private constant VERSION_HASH = keccak256("1");

    address public owner;
    address public signer;
    mapping(bytes32 => bool) public paid;

    event IntentPaid(
        bytes32 indexed id, address indexed payer, address indexed token, address recipient, uint256 amount, uint256 fee
    );
    event SignerChanged(address indexed previousSigner, address indexed newSigner);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error Expired(bytes32 id, uint256 deadline);
    error AlreadyPaid(bytes32 id);
    error BadSignature();
    error BadAmount();
    error BadRecipient();
    error NotOwner();
    error ZeroAddress();

    constructor(address signer_) {
        if (signer_ == address(0)) revert ZeroAddress();
        owner = msg.sender;
        signer = signer_;
        emit OwnershipTransferred(address(0), msg.sender);
        emit SignerChanged(address(0), signer_);
    }

    function pay(Intent calldata intent, bytes calldata signature) external {
        _pay(intent, signature);
    }

    /// Approves through EIP-2612 and pays in one transaction. The permit is only tried:
    /// anyone can submit a signed permit first (front-running it), which spends its nonce
    /// and makes ours revert, yet leaves the allowance in place, so the payment proceeds.
    /// If the allowance is missing, the transfer fails and the whole call reverts.
    function payWithPermit(
        Intent calldata intent,
        bytes calldata signature,
        uint256 permitDeadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        try IERC2612(intent.token).permit(msg.sender, address(this), intent.amount, permitDeadline, v, r, s) {} catch {}
        _pay(intent, signature);
    }

    /// The EIP-712 digest the signer signs for `intent` (for off-chain cross-checks).
    function intentDigest(Intent calldata intent) public view returns (bytes32) {
        return typedDataDigest(DOMAIN_SEPARATOR(), keccak256(abi.encode(INTENT_TYPEHASH, intent)));
    }

    /// Computed per call rather than cached, so it stays right on a forked chain id.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return domainSeparatorOf(NAME_HASH, VERSION_HASH, address(this));
    }

    function setSigner(address newSigner) external {
        if (msg.sender != owner) revert NotOwner();
        if (newSigner == address(0)) revert ZeroAddress();
        emit SignerChanged(signer, newSigner);
        signer = newSigner;
    }

    function transferOwnership(address newOwner) external {
        if (msg.sender != owner) revert NotOwner();
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function _pay(Intent calldata intent, bytes calldata signature) private {
        if (block.timestamp > intent.deadline) revert Expired(intent.id, intent.deadline);
        if (paid[intent.id]) revert AlreadyPaid(intent.id);
        if (intent.amount == 0 || intent.fee > intent.amount) revert BadAmount();
        if (intent.recipient == address(0) || (intent.fee > 0 && intent.feeRecipient == address(0))) {
            revert BadRecipient();
        }
        _checkSignature(intentDigest(intent), signature);
        // Effects before interactions: a re-entering token sees the intent as paid.
        paid[intent.id] = true;
        safeTransferFrom(intent.token, msg.sender, intent.recipient, intent.amount - intent.fee);
        if (intent.fee > 0) safeTransferFrom(intent.token, msg.sender, intent.feeRecipient, intent.fee);
        emit IntentPaid(intent.id, msg.sender, intent.token, intent.recipient, intent.amount, intent.fee);
    }

    /// Accepts exactly a 65-byte (r, s, v) signature by the current signer.
    function _checkSignature(bytes32 digest, bytes calldata signature) private view {
        if (signature.length != 65) revert BadSignature();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        address recovered = recoverSigner(digest, v, r, s);
        if (recovered == address(0) || recovered != signer) revert BadSignature();
    }
}
