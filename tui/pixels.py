"""Which way digits are drawn: real pixels (kitty graphics or sixel, through textual-image), grey
half-blocks, or ASCII; detected once, before the app starts, since only then can the terminal be asked.

No Textual here beyond textual-image's own probe (imported lazily by :func:`detect`).
"""

from __future__ import annotations

import sys

PROTOCOLS = ("kitty", "sixel")
CHOICES = ("auto", *PROTOCOLS, "halfblock", "ascii")
LABELS = {"kitty": "pixels (kitty graphics)", "sixel": "pixels (sixel)", "halfblock": "half-blocks (grey)",
          "ascii": "ASCII"}


def detect() -> str | None:
    """The graphics protocol the terminal answers to ("kitty" or "sixel"), None without one or without a tty.

    textual-image queries the terminal when imported, which works only before Textual owns stdin.
    """
    if not (sys.__stdout__ and sys.__stdout__.isatty()):
        return None
    try:
        from textual_image import renderable
        import textual_image.widget  # noqa: F401 - measures the cell size in pixels, also only possible now
    except Exception:  # noqa: BLE001 - a broken probe means no pixels, not a crash
        return None
    if renderable.Image is renderable.TGPImage:
        return "kitty"
    if renderable.Image is renderable.SixelImage:
        return "sixel"
    return None


def resolve(requested: str = "auto", detected: str | None = None, tty: bool | None = None) -> tuple[str, str | None]:
    """(protocol, note): the protocol to start with and a one-line note when the request could not be met.

    ``auto`` takes the detected protocol, else half-blocks. A forced kitty/sixel is honoured on a
    terminal (detection misses some, e.g. inside tmux) but falls back to half-blocks where there is no
    terminal to draw on (pytest, --serve, a pipe).
    """
    tty = bool(sys.__stdout__ and sys.__stdout__.isatty()) if tty is None else tty
    if requested == "auto":
        return (detected or "halfblock"), None
    if requested in PROTOCOLS and not tty:
        return "halfblock", f"--pixels {requested}: no terminal graphics here; drawing half-blocks"
    return requested, None


def cycle(protocol: str) -> list[str]:
    """The modes `a` cycles through: the pixel protocol first when there is one, then half-blocks, ASCII."""
    return ([protocol] if protocol in PROTOCOLS else []) + ["halfblock", "ascii"]


def mode_of(protocol: str) -> str:
    """The digit mode a widget draws in: 'pixels' for a graphics protocol, else the text mode itself."""
    return "pixels" if protocol in PROTOCOLS else protocol


def image_widget_class(protocol: str):
    """textual-image's widget for a protocol (imported only when pixels are drawn)."""
    from textual_image.widget import SixelImage, TGPImage

    return TGPImage if protocol == "kitty" else SixelImage
