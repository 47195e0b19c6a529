// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

import {safeTransferFrom} from "./TokenCalls.sol";

/// Many token transfers in one transaction, each straight from the sender to its recipient
/// (the sender approves this contract first). For batch payouts.
contract Disperse {
    /// Bounds the work of one transaction (about 30k gas per recipient).
    uint256 public constant MAX_RECIPIENTS = 500;

    error LengthMismatch(uint256 recipients, uint256 amounts);
    error TooManyRecipients(uint256 recipients, uint256 max);

    function disperseToken(address token, address[] calldata recipients, uint256[] calldata amounts) external {
        if (recipients.length != amounts.length) revert LengthMismatch(recipients.length, amounts.length);
        if (recipients.length > MAX_RECIPIENTS) revert TooManyRecipients(recipients.length, MAX_RECIPIENTS);
        for (uint256 i = 0; i < recipients.length; ++i) {
            safeTransferFrom(token, msg.sender, recipients[i], amounts[i]);
        }
    }
}
