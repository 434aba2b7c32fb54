"""The current digits large: each test digit beside its reconstruction, then the samples, at the
largest whole-number scale at which at least one of them fits (n / p page through them)."""

from __future__ import annotations

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..digits import flow
from ..widgets.digit_grid import DigitGrid


def zoom_for(size: int, px: int, width: int, height: int, most: int = 4) -> int:
    """The largest scale (1..most) at which one group of ``size`` digits fits width x height."""
    for z in range(most, 1, -1):
        if flow(size, 1, width, height, px * z).shown:
            return z
    return 1


class ZoomScreen(Screen):
    BINDINGS = [
        Binding("escape,z", "app.pop_screen", "back", id="close-zoom"),
        Binding("n,right", "page(1)", "next", id="zoom-next"),
        Binding("p,left", "page(-1)", "previous", id="zoom-previous"),
    ]

    def __init__(self, recon: np.ndarray | None, samples: np.ndarray | None, protocol: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recon, self.samples, self.protocol = recon, samples, protocol
        self.part = "recon" if recon is not None else "samples"

    def compose(self) -> ComposeResult:
        with Vertical(id="zoom-box") as box:
            box.border_title = "zoom"
            yield Static("", id="zoom-caption")
            yield DigitGrid(id="zoom-grid")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        grid = self.query_one(DigitGrid)
        grid.protocol = self.protocol
        self.call_after_refresh(self.redraw)

    @property
    def current(self) -> np.ndarray | None:
        return self.recon if self.part == "recon" else self.samples

    def redraw(self) -> None:
        grid, g = self.query_one(DigitGrid), self.current
        if g is None:
            return
        grid.zoom = zoom_for(g.shape[0], g.shape[2], grid.size.width, grid.size.height)
        grid.set_grid(g)
        grid.refresh()
        self.call_after_refresh(self._caption)

    def _caption(self) -> None:
        grid, g = self.query_one(DigitGrid), self.current
        what = "test digit | reconstruction" if self.part == "recon" else "samples"
        first, last = grid.start + 1, grid.start + max(grid.shown, 1)
        self.query_one("#zoom-caption", Static).update(
            f"{what} {first}-{last} of {g.shape[1]}, each pixel as {grid.zoom}x{grid.zoom} · n/p: page · esc: back")

    def action_page(self, step: int) -> None:
        grid, g = self.query_one(DigitGrid), self.current
        if g is None:
            return
        n = max(grid.shown, 1)
        start = grid.start + step * n
        if start >= g.shape[1] or start < 0:  # past either end: the other part (reconstructions <-> samples)
            other = "samples" if self.part == "recon" else "recon"
            if (self.samples if other == "samples" else self.recon) is not None:
                self.part = other
            start = 0
        grid.start = start
        grid._cache = None
        self.redraw()

    def export_rows(self):
        grid = self.query_one(DigitGrid).visible()
        return None if grid is None else (list(grid), None, f"zoom ({self.part})")
