"""A small HTTP/1.1 keep-alive load generator (asyncio + uvloop, raw sockets).

Closed loop (`peak`): N connections send back-to-back for a duration -> max throughput.
Open loop (`paced`): requests are *scheduled* at a fixed rate and latency is measured from
the scheduled time, so a stalled server shows up as latency (no coordinated omission).
Both use the same code path for every endpoint, so ratios between endpoints are fair.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

MAX_RESPONSE_BYTES = 1 << 20
RequestFactory = Callable[[], bytes]


@dataclass(frozen=True)
class Result:
    requests: int
    errors: int
    elapsed_s: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def request_factory(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"", idempotent: bool = False
) -> RequestFactory:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body:
        head += "Content-Type: application/json\r\n"
    fixed = head.encode()

    def make() -> bytes:
        extra = f"Idempotency-Key: {uuid.uuid4()}\r\n".encode() if idempotent else b""
        return fixed + extra + b"\r\n" + body

    return make


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    assert length <= MAX_RESPONSE_BYTES
    await reader.readexactly(length)
    return status


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def peak(host: str, port: int, make: RequestFactory, connections: int, duration_s: float) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors
        reader, writer = await _connect(host, port)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(make())
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            errors += status >= 400
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return Result(len(latencies), errors, time.perf_counter() - started, latencies)


async def paced(
    host: str, port: int, make: RequestFactory, rate_per_s: float, connections: int, duration_s: float
) -> Result:
    total = int(rate_per_s * duration_s)
    interval_s = 1.0 / rate_per_s
    next_index = 0
    latencies: list[float] = []
    errors = 0
    t0 = time.perf_counter() + 0.05

    async def worker() -> None:
        nonlocal next_index, errors
        reader, writer = await _connect(host, port)
        while next_index < total:
            index = next_index
            next_index += 1
            scheduled = t0 + index * interval_s
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(make())
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - scheduled) * 1000)
            errors += status >= 400
        writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return Result(len(latencies), errors, time.perf_counter() - t0, latencies)


def median(values: list[float]) -> float:
    return statistics.median(values)
