"""Outbound HTTP to addresses a merchant chose (webhooks, design 0005) without letting them
reach our own network: resolve, refuse every internal address form, then connect to the
address that was checked (no second DNS answer, no redirects).

`check_url` is the gate; `pinned_request` sends through it, on a `pinned_client` whose
network layer dials only the address the gate approved for the request being sent. The
URL keeps the name, so TLS verifies the certificate for that name and the connection pool
keys connections by it (a connection made for one name is never reused for another name
at the same address). An allow-list (CIDRs or host names, `STABLEGATE_WEBHOOK_ALLOW`) lets
local development deliver to localhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_CHARS = 2048
# A host whose last label is a number (decimal, or hex after 0x) is an IPv4 address in
# some form to libc and to browsers (the WHATWG URL "ends in a number" rule): decimal,
# hex, octal, shortened dotted forms. Such hosts are parsed as libc would, never looked
# up as names; any other host is a name, "cafe.cafe" and "abc.de" included.
NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 prefixes that embed an IPv4 address the packet may end up at.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
# Special-purpose ranges that older Pythons' `is_global` tables call global (3.11 does
# for all of these): protocol assignments, site-local, documentation, discard, SRv6.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.0.0/24", "fec0::/10", "2001:db8::/32", "3fff::/20", "100::/64", "5f00::/16")
)


class UnsafeDestination(ValueError):
    """The URL may not be called; `reason` names the rule (for the error and the log)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Destination:
    url: str  # as given
    scheme: str
    host: str  # the name for Host and SNI
    port: int
    ip: IPAddress  # the checked address we connect to


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` is internal (None: a public unicast address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return forbidden_reason(embedded)
    checks = (
        ("metadata", ip in METADATA),
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link_local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("cgnat", isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not_global", not ip.is_global or any(ip in n for n in NOT_GLOBAL if n.version == ip.version)),
    )
    return next((reason for reason, hit in checks if hit), None)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    if int(ip) >> 32 == 0 and int(ip) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(ip))
    return None


def literal_ip(host: str) -> IPAddress | None:
    """The address a host names by itself, in any form a resolver would accept."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        pass
    dotless = bare.removesuffix(".")  # a fully qualified "127.0.0.1." is the same address
    if NUMERIC_LABEL.fullmatch(dotless.rpartition(".")[2]):
        try:  # inet_aton speaks the legacy forms: 2130706433, 0x7f000001, 0177.0.0.1, 127.1
            return ipaddress.IPv4Address(socket.inet_aton(dotless))
        except OSError:
            raise UnsafeDestination("bad_host", f"{host!r} is neither a name nor an address") from None
    return None


def _allowed(ip: IPAddress, host: str, allow: Sequence[str]) -> bool:
    for entry in allow:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            with contextlib.suppress(UnsafeDestination):  # an entry that is no name matches nothing
                if _ascii_host(entry.lower()) == host.lower():  # the form check_url compares in
                    return True
    return False


def _parse(url: str, schemes: Sequence[str]) -> tuple[str, str, int]:
    if len(url) > MAX_URL_CHARS:
        raise UnsafeDestination("bad_url", f"longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination("bad_url", str(exc)) from None
    if parts.scheme not in schemes:
        raise UnsafeDestination("scheme", f"{parts.scheme!r} is not one of {', '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination("userinfo", "credentials in the URL are not accepted")
    if not parts.hostname:
        raise UnsafeDestination("bad_url", "no host")
    if port == 0:
        raise UnsafeDestination("bad_url", "port 0")
    return parts.scheme, _ascii_host(parts.hostname), port or (443 if parts.scheme == "https" else 80)


def _ascii_host(host: str) -> str:
    """The name as DNS, SNI and Host use it: an international name in its IDNA (xn--)
    form, as httpx and browsers encode it, and without the root's trailing dot, which a
    certificate never names."""
    if literal_ip(host) is not None:
        return host
    if not host.isascii():
        try:
            host = httpx.URL(scheme="http", host=host).raw_host.decode("ascii")
        except (httpx.InvalidURL, UnicodeError) as exc:
            raise UnsafeDestination("bad_host", f"{host!r}: {exc}") from None
    return host.removesuffix(".") or host


async def check_url(url: str, allow: Sequence[str] = (), schemes: Sequence[str] = ("https", "http")) -> Destination:
    """Resolve `url`'s host and refuse it unless every address it resolves to is public
    (or allow-listed). Returns the address to connect to."""
    scheme, host, port = _parse(url, schemes)
    literal = literal_ip(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UnsafeDestination("dns", f"{host}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos))
    for ip in addresses:  # every answer: a name with one public and one private address is refused
        reason = forbidden_reason(ip)
        if reason is not None and not _allowed(ip, host, allow):
            raise UnsafeDestination(reason, f"{host} resolves to {ip}")
    return Destination(url, scheme, host, port, addresses[0])


# The destination check_url approved for the request this task is sending.
_PINNED: contextvars.ContextVar[Destination | None] = contextvars.ContextVar("ssrf_pinned", default=None)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer, dialling the address checked for the request being
    sent instead of resolving its name; a name no check approved is never dialled."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface passes it by name)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        pinned = _PINNED.get()
        if pinned is None or (pinned.host, pinned.port) != (host, port):
            raise httpcore.ConnectError(f"{host}:{port} was not checked: not connecting")
        return await self._inner.connect_tcp(
            str(pinned.ip), port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedClient(httpx.AsyncClient):
    """An httpx client that connects only where check_url said (build it with
    `pinned_client`); `pinned_request` refuses any other."""


def pinned_client(
    *,
    limits: httpx.Limits = httpx.Limits(),
    verify: ssl.SSLContext | None = None,
    wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] = lambda transport: transport,
    **kwargs: Any,
) -> PinnedClient:
    """A client over a connection pool whose network layer is PinnedBackend. `wrap`
    decorates the transport (a response cap, say). No proxies from the environment:
    a proxy would dial the name again."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    # httpx (0.28) takes no network backend: its pool is replaced by one with ours and the
    # same limits (tests/kit/test_ssrf.py checks that connections go where they should).
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=verify or httpx.create_ssl_context(),  # SSL_CERT_FILE/DIR honoured, as httpx does
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PinnedBackend(),
    )
    return PinnedClient(transport=wrap(transport), trust_env=False, follow_redirects=False, **kwargs)


async def pinned_request(client: PinnedClient, method: str, destination: Destination, **kwargs: Any) -> httpx.Response:
    """Send to the checked address: the URL names the host (Host, SNI, certificate and
    the pool's key all use it), the connection goes to `destination.ip`, redirects are
    never followed."""
    if not isinstance(client, PinnedClient):
        raise TypeError("pinned_request needs a pinned_client(): another client would resolve the name itself")
    parts = urlsplit(destination.url)
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    target = urlunsplit((destination.scheme, f"{host}:{destination.port}", parts.path or "/", parts.query, ""))
    token = _PINNED.set(destination)
    try:
        return await client.request(method, target, follow_redirects=False, **kwargs)
    finally:
        _PINNED.reset(token)
