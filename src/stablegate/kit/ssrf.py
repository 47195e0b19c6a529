"""Outbound HTTP to addresses a merchant chose (webhooks, design 0005) without letting them
reach our own network: resolve, refuse every internal address form, then connect to the
address that was checked (no second DNS answer, no redirects).

`check_url` is the gate; `pinned_request` sends through it. An allow-list (CIDRs or host
names, `STABLEGATE_WEBHOOK_ALLOW`) lets local development deliver to localhost.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
        ("not_global", not ip.is_global),
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
    if NUMERIC_LABEL.match(dotless.rpartition(".")[2]):
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
            if entry.lower() == host.lower():
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
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


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


async def pinned_request(
    client: httpx.AsyncClient, method: str, destination: Destination, **kwargs: Any
) -> httpx.Response:
    """Send to the checked address: the URL's host becomes the IP, the name travels in
    Host (and SNI for https), redirects are never followed."""
    parts = urlsplit(destination.url)
    ip = destination.ip
    netloc = (f"[{ip}]" if isinstance(ip, ipaddress.IPv6Address) else str(ip)) + f":{destination.port}"
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = {**kwargs.pop("headers", {}), "host": parts.netloc.rsplit("@", 1)[-1]}
    extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
    return await client.request(
        method, target, headers=headers, extensions=extensions, follow_redirects=False, **kwargs
    )
