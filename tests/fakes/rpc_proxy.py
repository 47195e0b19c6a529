"""A fault-injecting JSON-RPC proxy that tests put in front of anvil.

It is a real HTTP/1.1 server on a loopback port, so the client under test goes through
its whole stack (connection pool, keep-alive, timeouts, status codes, body parsing) just
as it does against a hosted provider on a bad day. Without faults it forwards the request
body to the upstream unchanged and returns the upstream's reply unchanged.

Faults per HTTP request (a batch is one request), drawn from `random.Random(seed)` in
arrival order, so a test that sends the same requests in the same order sees the same
faults: the connection dropped without a reply, a reply held back for `timeout_s`, a 429
with `Retry-After`, a 502/503 from the "load balancer".

Faults per call (each element of a batch on its own), the ones providers answer with a
JSON-RPC error or — worse — silently: the eth_getLogs block-range limit, the eth_getLogs
result-count limit, and a lagging node that does not know the newest `lag_blocks` blocks
and answers as if they did not exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from stablegate.chains import rpc as client

Json = dict[str, Any]

# What `RpcProxy.stats` counts: every kind is a fault the proxy injected.
FAULT_KINDS = ("drop", "timeout", "http_429", "http_5xx", "range_limit", "log_limit", "lag")
UPSTREAM_TIMEOUT_S = 30.0
# A hung reply outlasts the client's own timeout by default: the client must give up first.
DEFAULT_TIMEOUT_S = 3 * client.TIMEOUT_S


@dataclass(frozen=True)
class RangeErrorStyle:
    """How one provider refuses an eth_getLogs block range. `message` is a str.format
    template over `max` (the limit), `span` (blocks asked for), `first` and `fits` (hex:
    the asked start and the last block that would have fitted)."""

    code: int
    message: str
    # Used when the call came alone; inside a batch only the element carries the error.
    http_status: int = 200


# Shapes seen from real providers and node software (codes differ: clients that match
# only -32005 miss most of them).
RANGE_ERROR_STYLES: Mapping[str, RangeErrorStyle] = {
    "reth": RangeErrorStyle(-32602, "query exceeds max block range {max}"),
    "alchemy": RangeErrorStyle(
        -32600,
        "You can make eth_getLogs requests with up to a {max} block range. "
        "Based on your parameters, this block range should work: [{first}, {fits}]",
    ),
    "publicnode": RangeErrorStyle(-32701, "exceed maximum block range: {max}"),
    "cdk_erigon": RangeErrorStyle(-32005, "block range too large, max range: {max}"),
    "infura": RangeErrorStyle(-32602, "range {span} exceeds limit of {max}"),
    "quicknode": RangeErrorStyle(-32614, "eth_getLogs is limited to a {max:,} range", http_status=413),
    "1rpc": RangeErrorStyle(-32602, "eth_getLogs is limited to 0 - {max} blocks range"),
    "drpc": RangeErrorStyle(35, "ranges over {max} blocks are not supported on freetier"),
}
# Every style, in turn by the seed: the client must read each as "range too large".
DEFAULT_RANGE_ERROR_STYLES = tuple(RANGE_ERROR_STYLES)

# 429 bodies: a hosted provider's compute-unit limit and a per-project rate limit (whose
# -32005 a careless client would take for a range error).
_RATE_LIMIT_ERRORS: tuple[Json, ...] = (
    {
        "code": 429,
        "message": "Your app has exceeded its compute units per second capacity. "
        "If you have retries enabled, you can safely ignore this message.",
    },
    {
        "code": -32005,
        "message": "project ID request rate exceeded",
        "data": {"current_rps": 13.333, "allowed_rps": 10.0, "backoff_seconds": 1.0},
    },
)
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_HTML_503 = (
    b"<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"
)
# (status, content type, body): what sits in front of a node answers these, not the node.
_GATEWAY_ERRORS: tuple[tuple[int, str | None, bytes], ...] = (
    (502, "text/html", _NGINX_502),
    (503, None, b""),
    (503, "text/html", _HTML_503),
)
# Lookups by hash a lagging node cannot answer for blocks it has not imported: method →
# the result's block-number field.
_LOOKUPS_BY_HASH = {
    "eth_getBlockByHash": "number",
    "eth_getTransactionByHash": "blockNumber",
    "eth_getTransactionReceipt": "blockNumber",
}


@dataclass(frozen=True)
class Faults:
    """What the proxy does wrong. Rates are probabilities per HTTP request and exclusive
    (at most one request fault per request), so they must sum to at most 1."""

    seed: int = 0
    drop_connection_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = DEFAULT_TIMEOUT_S
    http_429_rate: float = 0.0
    http_5xx_rate: float = 0.0
    max_log_range_blocks: int | None = None
    range_error_styles: tuple[str, ...] = DEFAULT_RANGE_ERROR_STYLES
    max_logs_per_response: int | None = None
    lag_blocks: int = 0

    def __post_init__(self) -> None:
        rates = [rate for _, rate in self.request_rates()]
        if not all(0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise ValueError(f"request fault rates must be in [0, 1] and sum to at most 1: {rates}")
        if self.lag_blocks < 0 or self.timeout_s < 0:
            raise ValueError("lag_blocks and timeout_s must not be negative")
        for limit in (self.max_log_range_blocks, self.max_logs_per_response):
            if limit is not None and limit < 1:
                raise ValueError("limits must be at least 1")
        unknown = set(self.range_error_styles) - set(RANGE_ERROR_STYLES)
        if unknown or not self.range_error_styles:
            raise ValueError(f"range_error_styles must name some of {sorted(RANGE_ERROR_STYLES)}")

    def request_rates(self) -> tuple[tuple[str, float], ...]:
        return (
            ("drop", self.drop_connection_rate),
            ("timeout", self.timeout_rate),
            ("http_429", self.http_429_rate),
            ("http_5xx", self.http_5xx_rate),
        )

    @property
    def rewrites_calls(self) -> bool:
        """Whether calls must be read one by one (otherwise bodies pass through untouched)."""
        limits = (self.max_log_range_blocks, self.max_logs_per_response)
        return self.lag_blocks > 0 or any(limit is not None for limit in limits)


@dataclass(frozen=True, eq=False)
class Stats(Mapping[str, int]):
    """A snapshot. As a mapping: fault kind → times injected, every kind of FAULT_KINDS
    present (0 if it never fired; a misspelt kind is a KeyError). Request faults count
    once per HTTP request, call faults once per call. `by_method[(kind, method)]` counts
    the calls a fault hit (every call of a batch a request fault hit), `calls[method]`
    the calls received, `requests` the HTTP requests."""

    faults: Mapping[str, int]
    by_method: Counter[tuple[str, str]]
    calls: Counter[str]
    requests: int
    upstream_errors: int

    def __getitem__(self, kind: str) -> int:
        return self.faults[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self.faults)

    def __len__(self) -> int:
        return len(self.faults)


@dataclass
class _Tally:
    faults: Counter[str] = field(default_factory=Counter)
    by_method: Counter[tuple[str, str]] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    upstream_errors: int = 0

    def received(self, methods: Sequence[str], fault: str | None) -> None:
        self.requests += 1
        self.calls.update(methods)
        if fault is not None:
            self.fired(fault, methods)

    def fired(self, kind: str, methods: Sequence[str]) -> None:
        self.faults[kind] += 1
        self.by_method.update((kind, method) for method in methods)

    def snapshot(self) -> Stats:
        faults = {kind: self.faults[kind] for kind in FAULT_KINDS}
        return Stats(faults, Counter(self.by_method), Counter(self.calls), self.requests, self.upstream_errors)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class _Request:
    calls: list[Json]
    batch: bool

    @property
    def methods(self) -> list[str]:
        return [str(call.get("method")) for call in self.calls]

    @property
    def reply_id(self) -> Any:
        # Providers answer a refused batch with one error object whose id is null.
        return None if self.batch else self.calls[0].get("id")


@dataclass(frozen=True)
class _Answer:
    """A call the proxy answers itself, without asking the upstream."""

    reply: Json


class RpcProxy:
    """A JSON-RPC proxy on 127.0.0.1 (a free port) in front of `upstream_url`.

    Use as a context manager, or `start()` / `stop()`. `faults` can be replaced (or
    `configure(**changes)` called) at any time from any thread; either restarts the fault
    sequence from the (new) seed."""

    def __init__(self, upstream_url: str, faults: Faults | None = None, host: str = "127.0.0.1") -> None:
        self.upstream_url, self.host = upstream_url, host
        self._faults = faults or Faults()
        self._random = random.Random(self._faults.seed)
        self._tally = _Tally()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._upstream = httpx.Client(timeout=UPSTREAM_TIMEOUT_S)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # --- public -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._port is not None, "start the proxy first"
        return f"http://{self.host}:{self._port}"

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults, self._random = faults, random.Random(faults.seed)

    def configure(self, **changes: Any) -> Faults:
        """Replace some fields of the current faults, e.g. `configure(http_429_rate=0)`."""
        with self._lock:
            self._faults = dataclasses.replace(self._faults, **changes)
            self._random = random.Random(self._faults.seed)
            return self._faults

    @property
    def stats(self) -> Stats:
        with self._lock:
            return self._tally.snapshot()

    def reset_stats(self) -> None:
        with self._lock:
            self._tally = _Tally()

    def start(self) -> RpcProxy:
        assert self._server is None and not self._stopping.is_set(), "a proxy starts once"
        self._server = _Server(self, self.host)
        self._port = int(self._server.server_address[1])
        # A short poll interval: stop() waits for serve_forever to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"rpc-proxy-{self._port}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: hung replies end without an answer, kept-alive connections are
        closed (a stopped provider must not keep answering on pooled connections)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        self._close_connections()
        if self._thread is not None:
            self._thread.join()
        self._upstream.close()

    def __enter__(self) -> RpcProxy:
        return self if self._server is not None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- serving (handler threads) ----------------------------------------------------

    def _serve(self, body: bytes) -> _Reply | None:
        """The reply to one HTTP request body; None: close the connection without one."""
        if self._stopping.is_set():
            return None
        request = _parse(body)
        faults, fault, variant = self._draw(request.methods if request else ["(unparsed)"])
        if fault == "drop":
            return None
        if fault == "http_429":
            return _rate_limited(request, variant)
        if fault == "http_5xx":
            return _gateway_error(variant)
        reply = self._forward(body, request, faults)
        # The request was served upstream (a write took effect) but the answer is late.
        if fault == "timeout" and self._stopping.wait(faults.timeout_s):
            return None
        return reply

    def _draw(self, methods: Sequence[str]) -> tuple[Faults, str | None, float]:
        # Two draws per request whatever happens, so one fault's outcome does not shift
        # the sequence the others see.
        with self._lock:
            roll, variant = self._random.random(), self._random.random()
            fault = _request_fault(self._faults, roll)
            self._tally.received(methods, fault)
            return self._faults, fault, variant

    def _choose(self, options: int) -> int:
        with self._lock:
            return self._random.randrange(options)

    def _fired(self, kind: str, method: str) -> None:
        with self._lock:
            self._tally.fired(kind, [method])

    def _forward(self, body: bytes, request: _Request | None, faults: Faults) -> _Reply:
        try:
            if request is None or not faults.rewrites_calls:
                return self._pass_through(body)
            exchange = _Exchange(self, faults, alone=not request.batch)
            replies = exchange.answer(request.calls)
        except (httpx.HTTPError, ValueError):
            with self._lock:
                self._tally.upstream_errors += 1
            return _Reply(502, b"")
        payload = replies if request.batch else (replies[0] if replies else None)
        return _json_reply(exchange.status, payload)

    def _pass_through(self, body: bytes) -> _Reply:
        upstream = self._upstream.post(self.upstream_url, content=body, headers={"Content-Type": "application/json"})
        content_type = upstream.headers.get("Content-Type", "application/json")
        return _Reply(upstream.status_code, upstream.content, (("Content-Type", content_type),))

    def _post(self, payload: Any) -> Any:
        upstream = self._upstream.post(self.upstream_url, json=payload)
        upstream.raise_for_status()
        return upstream.json()

    def _call(self, method: str, params: list[Any]) -> Any:
        reply = self._post({"jsonrpc": "2.0", "id": 0, "method": method, "params": params})
        if "error" in reply:
            raise ValueError(f"upstream {method}: {reply['error']}")
        return reply.get("result")

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Exchange:
    """The calls of one HTTP request, answered as a node with the configured limits and
    lag would answer them: some by the proxy itself, the rest in one upstream batch."""

    def __init__(self, proxy: RpcProxy, faults: Faults, alone: bool) -> None:
        self.proxy, self.faults, self.alone = proxy, faults, alone
        self.lag = faults.lag_blocks
        self.status = 200
        self._tags: dict[str, int] = {}

    def answer(self, calls: list[Json]) -> list[Json]:
        prepared = [self._prepare(call) for call in calls]
        outgoing = [(slot, item) for slot, item in enumerate(prepared) if not isinstance(item, _Answer)]
        upstream = self._upstream([item for _, item in outgoing])
        replies = [item.reply if isinstance(item, _Answer) else {} for item in prepared]
        for (slot, _), reply in zip(outgoing, upstream, strict=True):
            replies[slot] = self._finish(calls[slot], reply)
        # A notification (no id) gets no reply, whatever happened to it.
        return [reply for call, reply in zip(calls, replies, strict=True) if "id" in call]

    def _upstream(self, requests: list[Json]) -> list[Json]:
        """Replies in request order. Our own ids: the client's may repeat or be missing."""
        if not requests:
            return []
        payload = self.proxy._post([request | {"id": slot} for slot, request in enumerate(requests)])
        by_id = (
            {item.get("id"): item for item in payload if isinstance(item, dict)} if isinstance(payload, list) else {}
        )
        missing = {"jsonrpc": "2.0", "error": {"code": -32603, "message": "no reply from upstream"}}
        return [by_id.get(slot, missing) for slot in range(len(requests))]

    # --- before the upstream ----------------------------------------------------------

    def _prepare(self, call: Json) -> Json | _Answer:
        method = call.get("method")
        if self.lag and method == "eth_blockNumber":
            self._fired("lag", call)
            return _Answer(_result(call, hex(self.head)))
        if self.lag and method == "eth_getBlockByNumber":
            return self._block_by_number(call)
        if method == "eth_getLogs":
            return self._logs_query(call)
        return call

    def _block_by_number(self, call: Json) -> Json | _Answer:
        params = _params(call)
        number = self._number(params[0]) if params else None
        if number is None:
            return call
        if number > self.head:
            self._fired("lag", call)
            return _Answer(_result(call, None))
        if number != self._number(params[0], lagged=False):
            self._fired("lag", call)  # a tag the lagging node resolves to an older block
        return call | {"params": [hex(number), *params[1:]]}

    def _logs_query(self, call: Json) -> Json | _Answer:
        params = _params(call)
        query = params[0] if params else None
        limit = self.faults.max_log_range_blocks
        if not isinstance(query, dict) or "blockHash" in query or (limit is None and not self.lag):
            return call
        first, last = self._number(query.get("fromBlock", "latest")), self._number(query.get("toBlock", "latest"))
        if first is None or last is None:
            return call  # malformed: let the upstream say so
        if limit is not None and last - first + 1 > limit:
            return _Answer(self._range_error(call, first, last, limit))
        return self._lagged_logs_query(call, query, first, last) if self.lag else call

    def _lagged_logs_query(self, call: Json, query: Json, first: int, last: int) -> Json | _Answer:
        """The range cut at the lagged head, without a word: what a lagging node does."""
        known_last = min(last, self.head)
        if known_last != self._number(query.get("toBlock", "latest"), lagged=False):
            self._fired("lag", call)
        if first > known_last:
            return _Answer(_result(call, []))
        return call | {"params": [query | {"fromBlock": hex(first), "toBlock": hex(known_last)}]}

    def _range_error(self, call: Json, first: int, last: int, limit: int) -> Json:
        names = self.faults.range_error_styles
        style = RANGE_ERROR_STYLES[names[self.proxy._choose(len(names))]]
        self._fired("range_limit", call)
        if self.alone:
            self.status = style.http_status
        fits = hex(first + limit - 1)
        message = style.message.format(max=limit, span=last - first + 1, first=hex(first), fits=fits)
        return _error(call, style.code, message)

    # --- after the upstream -----------------------------------------------------------

    def _finish(self, call: Json, reply: Json) -> Json:
        reply = reply | {"id": call.get("id")}
        if "result" not in reply:
            return reply
        if self.lag:
            reply = self._hide_unknown_blocks(call, reply)
        if call.get("method") == "eth_getLogs":
            reply = self._cap_logs(call, reply)
        return reply

    def _hide_unknown_blocks(self, call: Json, reply: Json) -> Json:
        method, result = call.get("method"), reply["result"]
        if method == "eth_getLogs" and isinstance(result, list):
            known = [item for item in result if _block_of(item, "blockNumber") <= self.head]
            if len(known) < len(result):
                self._fired("lag", call)
            return reply | {"result": known}
        field_name = _LOOKUPS_BY_HASH.get(str(method))
        if field_name and isinstance(result, dict) and _block_of(result, field_name) > self.head:
            self._fired("lag", call)
            return reply | {"result": None}
        return reply

    def _cap_logs(self, call: Json, reply: Json) -> Json:
        cap, result = self.faults.max_logs_per_response, reply["result"]
        if cap is None or not isinstance(result, list) or len(result) <= cap:
            return reply
        self._fired("log_limit", call)
        return _error(call, -32005, f"query returned more than {cap} results")

    # --- the chain as this node sees it -----------------------------------------------

    @cached_property
    def real_head(self) -> int:
        return int(self.proxy._call("eth_blockNumber", []), 16)

    @property
    def head(self) -> int:
        return max(0, self.real_head - self.lag) if self.lag else self.real_head

    def _number(self, block: Any, lagged: bool = True) -> int | None:
        """A block parameter as a number, tags resolved against this node's head."""
        head = self.head if lagged else self.real_head
        if isinstance(block, str) and block.startswith("0x"):
            with contextlib.suppress(ValueError):
                return int(block, 16)
            return None
        if block == "earliest":
            return 0
        if block in ("latest", "pending"):
            return head
        if block in ("safe", "finalized"):
            return min(self._tag(block), head)
        return None

    def _tag(self, tag: str) -> int:
        if tag not in self._tags:
            header = self.proxy._call("eth_getBlockByNumber", [tag, False])
            self._tags[tag] = int(header["number"], 16) if header else 0
        return self._tags[tag]

    def _fired(self, kind: str, call: Json) -> None:
        self.proxy._fired(kind, str(call.get("method")))


class _Handler(BaseHTTPRequestHandler):
    # Keep-alive, as providers serve: a dropped or late reply then hits a pooled
    # connection, where client bugs hide.
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy._opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.proxy._closed(self.connection)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = self.server.proxy._serve(body)
        if reply is None:
            self.close_connection = True  # no status line, no body: the socket just closes
            return
        self._write(reply)

    def do_GET(self) -> None:
        self._write(_Reply(405, b"", (("Allow", "POST"),)))

    def _write(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client gave up first (its timeout fired)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the stats say what happened; a line per request would drown test output."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung reply must not keep the test process alive

    def __init__(self, proxy: RpcProxy, host: str) -> None:
        self.proxy = proxy
        super().__init__((host, 0), _Handler)  # port 0: the kernel picks a free one, no race

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up and a stop() under way are what these tests provoke; anything
        # else is a bug in the proxy and is printed.
        if not isinstance(sys.exc_info()[1], OSError) and not self.proxy._stopping.is_set():
            super().handle_error(request, client_address)


# --- helpers ----------------------------------------------------------------------------


def _parse(body: bytes) -> _Request | None:
    """The calls of a body; None for anything that is not a call or a batch of calls (the
    upstream then answers it as it would)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    calls = payload if isinstance(payload, list) else [payload]
    if not calls or not all(isinstance(call, dict) for call in calls):
        return None
    return _Request(calls, isinstance(payload, list))


def _request_fault(faults: Faults, roll: float) -> str | None:
    bound = 0.0
    for kind, rate in faults.request_rates():
        bound += rate
        if roll < bound:
            return kind
    return None


def _nth(options: Sequence[Any], variant: float) -> Any:
    return options[min(int(variant * len(options)), len(options) - 1)]


def _rate_limited(request: _Request | None, variant: float) -> _Reply:
    reply_id = request.reply_id if request else None
    body = json.dumps({"jsonrpc": "2.0", "id": reply_id, "error": _nth(_RATE_LIMIT_ERRORS, variant)})
    return _Reply(429, body.encode(), (("Content-Type", "application/json"), ("Retry-After", "1")))


def _gateway_error(variant: float) -> _Reply:
    status, content_type, body = _nth(_GATEWAY_ERRORS, variant)
    return _Reply(status, body, (("Content-Type", content_type),) if content_type else ())


def _json_reply(status: int, payload: Any) -> _Reply:
    body = b"" if payload is None else json.dumps(payload).encode()
    return _Reply(status, body, (("Content-Type", "application/json"),))


def _params(call: Json) -> list[Any]:
    params = call.get("params")
    return list(params) if isinstance(params, list) else []


def _result(call: Json, result: Any) -> Json:
    return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


def _error(call: Json, code: int, message: str) -> Json:
    return {"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": code, "message": message}}


def _block_of(item: Json, field_name: str) -> int:
    value = item.get(field_name)
    return int(value, 16) if isinstance(value, str) else 0  # pending: no block yet
