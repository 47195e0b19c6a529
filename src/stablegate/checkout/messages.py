"""Every string the hosted checkout shows, in one catalogue per language (design 0007).

Templates look strings up by key (`t("pay_with_wallet")`); the page's script gets the
`JS_KEYS` subset as JSON in a data attribute, so a translation is one more dict here and
no string lives in the HTML or the JavaScript. Placeholders are `{name}`.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_LANGUAGE = "en"

EN: dict[str, str] = {
    # The page.
    "page_title": "Pay {merchant}",
    "not_found_title": "Payment not found",
    "not_found_body": "This payment link is not valid. Check the link you were given, or ask the shop for a new one.",
    "test_mode": "Test mode: no real money moves on this page.",
    "pay_to": "Payment to",
    "amount_due": "Amount due",
    "choose_option": "Choose how to pay",
    "option_label": "{asset} on {chain}",
    "you_send": "You send",
    "left_to_send": "Left to send",
    "quote_valid_for": "Price held for",
    "quote_expired": "This price has expired. Money sent to the address below is still credited; ask the shop "
    "if you are unsure.",
    # Wallet.
    "pay_with_wallet": "Pay with a browser wallet",
    "wallet_button": "Pay {amount} {asset} with wallet",
    "wallet_hint": "Your wallet asks you to approve {asset} for the payment contract, then to confirm the payment.",
    "no_wallet": "No browser wallet was found. Pay by transfer below, or open this page in your wallet's browser.",
    "step_connect": "Connecting to your wallet…",
    "step_switch": "Switching your wallet to {chain}…",
    "step_balance": "Checking your {asset} balance…",
    "step_permit": "Sign the permit in your wallet (no fee)…",
    "step_approve": "Approve {asset} in your wallet…",
    "step_approve_wait": "Waiting for the approval to be included…",
    "step_pay": "Confirm the payment in your wallet…",
    "step_pay_wait": "Payment sent. Waiting for the network…",
    "error_rejected": "You rejected the request in your wallet. Nothing was paid. You can try again.",
    "error_unknown_chain": "Your wallet does not know {chain}. Add the network to your wallet, or pay by transfer.",
    "error_wrong_chain": "Your wallet is not on {chain}. Switch to {chain} in your wallet and try again.",
    "error_insufficient": "Not enough {asset} in this account: you have {balance}, the payment needs {amount} "
    "({shortfall} more).",
    "error_pending": "Your wallet already has a request open. Finish or close it in your wallet, then try again.",
    "error_failed": "The transaction failed on the network. Nothing was paid. You can try again.",
    "error_expired": "This price has expired, so the wallet payment is no longer possible. Pay by transfer instead.",
    "error_generic": "The wallet reported an error: {message}",
    "retry": "Try again",
    # Transfer.
    "pay_by_transfer": "Pay by transfer",
    "transfer_warning": "Send only {asset} on {chain}. Other tokens, or {asset} on another network, will be lost.",
    "deposit_address": "Deposit address",
    "amount_to_send": "Amount to send",
    "copy": "Copy",
    "copy_address": "Copy the deposit address",
    "copy_amount": "Copy the amount",
    "copied": "Copied to the clipboard.",
    "copy_failed": "Could not copy: select the text and copy it by hand.",
    "qr_alt": "QR code: send {amount} {asset} on {chain} to {address}",
    "open_in_wallet": "Open in a wallet app",
    # Status.
    "status_waiting": "Waiting for your payment.",
    "status_seen": "Payment seen on {chain}: {confirmations} of {required} confirmations.",
    "status_seen_unknown_depth": "Payment seen on {chain}: {confirmations} confirmations so far.",
    "status_paid": "Paid. Thank you!",
    "status_paid_redirect": "Paid. Thank you! Taking you back to the shop…",
    "status_underpaid": "We received part of the payment. {missing} {asset} is still missing: send the rest to "
    "the same address.",
    "status_expired": "This payment has expired. Do not send money to it.",
    "status_expired_underpaid": "This payment expired before it was paid in full. What you sent has reached the "
    "shop, which will complete or refund your order. Do not send more to it.",
    "status_canceled": "This payment was canceled. Do not send money to it.",
    "status_late": "Your payment arrived after this payment closed. The shop will accept or refund it.",
    "reconnecting": "Reconnecting…",
    "start_again": "Start again",
    "back_to_shop": "Return to the shop",
    "continue": "Continue",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN}

# What checkout.js needs; the rest is only rendered on the server.
JS_KEYS = (
    "wallet_button",
    "no_wallet",
    "step_connect",
    "step_switch",
    "step_balance",
    "step_permit",
    "step_approve",
    "step_approve_wait",
    "step_pay",
    "step_pay_wait",
    "error_rejected",
    "error_unknown_chain",
    "error_wrong_chain",
    "error_insufficient",
    "error_pending",
    "error_failed",
    "error_expired",
    "error_generic",
    "copied",
    "copy_failed",
    "quote_expired",
    "status_waiting",
    "status_seen",
    "status_seen_unknown_depth",
    "status_paid",
    "status_paid_redirect",
    "status_underpaid",
    "status_expired",
    "status_expired_underpaid",
    "status_canceled",
    "status_late",
    "reconnecting",
    "retry",
    "you_send",
    "left_to_send",
    "qr_alt",
)

# Chain display names; a chain not listed shows its configured name.
CHAIN_NAMES: dict[str, str] = {
    "ethereum": "Ethereum",
    "base": "Base",
    "polygon": "Polygon",
    "arbitrum": "Arbitrum One",
    "optimism": "OP Mainnet",
    "local": "Local test chain",
}


def catalogue(language: str = DEFAULT_LANGUAGE) -> Mapping[str, str]:
    return CATALOGUES.get(language, EN)


def translate(key: str, language: str = DEFAULT_LANGUAGE, **values: object) -> str:
    """The string for `key`, placeholders filled. A missing key is a bug: fail loudly."""
    text = catalogue(language)[key]
    return text.format_map(values) if values else text


def js_messages(language: str = DEFAULT_LANGUAGE) -> dict[str, str]:
    strings = catalogue(language)
    return {key: strings[key] for key in JS_KEYS}


def chain_label(name: str) -> str:
    return CHAIN_NAMES.get(name, name)
