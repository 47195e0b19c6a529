"""The local chain for `stablegate dev` and `stablegate demo`: anvil, our contracts and test
tokens on it, and the `local` chain configuration that points the follower at them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from stablegate.chains import registry
from stablegate.chains.anvil import LOCAL_CHAIN_ID, Anvil
from stablegate.chains.registry import ChainConfig, TokenConfig
from stablegate.kit.net import free_port
from stablegate.rails.deploy import LocalStack, ensure_local

LOCAL_CONFIRMATIONS = 3


@dataclass(frozen=True)
class LocalNet:
    anvil: Anvil
    stack: LocalStack
    chain: ChainConfig


def chain_config(stack: LocalStack, rpc_url: str, **overrides: object) -> ChainConfig:
    tokens = (
        TokenConfig("USDC", stack.usdc, 6, "USDC.local"),
        TokenConfig("DAI", stack.dai, 18, "DAI.local"),
    )
    contracts = {
        "router": stack.router,
        "deposit_factory": stack.factory,
        "forwarder_implementation": stack.forwarder_implementation,
        "treasury": stack.treasury,
        "fee_recipient": stack.fee_recipient,
        "disperse": stack.disperse,
        "operator": stack.deployer,
        "confirmations": LOCAL_CONFIRMATIONS,
    }
    return registry.local_chain(rpc_url, tokens, **(contracts | overrides))


@contextlib.contextmanager
def running(
    port: int | None = None,
    state_path: Path | None = None,
    block_time_s: int | None = 1,
    chain_id: int = LOCAL_CHAIN_ID,
    name: str = "local",
) -> Iterator[LocalNet]:
    """anvil with our stack deployed (once: a --state file keeps it across runs). After the
    deployment (instant mining: ~30 transactions), blocks come every `block_time_s` as on a
    real chain, so confirmations arrive by themselves."""
    anvil = Anvil(port=port or free_port(), state_path=state_path, chain_id=chain_id)
    with anvil:
        stack = ensure_local(anvil.url)
        if block_time_s is not None:
            reply = httpx.post(anvil.url, json=_rpc("evm_setIntervalMining", [block_time_s]), timeout=10)
            assert "error" not in reply.json(), reply.text
        yield LocalNet(anvil, stack, chain_config(stack, anvil.url, chain_id=chain_id, name=name))


def _rpc(method: str, params: list[object]) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
