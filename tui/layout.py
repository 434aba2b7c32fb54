"""The three layouts (the app's -small, -medium and -large classes; their CSS is in app.tcss)."""

from __future__ import annotations

from .widgets.digit_grid import DigitGrid

RECON_TITLES = {"small": "reconstruction · z: pairs"}  # elsewhere: "test digit | reconstruction"


def size_class(width: int, height: int) -> str:
    """The layout for a terminal size: small (80x24), medium (120x40) or large (200x60)."""
    if width < 110 or height < 34:
        return "small"
    return "large" if width >= 170 and height >= 50 else "medium"


def apply_layout(app) -> None:
    """Give the app the class for its size, once per change."""
    cls = size_class(app.size.width, app.size.height)
    if app.has_class(f"-{cls}"):
        return
    for name in ("small", "medium", "large"):
        app.set_class(name == cls, f"-{name}")
    # 80x24: the 30-column panel beside a usable chart holds one whole digit: the reconstruction
    app.main.query_one("#recon", DigitGrid).draw_rows(slice(1, 2) if cls == "small" else slice(None))
    app.main.query_one("#recon-box").border_title = RECON_TITLES.get(cls, "test digit | reconstruction")
    if cls == "large":  # the diagnostics panel is on screen now
        app.refresh_diagnostics()
