"""Decoding the two events we count, by hand: the layouts are fixed by the ABI, and a
generic ABI decoder costs more per log than the rest of ingestion together."""

from __future__ import annotations

from typing import Any

from eth_utils.crypto import keccak

from stablegate.chains.repository import Block, Observation

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
INTENT_PAID_TOPIC = "0x" + keccak(text="IntentPaid(bytes32,address,address,address,uint256,uint256)").hex()
WORD_HEX = 64


def topic_address(topic: str) -> str:
    """The address in an indexed 32-byte topic (left-padded with zeros)."""
    return "0x" + topic[-40:].lower()


def address_topic(address: str) -> str:
    return "0x" + "0" * 24 + address[2:].lower()


def _word(data: str, index: int) -> str:
    start = 2 + index * WORD_HEX
    return data[start : start + WORD_HEX]


def block(header: dict[str, Any]) -> Block:
    return Block(
        number=int(header["number"], 16),
        hash=header["hash"].lower(),
        parent_hash=header["parentHash"].lower(),
        timestamp_s=int(header["timestamp"], 16),
    )


def transfer(log: dict[str, Any], owner_ref: str | None, to: str | None = None) -> Observation | None:
    """An ERC-20 Transfer log; None when it is not one (ERC-721 Transfer has 4 topics).
    `to` may be passed when the caller decoded it already."""
    topics, data = log["topics"], log["data"]
    if len(topics) != 3 or len(data) != 2 + WORD_HEX:
        return None
    return Observation(
        log["transactionHash"].lower(),
        int(log["logIndex"], 16),
        int(log["blockNumber"], 16),
        log["blockHash"].lower(),
        "transfer",
        log["address"].lower(),
        topic_address(topics[1]),
        to if to is not None else topic_address(topics[2]),
        int(data, 16),
        0,
        None,
        owner_ref,
    )


def intent_paid(log: dict[str, Any]) -> Observation | None:
    """IntentPaid(bytes32 indexed id, address indexed payer, address indexed token,
    address recipient, uint256 amount, uint256 fee) from our router."""
    topics, data = log["topics"], log["data"]
    if len(topics) != 4 or len(data) != 2 + 3 * WORD_HEX:
        return None
    return Observation(
        tx_hash=log["transactionHash"].lower(),
        log_index=int(log["logIndex"], 16),
        block_number=int(log["blockNumber"], 16),
        block_hash=log["blockHash"].lower(),
        kind="intent_paid",
        token=topic_address(topics[3]),
        from_address=topic_address(topics[2]),
        to_address="0x" + _word(data, 0)[-40:].lower(),
        amount=int(_word(data, 1), 16),
        fee=int(_word(data, 2), 16),
        intent_id=topics[1].lower(),
    )
