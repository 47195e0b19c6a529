// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {domainSeparatorOf, recoverSigner, typedDataDigest} from "./Signatures.sol";

/// An ERC-20 with EIP-2612 permit for local chains and tests. Only the deployer mints.
/// With `permitEnabled` false, `permit` always reverts: such a token (like DAI's
/// non-standard permit, from a wallet's point of view) is paid through `approve`.
contract TestStablecoin {
    bytes32 public constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    string public name;
    string public symbol;
    uint8 public immutable decimals;
    bool public immutable permitEnabled;
    string public version;
    address public immutable owner;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(address => uint256) public nonces;

    bytes32 private immutable _nameHash;
    bytes32 private immutable _versionHash;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    error NotOwner();
    error ZeroAddress();
    error InsufficientBalance(address account, uint256 balance, uint256 needed);
    error InsufficientAllowance(address spender, uint256 allowance, uint256 needed);
    error PermitDisabled();
    error PermitExpired(uint256 deadline);
    error InvalidPermitSignature();

    constructor(
        string memory name_,
        string memory symbol_,
        uint8 decimals_,
        bool permitEnabled_,
        string memory version_
    ) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        permitEnabled = permitEnabled_;
        version = version_;
        owner = msg.sender;
        _nameHash = keccak256(bytes(name_));
        _versionHash = keccak256(bytes(version_));
    }

    /// Computed per call rather than cached, so it stays right on a forked chain id.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return domainSeparatorOf(_nameHash, _versionHash, address(this));
    }

    function mint(address to, uint256 amount) external {
        if (msg.sender != owner) revert NotOwner();
        if (to == address(0)) revert ZeroAddress();
        totalSupply += amount;
        // Cannot overflow: no balance exceeds totalSupply, which the line above checked.
        unchecked {
            balanceOf[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        _approve(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        // An allowance of 2**256-1 means "unlimited" and is not spent (as most tokens do).
        if (allowed != type(uint256).max) {
            if (allowed < amount) revert InsufficientAllowance(msg.sender, allowed, amount);
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _transfer(from, to, amount);
        return true;
    }

    /// EIP-2612: approve by the holder's signature instead of a transaction.
    function permit(
        address holder,
        address spender,
        uint256 value,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external {
        if (!permitEnabled) revert PermitDisabled();
        if (block.timestamp > deadline) revert PermitExpired(deadline);
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, holder, spender, value, nonces[holder]++, deadline));
        address signer = recoverSigner(typedDataDigest(DOMAIN_SEPARATOR(), structHash), v, r, s);
        if (signer == address(0) || signer != holder) revert InvalidPermitSignature();
        _approve(holder, spender, value);
    }

    function _transfer(address from, address to, uint256 amount) private {
        if (to == address(0)) revert ZeroAddress();
        uint256 balance = balanceOf[from];
        if (balance < amount) revert InsufficientBalance(from, balance, amount);
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }

    function _approve(address holder, address spender, uint256 amount) private {
        if (spender == address(0)) revert ZeroAddress();
        allowance[holder][spender] = amount;
        emit Approval(holder, spender, amount);
    }
}
