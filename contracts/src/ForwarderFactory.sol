// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {DepositForwarder} from "./DepositForwarder.sol";
import {IERC20Minimal} from "./TokenCalls.sol";

/// Deposit addresses: the CREATE2 address of an EIP-1167 clone of one DepositForwarder per
/// salt. The operator sweeps many of them per transaction, deploying each clone on first
/// use. Funds only ever go to the treasury, fixed here at construction: a stolen operator
/// key can move deposits early, never elsewhere.
contract ForwarderFactory {
    /// Bounds the work of one transaction: a first sweep of an address costs about 58k gas
    /// with a plain ERC-20, so a full batch (23M) fits a 30M-gas block with room to spare.
    uint256 public constant MAX_SWEEP_ITEMS = 400;

    address public immutable treasury;
    address public immutable implementation;
    /// keccak256 of the clone's creation code: CREATE2 addresses derive from it.
    bytes32 public immutable cloneCodeHash;
    address public owner;
    address public operator;

    event Swept(bytes32 indexed salt, address indexed forwarder, address indexed token, uint256 amount);
    event ForwarderDeployed(bytes32 indexed salt, address indexed forwarder);
    event OperatorChanged(address indexed previousOperator, address indexed newOperator);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    error NotOperator();
    error NotOwner();
    error ZeroAddress();
    error LengthMismatch(uint256 salts, uint256 tokens);
    error TooManyItems(uint256 items, uint256 max);
    error DeployFailed(bytes32 salt);

    constructor(address treasury_, address operator_) {
        if (treasury_ == address(0) || operator_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        owner = msg.sender;
        operator = operator_;
        // Deployed here so its `factory` immutable is this contract.
        address impl = address(new DepositForwarder());
        implementation = impl;
        cloneCodeHash = keccak256(_cloneCode(impl));
        emit OwnershipTransferred(address(0), msg.sender);
        emit OperatorChanged(address(0), operator_);
    }

    /// The deposit address for `salt`, whether or not it is deployed yet.
    function addressOf(bytes32 salt) public view returns (address) {
        bytes32 hash = keccak256(abi.encodePacked(bytes1(0xff), address(this), salt, cloneCodeHash));
        return address(uint160(uint256(hash)));
    }

    /// For each i, moves the whole balance of `tokens[i]` at `addressOf(salts[i])` to the
    /// treasury. A zero balance is skipped (nothing is deployed for it), so a repeated or
    /// premature sweep costs gas but never fails.
    function sweep(bytes32[] calldata salts, address[] calldata tokens) external {
        if (msg.sender != operator) revert NotOperator();
        if (salts.length != tokens.length) revert LengthMismatch(salts.length, tokens.length);
        if (salts.length > MAX_SWEEP_ITEMS) revert TooManyItems(salts.length, MAX_SWEEP_ITEMS);
        for (uint256 i = 0; i < salts.length; ++i) {
            address forwarder = addressOf(salts[i]);
            if (IERC20Minimal(tokens[i]).balanceOf(forwarder) == 0) continue;
            if (forwarder.code.length == 0) _deploy(salts[i], forwarder);
            uint256 amount = DepositForwarder(forwarder).sweep(tokens[i], treasury);
            emit Swept(salts[i], forwarder, tokens[i], amount);
        }
    }

    function setOperator(address newOperator) external {
        if (msg.sender != owner) revert NotOwner();
        if (newOperator == address(0)) revert ZeroAddress();
        emit OperatorChanged(operator, newOperator);
        operator = newOperator;
    }

    function transferOwnership(address newOwner) external {
        if (msg.sender != owner) revert NotOwner();
        if (newOwner == address(0)) revert ZeroAddress();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function _deploy(bytes32 salt, address expected) private {
        bytes memory code = _cloneCode(implementation);
        address deployed;
        assembly ("memory-safe") {
            deployed := create2(0, add(code, 0x20), mload(code), salt)
        }
        if (deployed != expected) revert DeployFailed(salt);
        emit ForwarderDeployed(salt, deployed);
    }

    /// EIP-1167 creation code: a 10-byte constructor returning the 45-byte runtime, which
    /// delegatecalls every call to `impl` and passes its return data or revert through.
    function _cloneCode(address impl) private pure returns (bytes memory) {
        return abi.encodePacked(
            hex"3d602d80600a3d3981f3363d3d373d3d3d363d73", impl, hex"5af43d82803e903d91602b57fd5bf3"
        );
    }
}
