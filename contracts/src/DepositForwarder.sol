// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {IERC20Minimal, safeTransfer} from "./TokenCalls.sol";

/// The code behind every deposit address. Each deposit address is an EIP-1167 clone of
/// one implementation, deployed by the factory only when it is first swept; until then
/// tokens simply accumulate at the (counterfactual) address.
///
/// The factory address is an immutable, i.e. part of this code, so every clone (which
/// runs this code by delegatecall) obeys the same factory and nobody else.
contract DepositForwarder {
    address public immutable factory;

    error NotFactory();

    constructor() {
        factory = msg.sender;
    }

    /// Moves this address's whole balance of `token` to `to`; returns the amount moved.
    function sweep(address token, address to) external returns (uint256 amount) {
        if (msg.sender != factory) revert NotFactory();
        amount = IERC20Minimal(token).balanceOf(address(this));
        if (amount > 0) safeTransfer(token, to, amount);
    }
}
