"""The hosted checkout over real HTTP, as a payer's browser meets it (no API key): the page,
its status JSON through every state a real chain and follower produce, QR codes, 404s,
what must never be shown, and the security headers on every response."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
import segno

from stablegate.chains.follower import Follower
from stablegate.db import Database
from stablegate.kit.ids import new_id
from tests.chains.conftest import Chain
from tests.checkout.conftest import CONFIRMATIONS, USDC, create_payment, option, page_path, pay_transfer
from tests.conftest import ApiServer, Tenant, payments_env, start_server, stop_server
from tests.payments.conftest import expire_after_grace, set_expiry

PUBLIC_URL = "https://pay.example.test"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "cross-origin-opener-policy": "same-origin",
}


@pytest.fixture(scope="module")
def public_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server whose public origin is configured (with a trailing slash, as people write it)."""
    directory = tmp_path_factory.mktemp("checkout_api")
    env = payments_env(directory) | {"STABLEGATE_PUBLIC_URL": PUBLIC_URL + "/"}
    server = start_server(database_url, directory / "server.log", env)
    yield server
    stop_server(server)


def get(api: ApiServer, path: str) -> httpx.Response:
    with api.client() as client:  # no API key: the payer has none
        return client.get(path)


def status_of(api: ApiServer, payment: dict[str, Any]) -> dict[str, Any]:
    response = get(api, page_path(payment) + "/status")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


class Page(HTMLParser):
    """Elements as (tag, attributes), and the text of script elements."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script_text += data.strip()

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for t, attrs in self.elements if t == tag]

    def by_id(self, element_id: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.elements if attrs.get("id") == element_id)


# --- the page ------------------------------------------------------------------------------


def test_hosted_url_is_the_configured_public_origin(public_api: ApiServer, api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(public_api, tenant)
    assert payment["hosted_url"] == f"{PUBLIC_URL}/pay/{payment['id']}"
    with public_api.client(tenant.test_key) as client:
        assert client.get(f"/v1/payments/{payment['id']}").json()["hosted_url"] == payment["hosted_url"]
        listed = client.get("/v1/payments", params={"limit": 1}).json()["data"][0]
        assert listed["hosted_url"] == payment["hosted_url"]
    assert get(public_api, page_path(payment)).status_code == 200
    # The default (STABLEGATE_PUBLIC_URL unset) is the local server's address.
    default = create_payment(api, tenant)
    assert default["hosted_url"] == f"http://127.0.0.1:8000/pay/{default['id']}"


def test_page_renders_a_new_payment_for_the_payer(api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(
        api,
        tenant,
        accepted=[{"chain": "local", "asset": "USDC"}, {"chain": "local", "asset": "DAI"}],
        description="Two tickets, row 7",
        success_url="https://shop.example/thanks",
    )
    response = get(api, page_path(payment))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    html = response.text
    page = Page(html)
    assert page.by_id("merchant-name") is not None and ">Acme</strong>" in html
    assert "25.00 USD" in html and "Two tickets, row 7" in html
    assert "Test mode" in html  # a test-mode payment says so
    # The picker: one radio per accepted option, labelled, the first chosen.
    radios = [a for a in page.all("input") if a.get("type") == "radio"]
    assert [r["value"] for r in radios] == ["0", "1"] and "checked" in radios[0]
    assert "USDC on Local test chain" in html and "DAI on Local test chain" in html
    for asset in ("USDC", "DAI"):
        o = option(payment, asset)
        deposit = o["instructions"]["deposit_address"]
        assert deposit["address"] in html
        assert 'value="25.00"' in html and f"25.00 {asset}" in html
        section = page.by_id(f"option-{payment['options'].index(o)}")
        assert section["data-chain-id"] == "31337" and section["data-token"] == o["token"]
        assert section["data-amount-units"] == o["quote"]["amount_units"]
        assert section["data-quote-expires-at"] == str(o["quote"]["expires_at"])
        signed = json.loads(section["data-intent"] or "")
        assert signed == {
            "intent": o["instructions"]["contract"]["intent"],
            "signature": o["instructions"]["contract"]["signature"],
        }
        assert section["data-router"] == o["instructions"]["contract"]["router"]
    qr_images = [a for a in page.all("img") if "qr" in (a.get("class") or "")]
    assert [a["src"] for a in qr_images] == [f"/pay/{payment['id']}/qr/0.svg", f"/pay/{payment['id']}/qr/1.svg"]
    assert all(a.get("alt", "").startswith("QR code: send 25.00") for a in qr_images)
    uris = [o["instructions"]["deposit_address"]["uri"] for o in payment["options"]]
    assert [a["data-uri"] for a in qr_images] == uris
    status = json.loads(page.by_id("checkout")["data-status"] or "")
    assert status["state"] == "waiting" and status["success_url"] == "https://shop.example/thanks"
    assert page.by_id("status")["aria-live"] == "polite"


def test_page_has_no_inline_code_and_every_control_is_labelled(api: ApiServer, tenant: Tenant) -> None:
    html = get(api, page_path(create_payment(api, tenant))).text
    page = Page(html)
    assert page.script_text == "" and [s["src"] for s in page.all("script")] == [
        s["src"] for s in page.all("script") if (s["src"] or "").startswith("/static/checkout/checkout.js")
    ]
    assert not page.all("style") and not any("style" in attrs for _, attrs in page.elements)
    assert not any(name.startswith("on") for _, attrs in page.elements for name in attrs)
    labelled = {a["for"] for a in page.all("label") if a.get("for")}
    for control in page.all("input") + page.all("textarea"):
        # Radios sit inside their <label>; text fields are named by a label's `for`.
        assert control.get("type") == "radio" or control["id"] in labelled
    assert all(b.get("type") == "button" for b in page.all("button"))
    assert page.all("html")[0]["lang"] == "en"
    assert any(m.get("name") == "viewport" for m in page.all("meta"))


def test_nothing_private_reaches_the_payer(api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(
        api,
        tenant,
        metadata={"internal_note": "vip-discount-4471"},
        reference="order-secret-90210",
        cancel_url="https://shop.example/cart",
    )
    page = get(api, page_path(payment)).text
    status = get(api, page_path(payment) + "/status").text
    for public in (page, status):
        for secret in ("vip-discount-4471", "internal_note", "order-secret-90210", tenant.merchant_id):
            assert secret not in public
        for word in ("metadata", "reference", "fee_bps", "fee_fixed", "fee_minimum", "rate_source", "merchant_id"):
            assert word not in public
    assert "https://shop.example/cart" in page  # the merchant's own links are for the payer


def test_unknown_malformed_and_other_ids_get_the_same_404(api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(api, tenant)
    with api.client(tenant.test_key) as client:
        customer = client.post("/v1/customers", json={"email": "payer@example.com"}).json()["id"]
        event = client.get("/v1/events", params={"limit": 1}).json()["data"][0]["id"]
    unknown = get(api, f"/pay/{new_id('pay')}")
    assert unknown.status_code == 404 and "Payment not found" in unknown.text
    others = [
        "pay_123",  # malformed
        "pay_" + payment["id"][4:].lower(),  # right letters, wrong alphabet case
        payment["id"] + "X",
        "x" * 300,
        "pay_%00" + payment["id"][5:],
        customer,  # another kind of object
        event,
        payment["id"] + "/nested/path",
        "",
    ]
    for other in others:
        response = get(api, f"/pay/{other}")
        assert (response.status_code, response.text) == (404, unknown.text), other
        assert response.headers["content-type"] == "text/html; charset=utf-8"
    for path in (f"/pay/{new_id('pay')}/status", f"/pay/{customer}/status", "/pay/pay_1/status"):
        missing = get(api, path)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"
    for path in (f"/pay/{new_id('pay')}/qr/0.svg", f"{page_path(payment)}/qr/1.svg", f"{page_path(payment)}/qr/x.svg"):
        assert get(api, path).status_code == 404
    assert get(api, "/static/checkout/other.js").status_code == 404


def test_every_checkout_response_carries_the_security_headers(api: ApiServer, tenant: Tenant) -> None:
    path = page_path(create_payment(api, tenant))
    responses = [
        get(api, path),
        get(api, path + "/status"),
        get(api, path + "/qr/0.svg"),
        get(api, "/static/checkout/checkout.js"),
        get(api, "/static/checkout/checkout.css"),
        get(api, f"/pay/{new_id('pay')}"),
        get(api, f"/pay/{new_id('pay')}/status"),
    ]
    with api.client() as client:
        responses.append(client.post(path))  # 405 from the router
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 404, 405]
    assert responses[3].headers["content-type"] == "text/javascript; charset=utf-8"
    assert responses[4].headers["content-type"] == "text/css; charset=utf-8"
    # The merchant API keeps its own headers: the checkout's apply only to its routes.
    assert "content-security-policy" not in get(api, "/healthz").headers


def modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules drawn by segno's SVG path: `M x y` moves, `m dx dy` moves relative,
    `h n` draws a run of n modules on the row at y - 0.5 (strokes are centred)."""
    path = re.search(r'<path stroke="#000" d="([^"]+)"', svg)
    assert path is not None
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for command, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path.group(1)):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark |= {(int(x) + i, int(y - 0.5)) for i in range(int(a))}
            x += float(a)
    return dark


def qr_modules(uri: str | None, border: int = 4) -> set[tuple[int, int]]:
    """The dark modules of segno's QR code for `uri`, placed inside the quiet zone."""
    assert uri is not None
    code = segno.make(uri, error="m", micro=False)
    return {(c + border, r + border) for r, row in enumerate(code.matrix) for c, cell in enumerate(row) if cell}


def test_qr_code_is_the_eip681_uri(api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(api, tenant)
    uri = payment["options"][0]["instructions"]["deposit_address"]["uri"]
    response = get(api, page_path(payment) + "/qr/0.svg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/svg+xml"
    svg = response.text
    assert "<script" not in svg and "style" not in svg
    size = segno.make(uri, error="m", micro=False).symbol_size(scale=1, border=4)[0]
    assert f'viewBox="0 0 {size} {size}"' in svg
    assert modules(svg) == qr_modules(uri)  # the image is, module for module, the QR code of the URI


# --- status through the states -------------------------------------------------------------


async def test_status_from_waiting_through_seen_and_underpaid_to_paid(
    api: ApiServer, tenant: Tenant, chain: Chain, follower: Follower
) -> None:
    payment = create_payment(
        api,
        tenant,
        accepted=[{"chain": "local", "asset": "USDC"}, {"chain": "local", "asset": "DAI"}],
        success_url="https://shop.example/thanks",
    )
    waiting = status_of(api, payment)
    assert (waiting["state"], waiting["status"], waiting["receipts"]) == ("waiting", "requires_payment", [])
    assert [(o["asset"], o["amount"], o["missing"]) for o in waiting["options"]] == [
        ("USDC", "25.00", "25.00"),
        ("DAI", "25.00", "25.00"),
    ]
    assert abs(waiting["now"] - dt.datetime.now(dt.UTC).timestamp()) < 30

    pay_transfer(chain, payment, 10 * USDC)
    await follower.sync()
    seen = status_of(api, payment)
    assert seen["state"] == "seen" and seen["status"] == "processing"
    [receipt] = seen["receipts"]
    depth = (receipt["status"], receipt["confirmations"], receipt["confirmations_required"])
    assert depth == ("seen", 1, CONFIRMATIONS)
    assert (receipt["asset"], receipt["amount"], receipt["chain"]) == ("USDC", "10.00", "Local test chain")
    chain.mine()
    await follower.sync()
    assert status_of(api, payment)["receipts"][0]["confirmations"] == 2

    chain.mine(CONFIRMATIONS)
    await follower.sync()
    underpaid = status_of(api, payment)
    assert (underpaid["state"], underpaid["paid"]) == ("underpaid", "underpaid")
    # What is missing, in either token: 15 of 25 is left, so 15 USDC or 15 DAI.
    assert [(o["missing"], o["missing_units"]) for o in underpaid["options"]] == [
        ("15.00", str(15 * USDC)),
        ("15.00", str(15 * 10**18)),
    ]
    html = get(api, page_path(payment)).text
    assert "15.00 USDC is still missing" in html
    # Only the rest is asked for now, by transfer (the signed intent is for the whole price).
    page = Page(html)
    assert page.by_id("amount-0")["value"] == "15.00" and page.by_id("amount-1")["value"] == "15.00"
    rest = f"address={option(payment)['instructions']['deposit_address']['address']}&uint256={15 * USDC}"
    assert (page.all("img")[0]["data-uri"] or "").endswith(rest)
    assert modules(get(api, page_path(payment) + "/qr/0.svg").text) == qr_modules(page.all("img")[0]["data-uri"])
    assert all("hidden" in a for a in page.all("section") if "wallet" in (a.get("class") or "").split())

    pay_transfer(chain, payment, 15 * USDC)
    await follower.sync()
    assert status_of(api, payment)["state"] == "seen"
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    paid = status_of(api, payment)
    assert (paid["state"], paid["status"], paid["paid"], paid["amount_received"]) == (
        "paid",
        "succeeded",
        "exact",
        "25.00",
    )
    assert [(o["missing"], o["missing_units"]) for o in paid["options"]] == [("0.00", "0"), ("0.00", "0")]
    assert "Taking you back to the shop" in get(api, page_path(payment)).text


async def test_status_when_canceled_expired_and_paid_late(
    api: ApiServer, tenant: Tenant, db: Database, chain: Chain, follower: Follower
) -> None:
    canceled = create_payment(api, tenant, cancel_url="https://shop.example/cart")
    with api.client(tenant.test_key) as client:
        assert client.post(f"/v1/payments/{canceled['id']}/cancel").status_code == 200
    state = status_of(api, canceled)
    assert (state["state"], state["cancel_url"]) == ("canceled", "https://shop.example/cart")
    page = Page(get(api, page_path(canceled)).text)
    again = page.by_id("start-again")
    assert again["href"] == "https://shop.example/cart" and "hidden" not in again
    assert "hidden" in page.by_id("pay-area")

    expiring = create_payment(api, tenant)
    await expire_after_grace(db, follower, expiring["id"])
    assert status_of(api, expiring)["state"] == "expired"

    pay_transfer(chain, expiring, 25 * USDC)
    await follower.sync()
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    late = status_of(api, expiring)
    assert (late["state"], late["status"], late["late"]) == ("late", "expired", True)
    assert "arrived after this payment closed" in get(api, page_path(expiring)).text


async def test_late_money_does_not_count_as_paid_towards_completion(
    api: ApiServer, tenant: Tenant, db: Database, chain: Chain, follower: Follower
) -> None:
    """10 of 25 in time, then 15 mined after the expiry while the 10 confirms: the 15
    cannot complete the payment, so the page still says 15 was missing in time."""
    payment = create_payment(api, tenant)
    pay_transfer(chain, payment, 10 * USDC)
    await follower.sync()
    await set_expiry(db, payment["id"], "now() - interval '5 seconds'")
    pay_transfer(chain, payment, 15 * USDC)
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    state = status_of(api, payment)
    assert (state["status"], state["paid"], state["late"]) == ("processing", "exact", True)
    assert {o["missing"] for o in state["options"]} == {"15.00"}
    # Nothing on time is on its way: the page says the money came late, asks for nothing.
    assert state["state"] == "late"
    page = Page(get(api, page_path(payment)).text)
    assert "hidden" in page.by_id("pay-area")


async def test_status_when_expired_part_paid(
    api: ApiServer, tenant: Tenant, db: Database, chain: Chain, follower: Follower
) -> None:
    """Part paid in time, then the payment expired: the payer is told their money reached
    the shop, and not offered to start again (they would pay it all once more)."""
    payment = create_payment(api, tenant, cancel_url="https://shop.example/cart")
    pay_transfer(chain, payment, 10 * USDC)
    await follower.sync()
    chain.mine(CONFIRMATIONS)
    await follower.sync()
    await expire_after_grace(db, follower, payment["id"])
    state = status_of(api, payment)
    assert (state["state"], state["status"], state["paid"]) == ("expired_underpaid", "expired", "underpaid")
    html = get(api, page_path(payment)).text
    page = Page(html)
    assert "hidden" in page.by_id("start-again") and "hidden" in page.by_id("pay-area")
    assert "expired before it was paid in full" in html


def test_checkout_views_are_counted(api: ApiServer, tenant: Tenant) -> None:
    payment = create_payment(api, tenant)
    get(api, page_path(payment))
    get(api, f"/pay/{new_id('pay')}")
    get(api, page_path(payment) + "/status")
    metrics = get(api, "/metrics").text
    assert re.search(r'^stablegate_checkout_views_total\{outcome="rendered"\} [1-9]', metrics, re.M)
    assert re.search(r'^stablegate_checkout_views_total\{outcome="not_found"\} [1-9]', metrics, re.M)
    assert re.search(r'^stablegate_checkout_status_reads_total\{state="waiting"\} [1-9]', metrics, re.M)
