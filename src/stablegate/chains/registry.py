"""The chain registry: which chains we follow, through which RPC endpoints, how deep a
block must be before we trust it, and which token contracts count.

Presets carry public facts (chain ids, the canonical USDC/USDT contracts as published by
Circle and Tether). Configuration picks presets and supplies RPC URLs:

    STABLEGATE_CHAINS=base,arbitrum
    STABLEGATE_RPC_BASE=https://a.example/rpc,https://b.example/rpc

or a JSON file (STABLEGATE_CHAINS_FILE) holding a list of chain objects with the fields of
`ChainConfig` (tokens as objects with the fields of `TokenConfig`) for anything else.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
MAX_RANGE_BLOCKS = 10_000


@dataclass(frozen=True)
class TokenConfig:
    symbol: str
    address: str  # lower-case 0x hex: the form logs carry
    decimals: int
    asset: str  # the ledger's asset code, e.g. USDC.base

    def __post_init__(self) -> None:
        assert ADDRESS.fullmatch(self.address), f"token address {self.address!r}"
        object.__setattr__(self, "address", self.address.lower())
        assert 0 <= self.decimals <= 36


_ADDRESS_FIELDS = (
    "router",
    "deposit_factory",
    "forwarder_implementation",
    "treasury",
    "fee_recipient",
    "disperse",
    "operator",
)


# The most time the follower's watermark may vouch for past a stuck tip; the payments
# expiry grace (EXPIRY_GRACE_S) is at least this, so no payment expires on unseen blocks.
MAX_BLOCK_INTERVAL_S = 30

CHAIN_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?$")


@dataclass(frozen=True)
class ChainConfig:
    name: str
    chain_id: int
    rpc_urls: tuple[str, ...] = ()
    # Blocks counted including the one holding the log; None with finality="finalized".
    confirmations: int | None = 12
    finality: str = "depth"  # depth | finalized
    poll_interval_ms: int = 2_000
    max_range_blocks: int = 2_000
    start_block: int | None = None  # None: start at the head on the first run
    tokens: tuple[TokenConfig, ...] = ()
    router: str | None = None  # our PaymentRouter, when deployed on this chain
    # Our deposit-address factory and the forwarder it clones (rails/deposits.py).
    deposit_factory: str | None = None
    forwarder_implementation: str | None = None
    reorg_window_blocks: int = 128
    # The longest gap between blocks on a healthy chain; a head older than this means the
    # providers are stuck, and the follower stops vouching for time past it (follower.
    # watermark, the payments expiry job). None: blocks come only on demand (a dev chain).
    # At most MAX_BLOCK_INTERVAL_S: a stuck provider may hide that much time, which the
    # payments expiry grace must cover. Too small only delays expiries (a slow block
    # looks stuck for a moment); too large would expire payments on unseen money.
    max_block_interval_s: int | None = None
    # Where router payments go (the platform's collection wallet and fee wallet). Deposit
    # addresses forward to the factory's treasury, set when it was deployed.
    treasury: str | None = None
    fee_recipient: str | None = None
    # Real money: only live-mode payments may use it (and test-mode ones only other chains).
    livemode: bool = False
    # Settlement (design 0006): our Disperse contract for batch payouts, and the factory's
    # sweep operator (the signer of sweeps). Payouts and refunds are signed by `treasury`.
    disperse: str | None = None
    operator: str | None = None

    def __post_init__(self) -> None:
        if not CHAIN_NAME.fullmatch(self.name):
            # The name is part of every asset code on the chain (USDC.<name>) and of the
            # ledger export's commodities, which cannot end in "-".
            raise ValueError(f"chain name {self.name!r}: 1-24 of a-z, 0-9 and '-', not first or last")
        assert self.finality in ("depth", "finalized"), self.finality
        assert self.finality == "finalized" or (self.confirmations is not None and self.confirmations >= 1)
        assert 1 <= self.max_range_blocks <= MAX_RANGE_BLOCKS
        assert self.poll_interval_ms >= 10
        assert self.max_block_interval_s is None or 1 <= self.max_block_interval_s <= MAX_BLOCK_INTERVAL_S
        for name in _ADDRESS_FIELDS:
            value = getattr(self, name)
            if value is not None:
                assert ADDRESS.fullmatch(value), f"{name} address {value!r}"
                object.__setattr__(self, name, value.lower())

    def token(self, address: str) -> TokenConfig | None:
        address = address.lower()
        return next((t for t in self.tokens if t.address == address), None)

    @property
    def depth(self) -> int:
        """Blocks kept for reorg checks and pruning: at least the confirmation depth, twice."""
        return max(2 * (self.confirmations or 64), self.reorg_window_blocks)


def _tokens(suffix: str, usdc: str, usdt: str | None = None) -> tuple[TokenConfig, ...]:
    tokens = [TokenConfig("USDC", usdc, 6, f"USDC.{suffix}")]
    if usdt is not None:
        tokens.append(TokenConfig("USDT", usdt, 6, f"USDT.{suffix}"))
    return tuple(tokens)


# Confirmation defaults: L1 Ethereum by depth (reorgs beyond a few blocks are very rare
# post-merge; `finalized` is ~13 min); rollups whose sequencer gives fast soft finality
# use modest depths; Polygon PoS has seen deep reorgs, so it waits longest.
PRESETS: dict[str, ChainConfig] = {
    "ethereum": ChainConfig(
        "ethereum",
        1,
        livemode=True,
        max_block_interval_s=30,
        confirmations=12,
        poll_interval_ms=4_000,
        max_range_blocks=1_000,
        tokens=_tokens(
            "eth", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "0xdAC17F958D2ee523a2206206994597C13D831ec7"
        ),
    ),
    "base": ChainConfig(
        "base",
        8453,
        livemode=True,
        max_block_interval_s=30,
        confirmations=10,
        poll_interval_ms=1_000,
        max_range_blocks=2_000,
        tokens=_tokens("base", "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
    ),
    "polygon": ChainConfig(
        "polygon",
        137,
        livemode=True,
        max_block_interval_s=30,
        confirmations=128,
        poll_interval_ms=1_000,
        max_range_blocks=1_000,
        reorg_window_blocks=512,
        tokens=_tokens(
            "polygon", "0x3c499c542cEF5E3811e1192ce70d8cC03d5c3359", "0xc2132D05D31c914a87C6611C10748AEb04B58e8F"
        ),
    ),
    "arbitrum": ChainConfig(
        "arbitrum",
        42161,
        livemode=True,
        max_block_interval_s=30,
        confirmations=20,
        poll_interval_ms=1_000,
        max_range_blocks=5_000,
        tokens=_tokens(
            "arb", "0xaf88d065e77c8cC2239327C5EDb3A432268e5831", "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9"
        ),
    ),
    "optimism": ChainConfig(
        "optimism",
        10,
        livemode=True,
        max_block_interval_s=30,
        confirmations=10,
        poll_interval_ms=1_000,
        max_range_blocks=2_000,
        tokens=_tokens(
            "op", "0x0b2C639c533813f4Aa9D7837CAf62653d097Ff85", "0x94b008aA00579c1307B0EF2c499aD98a8ce58e58"
        ),
    ),
    # The local anvil chain: token and router addresses come from the local deployment.
    "local": ChainConfig(
        "local", 31337, rpc_urls=("http://127.0.0.1:8545",), confirmations=3, poll_interval_ms=250, start_block=0
    ),
}


def local_chain(rpc_url: str, tokens: tuple[TokenConfig, ...], **contracts: Any) -> ChainConfig:
    """The `local` preset pointed at a running anvil and its deployed contracts (router,
    deposit_factory, forwarder_implementation) plus any other overrides."""
    return replace(PRESETS["local"], rpc_urls=(rpc_url,), tokens=tokens, **contracts)


def from_dict(raw: dict[str, Any]) -> ChainConfig:
    base = PRESETS.get(raw.get("preset", raw.get("name", "")))
    fields = {k: v for k, v in raw.items() if k != "preset"}
    if "tokens" in fields:
        fields["tokens"] = tuple(TokenConfig(**t) for t in fields["tokens"])
    if "rpc_urls" in fields:
        fields["rpc_urls"] = tuple(fields["rpc_urls"])
    return replace(base, **fields) if base is not None else ChainConfig(**fields)


def to_dict(chain: ChainConfig) -> dict[str, Any]:
    """The JSON form `from_dict` and STABLEGATE_CHAINS_FILE read."""
    return asdict(chain)


def configured(env: dict[str, str] | None = None) -> list[ChainConfig]:
    """The chains this process follows, from the environment (see the module docstring)."""
    env = dict(os.environ) if env is None else env
    chains: list[ChainConfig] = []
    if env.get("STABLEGATE_CHAINS_FILE"):
        raw = json.loads(Path(env["STABLEGATE_CHAINS_FILE"]).read_text())
        chains += [from_dict(item) for item in raw]
    for name in filter(None, (n.strip() for n in env.get("STABLEGATE_CHAINS", "").split(","))):
        if name not in PRESETS:
            raise ValueError(f"STABLEGATE_CHAINS: unknown chain {name!r} (known: {', '.join(sorted(PRESETS))})")
        urls = tuple(u.strip() for u in env.get(f"STABLEGATE_RPC_{name.upper()}", "").split(",") if u.strip())
        chains.append(replace(PRESETS[name], rpc_urls=urls or PRESETS[name].rpc_urls))
    for chain in chains:
        if not chain.rpc_urls:
            raise ValueError(f"chain {chain.name}: no RPC URL (set STABLEGATE_RPC_{chain.name.upper()})")
    return chains
