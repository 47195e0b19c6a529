"""QR codes as SVG, drawn on the server (segno): no script, no image library on the page."""

from __future__ import annotations

import io

import segno

# Medium error correction leaves room for a smudged phone screen; segno raises it further
# when the version (size) the URI needs has spare capacity.
ERROR_LEVEL = "m"
QUIET_ZONE_MODULES = 4  # the standard's margin: scanners need it


def make(payload: str) -> segno.QRCode:
    return segno.make(payload, error=ERROR_LEVEL, micro=False)


def svg(payload: str, title: str) -> bytes:
    """An SVG without a fixed size (a viewBox only, so CSS sizes it), dark on white even
    in dark mode, and without inline style (the response's CSP forbids it)."""
    out = io.BytesIO()
    make(payload).save(
        out,
        kind="svg",
        border=QUIET_ZONE_MODULES,
        dark="#000",
        light="#fff",
        omitsize=True,
        xmldecl=False,
        svgclass=None,
        lineclass=None,
        title=title,
        encoding="utf-8",
    )
    return out.getvalue()
