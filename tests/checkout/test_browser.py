"""The hosted checkout in a real browser (Debian's Chromium driven by Playwright) against the
real API server, a live anvil (blocks keep coming) and the block follower running in the
background: the page must get from "waiting" to "paid" by itself.

The wallet is an EIP-1193 provider injected before the page's scripts: `window.ethereum`
forwards every request through an exposed Python function to anvil, whose development
accounts are unlocked (so eth_sendTransaction from a payer works as a wallet's would).
Wallet-only methods (accounts, chain switching, the user's "reject") are answered in
Python. A screenshot of each state lands in the artifacts directory
(STABLEGATE_TEST_ARTIFACTS, else pytest's temporary directory)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from eth_account import Account
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from stablegate.chains.anvil import DEV_PRIVATE_KEYS, LOCAL_CHAIN_ID
from stablegate.db import Database
from stablegate.payments import service as payments
from tests.checkout.conftest import USDC, LiveChain, create_payment, option, page_path, pay_transfer
from tests.conftest import ApiServer, Tenant, payments_env, start_server, stop_server

CHROMIUM = os.environ.get("STABLEGATE_CHROMIUM", "/usr/bin/chromium")
PHONE = {"width": 375, "height": 812}
NARROW_PHONE_WIDTH = 360
DESKTOP = {"width": 1024, "height": 900}
STATE_TIMEOUT_MS = 15_000
PAYER = Account.from_key(DEV_PRIVATE_KEYS[3]).address
EMPTY_ACCOUNT = Account.from_key(DEV_PRIVATE_KEYS[0]).address  # the deployer: holds no test tokens
SHORT_QUOTE_TTL_S = 3

PROVIDER = """
(() => {
  function request(args) {
    return window.__stablegateTestWallet(args.method, args.params || []).then((reply) => {
      if (reply && reply.error) {
        const error = new Error(reply.error.message);
        error.code = reply.error.code;
        throw error;
      }
      return reply.result;
    });
  }
  window.ethereum = { isStablegateTestWallet: true, request, on() {}, removeListener() {} };
})();
"""


@dataclass
class FakeWallet:
    """The wallet half of an EIP-1193 provider: accounts, chain switching and the user's
    answers are decided here; everything else goes to the chain."""

    rpc_url: str
    account: str = PAYER
    chain_id: int = 1  # starts on another network: the page must switch it
    known_chains: set[int] = field(default_factory=lambda: {1, LOCAL_CHAIN_ID})
    rejects: set[str] = field(default_factory=set)  # methods the user says no to
    calls: list[str] = field(default_factory=list)
    sent_to: list[str] = field(default_factory=list)  # eth_sendTransaction targets

    async def handle(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls.append(method)
        if method in self.rejects:
            return {"error": {"code": 4001, "message": "User rejected the request."}}
        if method in ("eth_requestAccounts", "eth_accounts"):
            return {"result": [self.account]}
        if method == "eth_chainId":
            return {"result": hex(self.chain_id)}
        if method == "wallet_switchEthereumChain":
            wanted = int(params[0]["chainId"], 16)
            if wanted not in self.known_chains:
                return {"error": {"code": 4902, "message": f"Unrecognized chain ID {hex(wanted)}."}}
            self.chain_id = wanted
            return {"result": None}
        assert self.chain_id == LOCAL_CHAIN_ID, f"{method} sent while the wallet is on chain {self.chain_id}"
        if method == "eth_sendTransaction":
            self.sent_to.append(params[0]["to"].lower())
        async with httpx.AsyncClient(timeout=30) as client:
            reply = await client.post(
                self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            )
        body: dict[str, Any] = reply.json()
        return {"error": body["error"]} if "error" in body else {"result": body["result"]}


@dataclass
class Shop:
    """The merchant's site: where the page sends the payer back to."""

    base_url: str

    @property
    def thanks(self) -> str:
        return self.base_url + "/thanks"

    @property
    def cart(self) -> str:
        return self.base_url + "/cart"


@pytest.fixture(scope="module")
def shop() -> Iterator[Shop]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>Shop</title><h1>Back at the shop</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Shop(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: bin/test installs Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("STABLEGATE_TEST_ARTIFACTS")
    if configured:
        directory = Path(configured) / "checkout"
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return tmp_path_factory.mktemp("checkout-screenshots")


@pytest.fixture(scope="module")
def short_quote_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server whose quotes live a few seconds, to watch one run out on the page."""
    directory = tmp_path_factory.mktemp("short_quote_api")
    env = payments_env(directory) | {"STABLEGATE_QUOTE_TTL_S": str(SHORT_QUOTE_TTL_S)}
    server = start_server(database_url, directory / "server.log", env)
    yield server
    stop_server(server)


async def open_page(
    browser: Browser, url: str, wallet: FakeWallet | None = None, viewport: dict[str, int] = DESKTOP
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    if wallet is not None:
        await context.expose_function("__stablegateTestWallet", wallet.handle)
        await context.add_init_script(PROVIDER)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    await page.goto(url)
    await expect(page.locator("#status")).to_be_visible()
    context.errors = errors  # type: ignore[attr-defined]
    return context, page


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=artifacts / f"{name}.png", full_page=True)


async def state_is(page: Page, state: str) -> None:
    await expect(page.locator("#checkout")).to_have_attribute("data-state", state, timeout=STATE_TIMEOUT_MS)


def no_errors(context: BrowserContext) -> None:
    # The page's own errors only: a CSP violation or a script error shows up here.
    assert context.errors == [], context.errors  # type: ignore[attr-defined]


def fetch(api: ApiServer, tenant: Tenant, payment: dict[str, Any]) -> dict[str, Any]:
    with api.client(tenant.test_key) as client:
        body: dict[str, Any] = client.get(f"/v1/payments/{payment['id']}").json()
    return body


# --- wallet ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("asset", "approval"), [("USDC", "permit"), ("DAI", "approve")])
async def test_wallet_pays_and_the_page_returns_to_the_shop(
    asset: str,
    approval: str,
    api: ApiServer,
    tenant: Tenant,
    live_chain: LiveChain,
    browser: Browser,
    shop: Shop,
    artifacts: Path,
) -> None:
    payment = create_payment(api, tenant, accepted=[{"chain": "local", "asset": asset}], success_url=shop.thanks)
    wallet = FakeWallet(live_chain.chain.anvil.url)
    context, page = await open_page(browser, api.base_url + page_path(payment), wallet)
    await shot(page, artifacts, f"wallet-{asset.lower()}-waiting")

    await page.get_by_role("button", name=f"Pay 25.00 {asset} with wallet").click()
    await state_is(page, "paid")
    await expect(page.locator("#status")).to_have_text("Paid. Thank you! Taking you back to the shop…")
    await shot(page, artifacts, f"wallet-{asset.lower()}-paid")
    await page.wait_for_url(shop.thanks, timeout=STATE_TIMEOUT_MS)

    assert "wallet_switchEthereumChain" in wallet.calls and wallet.chain_id == LOCAL_CHAIN_ID
    router = option(payment, asset)["instructions"]["contract"]["router"].lower()
    token = option(payment, asset)["token"].lower()
    # A token with a working EIP-2612 permit costs one transaction; one without, two.
    assert wallet.sent_to == ([router] if approval == "permit" else [token, router])
    paid = fetch(api, tenant, payment)
    assert (paid["status"], paid["paid"], paid["receipts"][0]["rail"]) == ("succeeded", "exact", "contract")
    no_errors(context)
    await context.close()


async def test_wallet_problems_are_explained_and_nothing_is_paid(
    api: ApiServer, tenant: Tenant, live_chain: LiveChain, browser: Browser, artifacts: Path
) -> None:
    payment = create_payment(api, tenant)
    wallet = FakeWallet(live_chain.chain.anvil.url, known_chains={1})
    context, page = await open_page(browser, api.base_url + page_path(payment), wallet, PHONE)
    button = page.get_by_role("button", name="Pay 25.00 USDC with wallet")
    error = page.locator("section.option:not([hidden]) .wallet-error")

    await button.click()
    await expect(error).to_have_text(
        "Your wallet does not know Local test chain. Add the network to your wallet, or pay by transfer."
    )
    await shot(page, artifacts, "wallet-error-unknown-chain")

    wallet.known_chains.add(LOCAL_CHAIN_ID)
    wallet.rejects = {"wallet_switchEthereumChain"}
    retry = page.get_by_role("button", name="Try again")
    await retry.click()
    await expect(error).to_have_text(
        "Your wallet is not on Local test chain. Switch to Local test chain in your wallet and try again."
    )

    wallet.rejects = set()
    wallet.account = EMPTY_ACCOUNT
    await retry.click()
    await expect(error).to_have_text(
        "Not enough USDC in this account: you have 0.00, the payment needs 25.00 (25.00 more)."
    )
    await shot(page, artifacts, "wallet-error-insufficient-balance")

    wallet.account = PAYER
    wallet.rejects = {"eth_signTypedData_v4"}
    await retry.click()
    await expect(error).to_have_text("You rejected the request in your wallet. Nothing was paid. You can try again.")
    await expect(retry).to_be_enabled()
    await shot(page, artifacts, "wallet-error-rejected")

    assert wallet.sent_to == [] and fetch(api, tenant, payment)["status"] == "requires_payment"
    no_errors(context)
    await context.close()

    # No wallet in the browser at all: the page says so and offers the transfer.
    context, page = await open_page(browser, api.base_url + page_path(payment))
    await page.get_by_role("button", name="Pay 25.00 USDC with wallet").click()
    await expect(page.locator(".wallet-error")).to_have_text(
        "No browser wallet was found. Pay by transfer below, or open this page in your wallet's browser."
    )
    no_errors(context)
    await context.close()


# --- transfer --------------------------------------------------------------------------------


async def test_transfer_on_a_phone_updates_the_page_by_itself(
    api: ApiServer, tenant: Tenant, live_chain: LiveChain, browser: Browser, artifacts: Path
) -> None:
    payment = create_payment(
        api, tenant, accepted=[{"chain": "local", "asset": "USDC"}, {"chain": "local", "asset": "DAI"}]
    )
    context, page = await open_page(browser, api.base_url + page_path(payment), viewport=PHONE)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    for width in (PHONE["width"], NARROW_PHONE_WIDTH):  # nothing scrolls sideways
        await page.set_viewport_size({"width": width, "height": PHONE["height"]})
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
    await page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    await shot(page, artifacts, "transfer-phone-waiting")

    # The picker works from the keyboard: arrow down chooses DAI and shows its panel.
    await page.get_by_role("radio", name="USDC on Local test chain").focus()
    await page.keyboard.press("ArrowDown")
    await expect(page.get_by_role("radio", name="DAI on Local test chain")).to_be_checked()
    panel = page.locator("#option-1")
    await expect(panel).to_be_visible()
    await expect(page.locator("#option-0")).to_be_hidden()
    await expect(panel.locator(".warning")).to_have_text(
        "Send only DAI on Local test chain. Other tokens, or DAI on another network, will be lost."
    )

    address = await panel.get_by_role("textbox", name="Deposit address").input_value()
    uri = await panel.locator("img.qr").get_attribute("data-uri")
    assert uri is not None
    token, query = uri.removeprefix("ethereum:").split("@")[0], parse_qs(urlsplit(uri).query)
    assert query["address"] == [address] and token == option(payment, "DAI")["token"]
    qr = await page.request.get(api.base_url + (await panel.locator("img.qr").get_attribute("src") or ""))
    assert qr.ok and qr.headers["content-type"] == "image/svg+xml"
    await panel.get_by_role("button", name="Copy the deposit address").click()
    await expect(panel.locator(".copy-status")).to_have_text("Copied to the clipboard.")
    assert await page.evaluate("navigator.clipboard.readText()") == address

    # Pay from a script, as the payer's own wallet app would; hold the blocks to see "seen".
    live_chain.mining.clear()
    live_chain.chain.transfer(token, address, int(query["uint256"][0]), payer=1)
    await state_is(page, "seen")
    await expect(page.locator("#status")).to_have_text("Payment seen on Local test chain: 1 of 3 confirmations.")
    await shot(page, artifacts, "transfer-phone-seen")
    live_chain.mining.set()
    await state_is(page, "paid")
    await expect(page.locator("#status")).to_have_text("Paid. Thank you!")
    await expect(page.locator("#pay-area")).to_be_hidden()
    await shot(page, artifacts, "transfer-phone-paid")
    assert fetch(api, tenant, payment)["receipts"][0]["rail"] == "deposit_address"
    no_errors(context)
    await context.close()


async def test_underpaid_then_topped_up(
    api: ApiServer, tenant: Tenant, live_chain: LiveChain, browser: Browser, artifacts: Path
) -> None:
    payment = create_payment(api, tenant)
    context, page = await open_page(browser, api.base_url + page_path(payment), viewport=PHONE)
    pay_transfer(live_chain.chain, payment, 10 * USDC)
    await state_is(page, "underpaid")
    await expect(page.locator("#status")).to_have_text(
        "We received part of the payment. 15.00 USDC is still missing: send the rest to the same address."
    )
    # The same address takes the rest: amount, QR code and link ask for 15 USDC now, and the
    # wallet (whose signed intent is for the whole price) steps aside.
    await expect(page.locator("#pay-area")).to_be_visible()
    await expect(page.locator("#amount-0")).to_have_value("15.00")
    await expect(page.locator("#option-0 .send-label")).to_have_text("Left to send")
    await expect(page.locator("img.qr")).to_have_attribute("data-uri", re.compile(rf"uint256={15 * USDC}$"))
    await expect(page.locator("img.qr")).to_have_attribute("src", re.compile(rf"\?units={15 * USDC}$"))
    await expect(page.locator("section.wallet")).to_be_hidden()
    await shot(page, artifacts, "underpaid")

    pay_transfer(live_chain.chain, payment, 15 * USDC)
    await state_is(page, "paid")
    await shot(page, artifacts, "underpaid-topped-up-paid")
    assert fetch(api, tenant, payment)["amount_received"] == "25.00"
    no_errors(context)
    await context.close()


async def test_quote_runs_out_then_the_payment_expires_and_offers_a_fresh_start(
    short_quote_api: ApiServer, tenant: Tenant, db: Database, browser: Browser, shop: Shop, artifacts: Path
) -> None:
    payment = create_payment(short_quote_api, tenant, expires_in_s=60, cancel_url=shop.cart)
    context, page = await open_page(browser, short_quote_api.base_url + page_path(payment))
    panel = page.locator("#option-0")
    await expect(panel.locator(".quote-expired")).to_be_visible(timeout=(SHORT_QUOTE_TTL_S + 5) * 1000)
    await expect(panel.locator(".countdown")).to_be_hidden()
    await expect(page.get_by_role("button", name="Pay 25.00 USDC with wallet")).to_be_disabled()
    await expect(panel.get_by_role("textbox", name="Deposit address")).to_be_visible()  # the address still takes money
    await shot(page, artifacts, "quote-expired")

    an_hour_on = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61 + payments.EXPIRY_MAX_WAIT_S)
    async with db.session() as session:  # no follower runs here: the job's last resort expires it
        await payments.expire_due(session, an_hour_on)
    await state_is(page, "expired")
    await expect(page.locator("#status")).to_have_text("This payment has expired. Do not send money to it.")
    await expect(page.locator("#pay-area")).to_be_hidden()
    await shot(page, artifacts, "expired")
    await page.get_by_role("link", name="Start again").click()
    await page.wait_for_url(shop.cart)
    no_errors(context)
    await context.close()
