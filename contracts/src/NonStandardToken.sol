// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// Test-only: a token whose `transfer`/`transferFrom` do not follow ERC-20's return
/// convention, to prove our contracts' token calls. Mode NO_RETURN behaves like USDT
/// (moves the funds, returns no data); mode RETURNS_FALSE moves nothing and returns false.
contract NonStandardToken {
    uint8 public constant NO_RETURN = 0;
    uint8 public constant RETURNS_FALSE = 1;

    uint8 public immutable mode;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor(uint8 mode_) {
        mode = mode_;
    }

    /// Anyone may mint: this contract only ever runs on test chains.
    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external {
        allowance[msg.sender][spender] = amount;
    }

    function transfer(address to, uint256 amount) external {
        _move(msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external {
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
    }

    function _move(address from, address to, uint256 amount) private {
        if (mode == RETURNS_FALSE) {
            assembly ("memory-safe") {
                mstore(0, 0)
                return(0, 32)
            }
        }
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
