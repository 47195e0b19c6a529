"""Rate providers: a configured peg; a Chainlink-style feed read from a real anvil (our
MockPriceFeed); stale or invalid rates refused, never used."""

from __future__ import annotations

import datetime as dt
import socket
from decimal import Decimal

import pytest
from eth_abi.abi import encode
from eth_account import Account
from web3 import Web3

from stablegate.chains.anvil import DEV_PRIVATE_KEYS, Anvil
from stablegate.chains.rpc import RpcClient
from stablegate.pricing.rates import (
    DECIMALS,
    LATEST_ROUND_DATA,
    ChainlinkFeed,
    Crossed,
    Rate,
    RateUnavailable,
    StaticRates,
    checked,
)
from stablegate.rails import contracts
from stablegate.rails.deploy import deploy_local

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)


async def test_static_rates_and_their_inverse() -> None:
    rates = StaticRates({("EUR", "USD"): Decimal("1.08")})
    assert (await rates.rate("EUR", "USD")).value == Decimal("1.08")
    assert (await rates.rate("USD", "EUR")).value == 1 / Decimal("1.08")
    with pytest.raises(RateUnavailable) as err:
        await rates.rate("GBP", "USD")
    assert err.value.reason == "rate_unknown"


class _Dated:
    """Rates with their own times (a feed's), for the cross's dating."""

    def __init__(self, rates: dict[tuple[str, str], tuple[Decimal, dt.datetime]]) -> None:
        self._rates = rates

    async def rate(self, base: str, quote: str) -> Rate:
        if (base, quote) not in self._rates:
            raise RateUnavailable("rate_unknown", f"{base}/{quote}")
        value, as_of = self._rates[base, quote]
        return Rate(base, quote, value, as_of, "t")


async def test_a_pair_priced_in_a_token_crosses_through_usd() -> None:
    """DAI/USDC is nobody's pair: DAI/USD ÷ USDC/USD, dated by the older leg (so a
    stale leg makes the cross stale); a pair with no leg in USD stays unknown."""
    old = NOW - dt.timedelta(hours=2)
    legs = {("DAI", "USD"): (Decimal("0.999"), NOW), ("USDC", "USD"): (Decimal("0.9998"), old)}
    crossed = Crossed(_Dated(legs))
    rate = await crossed.rate("DAI", "USDC")
    assert (rate.value, rate.as_of) == (Decimal("0.999") / Decimal("0.9998"), old)
    assert (await crossed.rate("DAI", "USD")).value == Decimal("0.999")  # a quoted pair is served as is
    with pytest.raises(RateUnavailable) as err:
        checked(rate, max_age_s=3600, now=NOW)
    assert err.value.reason == "rate_stale"
    with pytest.raises(RateUnavailable) as err:
        await crossed.rate("DAI", "JPY")
    assert err.value.reason == "rate_unknown"
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # a wrong feed: dated an hour ahead
    future = Crossed(_Dated({("DAI", "USD"): (Decimal(1), NOW), ("USDC", "USD"): (Decimal(1), ahead)}))
    with pytest.raises(RateUnavailable) as err:
        await future.rate("DAI", "USDC")  # not hidden behind the older leg's date
    assert err.value.reason == "rate_invalid"
    zero = Crossed(_Dated({("DAI", "USD"): (Decimal(1), NOW), ("USDC", "USD"): (Decimal(0), NOW)}))
    with pytest.raises(RateUnavailable) as err:
        await zero.rate("DAI", "USDC")
    assert err.value.reason == "rate_invalid"


def test_stale_and_invalid_rates_are_refused() -> None:
    fresh = Rate("USDC", "USD", Decimal("0.9998"), NOW - dt.timedelta(seconds=30), "t")
    assert checked(fresh, max_age_s=3600, now=NOW) is fresh
    with pytest.raises(RateUnavailable) as err:
        checked(Rate("USDC", "USD", Decimal("1"), NOW - dt.timedelta(hours=2), "t"), max_age_s=3600, now=NOW)
    assert err.value.reason == "rate_stale"
    with pytest.raises(RateUnavailable) as err:
        checked(Rate("USDC", "USD", Decimal("0"), NOW, "t"), max_age_s=3600, now=NOW)
    assert err.value.reason == "rate_invalid"
    # A few seconds ahead (block times run ahead of clocks) is fine; far ahead is not.
    ahead = Rate("USDC", "USD", Decimal("1"), NOW + dt.timedelta(seconds=20), "t")
    assert checked(ahead, max_age_s=3600, now=NOW) is ahead
    with pytest.raises(RateUnavailable) as err:
        checked(Rate("USDC", "USD", Decimal("1"), NOW + dt.timedelta(hours=1), "t"), max_age_s=3600, now=NOW)
    assert err.value.reason == "rate_invalid"


class _RoundRpc:
    """Answers a feed's two calls with fixed round data (no chain can return an
    unanswered round from our MockPriceFeed, which answers every round itself)."""

    def __init__(self, round_id: int, answered_in_round: int, updated_at: int) -> None:
        self.round = (round_id, 100_000_000, updated_at, updated_at, answered_in_round)

    async def call(self, _method: str, params: dict[str, str], _block: str) -> str:
        if params["data"] == DECIMALS:
            return "0x" + encode(["uint8"], [8]).hex()
        assert params["data"] == LATEST_ROUND_DATA
        return "0x" + encode(["uint80", "int256", "uint256", "uint256", "uint80"], list(self.round)).hex()


@pytest.mark.parametrize(
    ("round_id", "answered_in_round", "updated_at", "usable"),
    [(7, 7, 1_700_000_000, True), (7, 6, 1_700_000_000, False), (7, 7, 0, False)],
    ids=["answered", "carried from an older round", "incomplete"],
)
async def test_a_feed_round_without_its_own_answer_is_stale(
    round_id: int, answered_in_round: int, updated_at: int, usable: bool
) -> None:
    feed = ChainlinkFeed(_RoundRpc(round_id, answered_in_round, updated_at), "0xfeed", "USDC", "USD")  # type: ignore[arg-type]
    if usable:
        assert (await feed.rate("USDC", "USD")).value == Decimal(1)
        return
    with pytest.raises(RateUnavailable) as err:
        await feed.rate("USDC", "USD")
    assert err.value.reason == "rate_stale"


async def test_a_feed_that_cannot_be_read_has_no_rate() -> None:
    """The node down, or a round dated beyond any calendar: `rate_unavailable`, never a
    crash of the caller (which would answer a payment creation with a 500)."""
    beyond = ChainlinkFeed(_RoundRpc(7, 7, 2**255), "0xfeed", "USDC", "USD")  # type: ignore[arg-type]
    with pytest.raises(RateUnavailable) as err:
        await beyond.rate("USDC", "USD")
    assert err.value.reason == "rate_unavailable"
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # closed once the block ends: nothing listens there
    rpc = RpcClient("local", [f"http://127.0.0.1:{port}"], timeout_s=1)
    try:
        with pytest.raises(RateUnavailable) as err:
            await ChainlinkFeed(rpc, "0xfeed", "USDC", "USD").rate("USDC", "USD")
        assert err.value.reason == "rate_unavailable"  # refused, or retried past the read deadline
    finally:
        await rpc.aclose()


async def test_chainlink_feed_on_anvil_and_its_staleness(anvil: Anvil) -> None:
    stack = deploy_local(anvil.url)
    rpc = RpcClient("local", [anvil.url])
    feed = ChainlinkFeed(rpc, stack.price_feed.lower(), "USDC", "USD")
    try:
        rate = await feed.rate("USDC", "USD")
        assert rate.value == Decimal("1.00000000") and rate.source.startswith("chainlink:")
        assert checked(rate, max_age_s=3600, now=rate.as_of + dt.timedelta(seconds=5)) is rate

        # The feed's owner reports an old round: the provider returns it, the check refuses it.
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        owner = Account.from_key(DEV_PRIVATE_KEYS[0])
        mock = w3.eth.contract(address=stack.price_feed, abi=contracts.abi("MockPriceFeed"))
        updated_at = int(rate.as_of.timestamp()) - 7200
        tx = mock.functions.setRoundData(99_970_000, updated_at).build_transaction(
            {"from": owner.address, "nonce": w3.eth.get_transaction_count(owner.address), "chainId": stack.chain_id}
        )
        w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction))
        old = await feed.rate("USDC", "USD")
        assert old.value == Decimal("0.99970000")
        with pytest.raises(RateUnavailable) as err:
            checked(old, max_age_s=3600, now=rate.as_of)
        assert err.value.reason == "rate_stale"
    finally:
        await rpc.aclose()
