// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// A token call did not succeed: it reverted, returned something other than `true`, or
/// the token address has no code.
error TransferFailed(address token);

/// The ERC-20 calls our contracts make. Declared here (not imported) so the sources stay
/// self-contained.
interface IERC20Minimal {
    function balanceOf(address account) external view returns (uint256);
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// `token.transfer(to, amount)` that also accepts tokens returning nothing (USDT-style).
function safeTransfer(address token, address to, uint256 amount) {
    _callToken(token, abi.encodeCall(IERC20Minimal.transfer, (to, amount)));
}

/// `token.transferFrom(from, to, amount)` that also accepts tokens returning nothing.
function safeTransferFrom(address token, address from, address to, uint256 amount) {
    _callToken(token, abi.encodeCall(IERC20Minimal.transferFrom, (from, to, amount)));
}

/// Succeeds when the call succeeded and returned either nothing or ABI-encoded `true`.
/// A call to an address without code "succeeds" with empty return data, so empty
/// return data is only trusted from a contract.
function _callToken(address token, bytes memory data) {
    (bool ok, bytes memory returned) = token.call(data);
    if (!ok) revert TransferFailed(token);
    if (returned.length == 0) {
        if (token.code.length == 0) revert TransferFailed(token);
    } else if (returned.length != 32 || abi.decode(returned, (uint256)) != 1) {
        revert TransferFailed(token);
    }
}
