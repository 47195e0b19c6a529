// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.30;

/// A Chainlink AggregatorV3-shaped price feed whose owner sets the answer and its
/// timestamp, so local runs and tests can move the rate or make it stale.
contract MockPriceFeed {
    struct Round {
        int256 answer;
        uint256 startedAt;
        uint256 updatedAt;
    }

    uint8 public immutable decimals;
    string public description;
    uint256 public constant version = 4;
    address public owner;
    uint80 public latestRound;
    mapping(uint80 => Round) private _rounds;

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);

    error NotOwner();
    error NoSuchRound(uint80 roundId);

    constructor(uint8 decimals_, string memory description_, int256 answer) {
        decimals = decimals_;
        description = description_;
        owner = msg.sender;
        _newRound(answer, block.timestamp);
    }

    /// A new round with `answer`, updated now.
    function setAnswer(int256 answer) external {
        if (msg.sender != owner) revert NotOwner();
        _newRound(answer, block.timestamp);
    }

    /// A new round with `answer` reported as updated at `updatedAt` (in the past for a stale feed).
    function setRoundData(int256 answer, uint256 updatedAt) external {
        if (msg.sender != owner) revert NotOwner();
        _newRound(answer, updatedAt);
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return getRoundData(latestRound);
    }

    function getRoundData(uint80 roundId)
        public
        view
        returns (uint80, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        Round memory round = _rounds[roundId];
        if (round.updatedAt == 0) revert NoSuchRound(roundId);
        return (roundId, round.answer, round.startedAt, round.updatedAt, roundId);
    }

    function latestAnswer() external view returns (int256) {
        return _rounds[latestRound].answer;
    }

    function _newRound(int256 answer, uint256 updatedAt) private {
        uint80 roundId = latestRound + 1;
        latestRound = roundId;
        _rounds[roundId] = Round(answer, updatedAt, updatedAt);
        emit AnswerUpdated(answer, roundId, updatedAt);
    }
}
