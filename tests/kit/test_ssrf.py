"""The SSRF gate (design 0005): every internal address form is refused before any
connection is made; public addresses pass; the allow-list opens localhost for development;
requests go to the checked address."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stablegate.kit import ssrf
from stablegate.kit.ssrf import UnsafeDestination

FORBIDDEN = [
    ("http://127.0.0.1/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://2130706433/", "loopback"),  # decimal
    ("http://0x7f000001/", "loopback"),  # hex
    ("http://0177.0.0.1/", "loopback"),  # octal
    ("http://127.1/", "loopback"),  # short form
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[64:ff9b::10.0.0.1]/", "private"),  # NAT64 of a private address
    ("http://[2002:a00:1::]/", "private"),  # 6to4 of 10.0.0.1
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd12:3456::1]/", "private"),  # unique local
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://2852039166/", "metadata"),  # the cloud metadata address, decimal
    ("http://0xa9fea9fe/", "metadata"),  # hex
    ("http://0251.0376.0251.0376/", "metadata"),  # octal
    ("http://169.254.43518/", "metadata"),  # short form
    ("http://[::ffff:169.254.169.254]/", "metadata"),  # IPv4-mapped IPv6
    ("http://127.0.0.1./", "loopback"),  # fully qualified: the same address
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://169.254.1.1/", "link_local"),
    ("http://[fe80::1]/", "link_local"),
    ("http://100.64.0.1/", "cgnat"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://240.0.0.1/", "private"),  # reserved (class E); Python files it under private too
    ("http://255.255.255.255/", "private"),
    ("http://192.0.2.10/", "private"),  # documentation range
    # Special-purpose ranges some Pythons' tables call global (3.11 does).
    ("http://192.0.0.192/", "not_global"),
    ("http://192.0.0.8/", "not_global"),
    ("http://[fec0::1]/", "not_global"),  # site-local, deprecated
    ("http://[3fff::1]/", "not_global"),  # documentation
]


@pytest.fixture
def listener() -> Iterator[list[str]]:
    """A real socket on 127.0.0.1:80-ish: records any connection that reaches it."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.headers.get("host", ""))
            self.send_response(204)
            self.end_headers()

        do_GET = do_POST

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    hits.append(f"port:{server.server_address[1]}")
    yield hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("url", "reason"), FORBIDDEN)
async def test_internal_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeDestination) as err:
        await ssrf.check_url(url)
    assert err.value.reason == reason, str(err.value)


async def test_refused_before_any_connection(listener: list[str]) -> None:
    port = listener[0].removeprefix("port:")
    for host in ("127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]"):
        with pytest.raises(UnsafeDestination):
            await ssrf.check_url(f"http://{host}:{port}/hook")
    assert listener == [f"port:{port}"]  # nothing arrived


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@example.com/",
        "ftp://example.com/",
        "http:///nohost",
        "http://example.com:99999/",
        "http://93.184.216.34:0/",  # not quietly port 80
    ],
)
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await ssrf.check_url(url)


@pytest.mark.parametrize("host", ["1.2.3.4.5", "example.0x", "256.256.256.256", "0x100000000"])
async def test_hosts_ending_in_a_bad_number_are_refused(host: str) -> None:
    """What ends in a number is an address or nothing: never looked up as a name."""
    with pytest.raises(UnsafeDestination) as err:
        await ssrf.check_url(f"https://{host}/")
    assert err.value.reason in ("bad_host", "bad_url"), str(err.value)


@pytest.mark.parametrize("host", ["cafe.cafe", "abc.de", "bad.be", "dead.beef.ad", "0x7f.example"])
async def test_names_of_hex_letters_are_names(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels made of hex letters are still a name: looked up, and checked by their answer."""
    looked_up: list[str] = []

    async def getaddrinfo(name: str, *_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        looked_up.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    destination = await ssrf.check_url(f"https://{host}/hooks")
    assert (destination.host, str(destination.ip)) == (host, "93.184.216.34")
    assert looked_up == [host]


async def test_public_addresses_pass_and_keep_their_name() -> None:
    destination = await ssrf.check_url("https://93.184.216.34:8443/hooks?x=1")
    assert (str(destination.ip), destination.port, destination.scheme) == ("93.184.216.34", 8443, "https")
    assert ssrf.forbidden_reason(destination.ip) is None


async def test_allow_list_opens_localhost_and_requests_go_to_the_checked_address(listener: list[str]) -> None:
    port = listener[0].removeprefix("port:")
    destination = await ssrf.check_url(f"http://localhost:{port}/hook", allow=["127.0.0.0/8"])
    assert str(destination.ip) == "127.0.0.1"
    async with ssrf.pinned_client() as client:
        reply = await ssrf.pinned_request(client, "POST", destination, content=b"{}")
    assert reply.status_code == 204
    assert listener[1:] == [f"localhost:{port}"]  # the name travelled in Host


async def test_a_name_with_any_internal_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS answers one public and one private address: refused (no picking the good one)."""

    async def getaddrinfo(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 443)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", 443)),
        ]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    with pytest.raises(UnsafeDestination) as err:
        await ssrf.check_url("https://rebind.example/")
    assert err.value.reason == "private"


def _certificate(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (its own CA), as PEM files: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """An HTTPS receiver on 127.0.0.1 whose certificate names hooks.example: (port, its
    certificate, what it saw: the SNI name and the Host header of each request)."""
    cert, key = _certificate("hooks.example", tmp_path)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client may reuse the connection

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append(f"host:{self.headers.get('host')}")
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            return

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: seen.append(f"sni:{name}")  # type: ignore[assignment,return-value]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], cert, seen
    server.shutdown()
    server.server_close()


async def test_https_goes_to_the_checked_address_and_verifies_the_name(
    tls_receiver: tuple[int, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live mode's path: the connection goes to the address that was checked, while SNI,
    Host and certificate verification all use the name; a certificate for another name
    is refused, so pinning the address never weakens TLS."""
    port, cert, seen = tls_receiver

    async def getaddrinfo(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    destination = await ssrf.check_url(f"https://hooks.example:{port}/hook", allow=["127.0.0.0/8"])
    trusting = ssl.create_default_context(cafile=str(cert))
    async with ssrf.pinned_client(verify=trusting) as client:
        reply = await ssrf.pinned_request(client, "POST", destination, content=b"{}")
    assert reply.status_code == 204
    assert seen == ["sni:hooks.example", f"host:hooks.example:{port}"]

    # The same address under another name: its certificate does not name it.
    impostor = await ssrf.check_url(f"https://wrong.example:{port}/hook", allow=["127.0.0.0/8"])
    async with ssrf.pinned_client(verify=trusting) as client:
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
            await ssrf.pinned_request(client, "POST", impostor, content=b"{}")
    assert seen[2:] == ["sni:wrong.example"]  # refused at the handshake: no request was sent


async def test_a_connection_made_for_one_name_is_never_reused_for_another(
    tls_receiver: tuple[int, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two names at one address, one client (as the delivery worker has): the pool keys
    connections by name, so the second name gets its own handshake and its own
    certificate check, not the first name's verified connection."""
    port, cert, seen = tls_receiver

    async def getaddrinfo(*_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    right = await ssrf.check_url(f"https://hooks.example:{port}/hook", allow=["127.0.0.0/8"])
    wrong = await ssrf.check_url(f"https://wrong.example:{port}/hook", allow=["127.0.0.0/8"])
    async with ssrf.pinned_client(verify=ssl.create_default_context(cafile=str(cert))) as client:
        assert (await ssrf.pinned_request(client, "POST", right, content=b"{}")).status_code == 204
        with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
            await ssrf.pinned_request(client, "POST", wrong, content=b"{}")
        assert (await ssrf.pinned_request(client, "POST", right, content=b"{}")).status_code == 204
    host = f"host:hooks.example:{port}"
    assert seen == ["sni:hooks.example", host, "sni:wrong.example", host]  # the right name's connection reused


async def test_only_checked_destinations_are_dialled(listener: list[str]) -> None:
    """The pinned client's network layer dials the address approved for the request
    being sent, and nothing else; another client cannot be used to send pinned."""
    port = listener[0].removeprefix("port:")
    async with ssrf.pinned_client() as client:
        with pytest.raises(httpx.ConnectError, match="was not checked"):
            await client.get(f"http://127.0.0.1:{port}/")
    destination = await ssrf.check_url(f"http://localhost:{port}/hook", allow=["127.0.0.0/8"])
    async with httpx.AsyncClient() as plain:
        with pytest.raises(TypeError):
            await ssrf.pinned_request(plain, "POST", destination)  # type: ignore[arg-type]
    assert listener == [f"port:{port}"]  # nothing arrived


async def test_international_and_fully_qualified_names_travel_as_dns_has_them(
    listener: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An international name is looked up, sent (Host, SNI) and pooled in its xn-- form,
    a trailing dot is dropped (certificates never name it): the same name throughout."""
    port = listener[0].removeprefix("port:")
    looked_up: list[str] = []

    async def getaddrinfo(name: str, *_args: object, **_kwargs: object) -> list[tuple[object, ...]]:
        looked_up.append(name)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    idn = await ssrf.check_url(f"http://bücher.test:{port}/hook", allow=["127.0.0.0/8"])
    dotted = await ssrf.check_url(f"http://hooks.test.:{port}/hook", allow=["127.0.0.0/8"])
    assert (idn.host, dotted.host) == ("xn--bcher-kva.test", "hooks.test")
    assert looked_up == ["xn--bcher-kva.test", "hooks.test"]
    async with ssrf.pinned_client() as client:
        for destination in (idn, dotted):
            assert (await ssrf.pinned_request(client, "POST", destination, content=b"{}")).status_code == 204
    assert listener[1:] == [f"xn--bcher-kva.test:{port}", f"hooks.test:{port}"]


@pytest.mark.parametrize("entry", ["localhost", "LOCALHOST", "localhost."])
async def test_allow_list_names_match_in_the_form_urls_are_checked_in(entry: str) -> None:
    destination = await ssrf.check_url("http://localhost./hook", allow=[entry])
    assert (destination.host, str(destination.ip)) == ("localhost", "127.0.0.1")
