"""FX rates (design 0004): a `RateProvider` answers "how many `quote` for one `base`" with
the time the rate was true; a rate older than its maximum age is refused, never used.

Two providers: `StaticRates` (configuration: fixed pegs, tests) and `ChainlinkFeed`
(an AggregatorV3-style feed contract read over JSON-RPC; on anvil our MockPriceFeed);
`Routed` picks one per pair and `Crossed` derives a pair through USD.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak

from stablegate.chains.rpc import RpcClient, RpcError

LATEST_ROUND_DATA = "0x" + keccak(text="latestRoundData()").hex()[:8]
DECIMALS = "0x" + keccak(text="decimals()").hex()[:8]
# A rate dated later than this after now is a wrong clock or a wrong feed, not a fresh
# rate: block times (a feed's updatedAt) run a few seconds ahead at most.
MAX_FUTURE_S = 300
# A feed is read while a merchant waits for a payment to be created: past this, the pair
# has no rate for now (the RPC client alone would retry a dead node for ~10 s).
READ_DEADLINE_S = 2.0


class RateUnavailable(Exception):
    """No usable rate: missing, non-positive, older than allowed, dated in the future, or
    its source unreachable or unreadable (`reason` says which; `rate_unavailable` is the
    last, a fault of ours rather than of the request)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Rate:
    base: str
    quote: str
    value: Decimal  # quote units per one base unit (major units, e.g. USD per USDC)
    as_of: dt.datetime
    source: str


class RateProvider(Protocol):
    async def rate(self, base: str, quote: str) -> Rate: ...


def checked(rate: Rate, max_age_s: float, now: dt.datetime) -> Rate:
    """The rate if it is fresh and positive; otherwise RateUnavailable."""
    if rate.value <= 0:
        raise RateUnavailable("rate_invalid", f"{rate.base}/{rate.quote} = {rate.value} from {rate.source}")
    age_s = (now - rate.as_of).total_seconds()
    if age_s < -MAX_FUTURE_S:
        raise RateUnavailable("rate_invalid", f"{rate.base}/{rate.quote} is dated {-age_s:.0f}s in the future")
    if age_s > max_age_s:
        raise RateUnavailable("rate_stale", f"{rate.base}/{rate.quote} is {age_s:.0f}s old (max {max_age_s:.0f}s)")
    return rate


class StaticRates:
    """Configured rates (pegs). `as_of` is now: a configured rate does not age."""

    def __init__(self, rates: dict[tuple[str, str], Decimal]) -> None:
        self._rates = dict(rates)

    async def rate(self, base: str, quote: str) -> Rate:
        now = dt.datetime.now(dt.UTC)
        if (base, quote) in self._rates:
            return Rate(base, quote, self._rates[base, quote], now, "static")
        if (quote, base) in self._rates:
            return Rate(base, quote, 1 / self._rates[quote, base], now, "static")
        raise RateUnavailable("rate_unknown", f"no configured rate for {base}/{quote}")


class Crossed:
    """A pair no provider quotes, through a pivot that both sides are quoted in:
    DAI/USDC = DAI/USD ÷ USDC/USD (a payment priced in one token, paid in another). Dated
    by its older leg, so the maximum age applies to the cross as to any rate."""

    def __init__(self, inner: RateProvider, pivot: str = "USD") -> None:
        self._inner = inner
        self._pivot = pivot

    async def rate(self, base: str, quote: str) -> Rate:
        try:
            return await self._inner.rate(base, quote)
        except RateUnavailable as exc:
            if exc.reason != "rate_unknown" or self._pivot in (base, quote):
                raise
        first = await self._inner.rate(base, self._pivot)
        second = await self._inner.rate(quote, self._pivot)
        now = dt.datetime.now(dt.UTC)
        for leg in (first, second):
            if leg.value <= 0:
                raise RateUnavailable("rate_invalid", f"{leg.base}/{leg.quote} = {leg.value} from {leg.source}")
            if (leg.as_of - now).total_seconds() > MAX_FUTURE_S:  # the cross is dated by the older leg
                raise RateUnavailable("rate_invalid", f"{leg.base}/{leg.quote} is dated in the future")
        source = f"cross:{first.source},{second.source}"
        return Rate(base, quote, first.value / second.value, min(first.as_of, second.as_of), source)


class ChainlinkFeed:
    """One pair read from a Chainlink-style feed: `latestRoundData()` → (roundId, answer,
    startedAt, updatedAt, answeredInRound), scaled by `decimals()`."""

    def __init__(self, rpc: RpcClient, feed: str, base: str, quote: str) -> None:
        self.rpc, self.feed, self.base, self.quote = rpc, feed, base, quote
        self._decimals: int | None = None

    async def rate(self, base: str, quote: str) -> Rate:
        if (base, quote) != (self.base, self.quote):
            raise RateUnavailable("rate_unknown", f"feed {self.feed} quotes {self.base}/{self.quote}")
        try:
            async with asyncio.timeout(READ_DEADLINE_S):
                decimals, round_id, answer, updated_at, answered_in_round = await self._latest_round()
            as_of = dt.datetime.fromtimestamp(updated_at, dt.UTC)
        except (RpcError, DecodingError, ValueError, OverflowError, OSError, TimeoutError) as exc:
            # The node down, no contract at the address (an empty answer), a timestamp
            # beyond any date: no rate, said as such (not a crash of the caller).
            raise RateUnavailable("rate_unavailable", f"feed {self.feed}: {type(exc).__name__}: {exc}") from exc
        if answered_in_round < round_id or updated_at == 0:
            # The latest round has no answer of its own (an older round's is carried) or
            # is incomplete: Chainlink's own guidance is to treat it as stale.
            raise RateUnavailable("rate_stale", f"feed {self.feed} round {round_id} is not answered")
        value = Decimal(answer).scaleb(-decimals)
        return Rate(base, quote, value, as_of, f"chainlink:{self.feed}")

    async def _latest_round(self) -> tuple[int, int, int, int, int]:
        """(decimals, roundId, answer, updatedAt, answeredInRound); decimals() read once."""
        if self._decimals is None:
            decimals = int(await self._call(DECIMALS), 16)
            if not 0 <= decimals <= 36:
                raise ValueError(f"decimals() = {decimals}")
            self._decimals = decimals
        raw = bytes.fromhex((await self._call(LATEST_ROUND_DATA)).removeprefix("0x"))
        round_id, answer, _started, updated_at, answered_in_round = decode(
            ["uint80", "int256", "uint256", "uint256", "uint80"], raw
        )
        return self._decimals, round_id, answer, updated_at, answered_in_round

    async def _call(self, selector: str) -> str:
        return str(await self.rpc.call("eth_call", {"to": self.feed, "data": selector}, "latest"))


class Routed:
    """Each pair from its own provider (e.g. a feed per pair), anything else from the
    fallback (the configured static rates). A pair's inverse is served by its route too."""

    def __init__(self, routes: dict[tuple[str, str], RateProvider], fallback: RateProvider) -> None:
        self._routes = dict(routes)
        self._fallback = fallback

    async def rate(self, base: str, quote: str) -> Rate:
        if (base, quote) in self._routes:
            return await self._routes[base, quote].rate(base, quote)
        if (quote, base) in self._routes:
            inverse = await self._routes[quote, base].rate(quote, base)
            if inverse.value <= 0:
                raise RateUnavailable("rate_invalid", f"{quote}/{base} = {inverse.value} from {inverse.source}")
            return Rate(base, quote, 1 / inverse.value, inverse.as_of, inverse.source)
        return await self._fallback.rate(base, quote)
