"""The two static files. checkout.js encodes contract calls by hand: its selectors and the
EIP-2612 typehash must be those of our contracts' ABIs (contracts/artifacts), and every
string it shows comes from the catalogue. checkout.css: every text colour pair meets
WCAG AA contrast (4.5:1)."""

from __future__ import annotations

import re
from importlib import resources

from eth_utils.crypto import keccak

from stablegate.checkout import messages
from stablegate.rails import contracts

SCRIPT = (resources.files("stablegate.checkout") / "static" / "checkout.js").read_text()
STYLE = (resources.files("stablegate.checkout") / "static" / "checkout.css").read_text()
# (text, background) custom properties that are drawn on each other.
COLOUR_PAIRS = [
    ("text", "card"),
    ("text", "background"),
    ("muted", "card"),
    ("primary", "card"),
    ("primary-text", "primary"),
    ("warning-text", "warning-bg"),
    ("ok-text", "ok-bg"),
    ("ok-text", "card"),
    ("error-text", "error-bg"),
    ("info-text", "info-bg"),
]


def signature(entry: dict[str, object]) -> str:
    def kind(arg: dict[str, object]) -> str:
        if arg["type"] == "tuple":
            return "(" + ",".join(kind(c) for c in arg["components"]) + ")"  # type: ignore[attr-defined]
        return str(arg["type"])

    return f"{entry['name']}(" + ",".join(kind(a) for a in entry["inputs"]) + ")"  # type: ignore[attr-defined]


def selectors(contract: str) -> dict[str, str]:
    return {
        str(e["name"]): "0x" + keccak(text=signature(e))[:4].hex()
        for e in contracts.abi(contract)
        if e["type"] == "function"
    }


def test_selectors_are_the_contracts() -> None:
    written = dict(re.findall(r'^\s+(\w+): "(0x[0-9a-f]{8})"', SCRIPT, re.M))
    router, token = selectors("PaymentRouter"), selectors("TestStablecoin")
    expected = {
        "balanceOf": token["balanceOf"],
        "allowance": token["allowance"],
        "approve": token["approve"],
        "pay": router["pay"],
        "payWithPermit": router["payWithPermit"],
        "permitTypehash": token["PERMIT_TYPEHASH"],
        "name": token["name"],
        "version": token["version"],
        "nonces": token["nonces"],
    }
    assert written == expected


def test_permit_typehash_is_eip2612() -> None:
    permit = "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
    typehash = "0x" + keccak(text=permit).hex()
    assert f'EIP2612_TYPEHASH = "{typehash}"' in SCRIPT


def test_every_string_the_script_shows_is_in_the_catalogue() -> None:
    found = set(re.findall(r'\b(?:t|step|WalletError)\("(\w+)"', SCRIPT))
    # t("status_" + state) builds the rest from the page's states.
    used = {key for key in found if not key.endswith("_")}
    used |= {f"status_{s}" for s in ("waiting", "paid", "expired", "canceled", "late")}
    assert used <= set(messages.JS_KEYS), used - set(messages.JS_KEYS)
    assert set(messages.JS_KEYS) <= set(messages.EN)


def luminance(hex_colour: str) -> float:
    """WCAG 2 relative luminance of #rrggbb."""
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_text_colours_have_aa_contrast() -> None:
    colours = dict(re.findall(r"--([\w-]+): (#[0-9a-f]{6});", STYLE))
    for text, background in COLOUR_PAIRS:
        lighter, darker = sorted((luminance(colours[text]), luminance(colours[background])), reverse=True)
        ratio = (lighter + 0.05) / (darker + 0.05)
        assert ratio >= 4.5, (text, background, round(ratio, 2))
