"""A small JSON-RPC client for the follower's reads: several providers per chain, failover
with backoff, batch requests served by one provider, and errors sorted into what the
caller can act on (the range is too large; the provider is behind; try again).

web3.py is used for signing and deployment; this client exists because the follower
needs control over which provider answered what (a lagging provider answers `[]` for
blocks it has not seen, silently) and over the classification of provider errors.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import structlog

from stablegate.observability import metrics

log = structlog.get_logger(__name__)

TIMEOUT_S = 10.0
MAX_ROUNDS = 6  # full passes over the providers before giving up on one call
BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 10.0
# Messages providers use for "your eth_getLogs asked for too much" (reth/geth, Alchemy,
# Infura, QuickNode, PublicNode, 1rpc, dRPC, Erigon): asking for less is always safe, so
# the pattern is generous. -32005 is the common "limit exceeded" code, -32614 QuickNode's,
# 35 dRPC's.
RANGE_ERROR = re.compile(
    r"block range|blocks range|range (is )?too (large|wide)|exceeds? (the )?max(imum)?|exceeds? (the )?limit"
    r"|more than \d+ (results|logs)|too many (results|logs|blocks)|limit exceeded|response size|query timeout"
    r"|range limit|is limited to|ranges? over \d+ blocks",
    re.IGNORECASE,
)
RANGE_ERROR_CODES = (-32005, -32614, 35)


class RpcError(Exception):
    """A call that failed on every provider, or an error the caller must handle."""


class RpcResponseError(RpcError):
    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method}: {code} {message}")
        self.method, self.code, self.message = method, code, message


class RangeTooLarge(RpcResponseError):
    """The provider refuses this eth_getLogs range or result size: ask for less."""


class ProviderBehind(RpcError):
    """The provider does not know a block we know (a lagging node): ask another one."""


class _Transient(Exception):
    """Timeout, connection error, 429 or 5xx: this provider, this time."""

    def __init__(self, kind: str, retry_after_s: float | None = None) -> None:
        super().__init__(kind)
        self.kind, self.retry_after_s = kind, retry_after_s


@dataclass
class Provider:
    url: str
    label: str  # host only: URLs may carry API keys, labels go into metrics and logs
    failures: int = 0
    resting_until: float = 0.0

    def rest(self, retry_after_s: float | None) -> None:
        self.failures += 1
        backoff_s = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(self.failures, 16))
        delay_s = max(retry_after_s or 0.0, backoff_s * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
        self.resting_until = time.monotonic() + delay_s

    def recovered(self) -> None:
        self.failures, self.resting_until = 0, 0.0


Check = Callable[[list[Any]], None]


class RpcClient:
    def __init__(self, chain: str, urls: Sequence[str], timeout_s: float = TIMEOUT_S) -> None:
        assert urls, "at least one RPC URL"
        self.chain = chain
        self.providers = [Provider(url, urlsplit(url).netloc or url) for url in urls]
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._ids = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, *params: Any) -> Any:
        return (await self.batch([(method, list(params))]))[0]

    async def head(self) -> int:
        """The highest block any provider reports, asking all at once: the first provider
        may lag, and following its head would keep us behind by its lag. (Blocks above a
        lagging provider's head are then refused by it and served by another.)"""
        calls: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
        answers = await asyncio.gather(
            *(self._send(p, calls, "eth_blockNumber") for p in self.providers), return_exceptions=True
        )
        heads = [int(a[0], 16) for a in answers if isinstance(a, list)]
        for provider, answer in zip(self.providers, answers, strict=True):
            if isinstance(answer, _Transient):
                self._failed(provider, "eth_blockNumber", answer.kind, answer.retry_after_s)
        if heads:
            return max(heads)
        return int(await self.call("eth_blockNumber"), 16)

    async def batch(self, calls: Sequence[tuple[str, list[Any]]], check: Check | None = None) -> list[Any]:
        """Results of `calls`, all from one provider (one HTTP request). `check` may raise
        ProviderBehind to refuse a provider's answer; the next provider is asked."""
        assert calls
        label = calls[0][0] if len({m for m, _ in calls}) == 1 else "batch"
        for _ in range(MAX_ROUNDS):
            for provider in self._by_readiness():
                await self._wait_until_ready(provider)
                try:
                    results = await self._send(provider, calls, label)
                    if check is not None:
                        check(results)
                except _Transient as exc:
                    self._failed(provider, label, exc.kind, exc.retry_after_s)
                    continue
                except ProviderBehind:
                    self._failed(provider, label, "behind", None)
                    continue
                provider.recovered()
                return results
        raise RpcError(f"{self.chain}: {label} failed on every provider {MAX_ROUNDS} times")

    def _by_readiness(self) -> list[Provider]:
        # Configured order first (the operator's preference), resting providers last.
        now = time.monotonic()
        return sorted(self.providers, key=lambda p: (p.resting_until > now, p.resting_until))

    @staticmethod
    async def _wait_until_ready(provider: Provider) -> None:
        delay_s = provider.resting_until - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)

    def _failed(self, provider: Provider, method: str, kind: str, retry_after_s: float | None) -> None:
        provider.rest(retry_after_s)
        metrics.CHAIN_RPC_ERRORS.labels(self.chain, method, provider.label, kind).inc()
        log.warning("chain.rpc_failover", chain=self.chain, provider=provider.label, method=method, kind=kind)

    async def _send(self, provider: Provider, calls: Sequence[tuple[str, list[Any]]], label: str) -> list[Any]:
        body = [{"jsonrpc": "2.0", "id": self._next_id(), "method": m, "params": p} for m, p in calls]
        started = time.perf_counter()
        try:
            reply = await self._http.post(provider.url, json=body if len(body) > 1 else body[0])
        except httpx.TimeoutException:
            raise _Transient("timeout") from None
        except httpx.TransportError:
            raise _Transient("connection") from None
        finally:
            metrics.CHAIN_RPC_LATENCY.labels(self.chain, label).observe(time.perf_counter() - started)
        if reply.status_code == 429:
            raise _Transient("429", _retry_after_s(reply))
        if reply.status_code == 413 and any(m == "eth_getLogs" for m, _ in calls):
            # QuickNode answers an over-wide eth_getLogs with 413: the request, not the provider.
            raise RangeTooLarge("eth_getLogs", 413, reply.text[:200])
        if reply.status_code != 200:
            raise _Transient(f"http_{reply.status_code // 100}xx")
        try:
            payload = orjson.loads(reply.content)  # 3-4x the stdlib's speed: logs come by the thousand
        except orjson.JSONDecodeError:
            raise _Transient("bad_body") from None
        return self._results(body, payload if isinstance(payload, list) else [payload])

    def _results(self, body: list[dict[str, Any]], payload: list[Any]) -> list[Any]:
        by_id = {item.get("id"): item for item in payload if isinstance(item, dict)}
        results = []
        for request in body:
            item = by_id.get(request["id"])
            if item is None:
                raise _Transient("missing_reply")
            if "error" in item:
                raise _response_error(request["method"], item["error"])
            results.append(item.get("result"))
        return results

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids


def _retry_after_s(reply: httpx.Response) -> float | None:
    try:
        return min(BACKOFF_CAP_S, float(reply.headers.get("retry-after", "")))
    except ValueError:
        return None


def _response_error(method: str, error: Any) -> Exception:
    code = int(error.get("code", 0)) if isinstance(error, dict) else 0
    message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
    if method == "eth_getLogs" and (code in RANGE_ERROR_CODES or RANGE_ERROR.search(message)):
        return RangeTooLarge(method, code, message)
    if code in (-32603, -32000) and "header not found" in message.lower():
        # Some nodes say this for a block they have not imported yet: a lagging node.
        return _Transient("behind")
    return RpcResponseError(method, code, message)
