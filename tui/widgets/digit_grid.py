"""A grid of digits drawn as text (ASCII or grey half-blocks), sized to fit the widget."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..digits import render_grid


class DigitGrid(Widget):
    """Shows a (rows, cols, H, W) image grid; columns that do not fit wrap into bands below."""

    DEFAULT_CSS = "DigitGrid { height: 1fr; width: 1fr; }"
    mode: reactive[str] = reactive("hifi")

    def __init__(self, placeholder: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.placeholder = placeholder
        self.grid: np.ndarray | None = None
        self.version = 0  # bumped on each new grid (tests and exports read it)
        self._cache: tuple | None = None

    def set_grid(self, grid: np.ndarray | None) -> None:
        self.grid = None if grid is None else np.asarray(grid)
        self.version += 1
        self._cache = None
        self.refresh()

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        if self.grid is None:
            self.refresh()

    def watch_mode(self, mode: str) -> None:
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        if self.grid is None:
            return Text(self.placeholder, style="dim")
        key = (self.version, self.mode, self.size.width, self.size.height)
        if self._cache is None or self._cache[0] != key:
            text, f = render_grid(self.grid, self.size.width, self.size.height, self.mode)
            if not f.complete and self.size.height > 0:
                text = text if f.bands else Text("(too small: enlarge the terminal)", style="dim")
            self._cache = (key, text)
        return self._cache[1]
