"""Digits at their true resolution: groups (an original beside its reconstruction, or one sample) side
by side, as many whole groups as fit; in ASCII, grey half-blocks or real pixels (textual-image)."""

from __future__ import annotations

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from ..digits import as_text, fixed_canvas, fixed_picture, flow, flow_picture, flow_rows, text_rows
from ..pixels import PROTOCOLS, image_widget_class

DIM = Style(dim=True)


class DigitGrid(Widget):
    """Shows a (rows, cols, H, W) grid.

    ``layout="flow"``: each column is a group drawn side by side, groups wrap into lines and those that
    do not fit are left out (``shown`` says how many are drawn). ``layout="fixed"``: the grid as it is
    (a decoded manifold), its own size in cells, for a scrolling container.
    """

    DEFAULT_CSS = "DigitGrid { height: 1fr; width: 1fr; }"
    protocol: reactive[str] = reactive("halfblock")  # kitty | sixel | halfblock | ascii

    def __init__(self, placeholder: str = "", layout: str = "flow", zoom: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.placeholder, self.arrangement, self.zoom = placeholder, layout, zoom
        self.grid: np.ndarray | None = None
        self.version = 0  # bumped on each new grid (tests and exports read it)
        self.start = 0  # first group drawn (the zoom screen pages through them)
        self.shown = 0
        self.rows = slice(None)  # which rows of the grid are drawn (80x24 draws only the reconstructions)
        self._cache: tuple | None = None  # (what is drawn, its text rows)
        self._strips: tuple | None = None  # (the text rows, the width, their strips, a blank strip)
        self._image = None  # the textual-image child in pixel mode

    @property
    def mode(self) -> str:
        return "pixels" if self.protocol in PROTOCOLS else self.protocol

    def set_grid(self, grid: np.ndarray | None) -> None:
        self.grid = None if grid is None else np.asarray(grid)
        self.version += 1
        self._cache = None
        if self.arrangement == "fixed" and self.grid is not None:
            rows, cols, h, w = self.grid.shape
            self.styles.width, self.styles.height = cols * w, rows * ((h + 1) // 2)
        self.refresh()

    def set_placeholder(self, text: str) -> None:
        self.placeholder = text
        if self.grid is None:
            self.refresh()

    def draw_rows(self, rows: slice) -> None:
        if rows != self.rows:
            self.rows, self._cache = rows, None
            self.refresh()

    @property
    def drawn(self) -> np.ndarray:
        return self.grid[self.rows]

    def watch_protocol(self, protocol: str) -> None:
        self._cache = None
        self.refresh()

    def visible(self) -> np.ndarray | None:
        """The digits on screen as a (rows, shown, H, W) grid (what an export writes)."""
        if self.grid is None or self.arrangement == "fixed":
            return self.grid
        n = self.shown or self.grid.shape[1]
        return self.grid[:, self.start:self.start + n]

    def _flow(self):
        rows, cols, h = self.drawn.shape[:3]
        return flow(rows, cols - self.start, self.size.width, self.size.height, h * self.zoom)

    def _sync_image(self, picture) -> None:
        """Mount, update or remove the pixel child (only ever in pixel mode, on a real terminal)."""
        if picture is None:
            if self._image is not None:
                self._image.remove()
                self._image = None
            return
        cls = image_widget_class(self.protocol)
        if self._image is None or type(self._image) is not cls:
            if self._image is not None:
                self._image.remove()
            self._image = cls(picture)
            self.mount(self._image)
        else:
            self._image.image = picture
        w, h = picture.size
        self._image.styles.width, self._image.styles.height = w, (h + 1) // 2

    def render_line(self, y: int) -> Strip:
        """The text rows as strips, built once per new picture and width straight from their runs: through
        a Rich Text, Textual would split and restyle thousands of one-cell spans on every refresh (about
        25 ms a picture, measured; this path takes a tenth of it)."""
        rows, width = self.rows_drawn(), self.size.width
        if self._strips is None or self._strips[0] is not rows or self._strips[1] != width:
            base = self.visual_style.rich_style
            lines = [Strip([Segment(chars, base + style if style else base) for chars, style in row]
                           ).crop_extend(0, width, base) for row in rows]
            self._strips = (rows, width, lines, Strip.blank(width, base))
        _, _, lines, blank = self._strips
        return lines[y] if y < len(lines) else blank

    def render(self) -> Text:
        """The same as one Rich text (for anything that renders the widget another way)."""
        return as_text(self.rows_drawn())

    def rows_drawn(self) -> list:
        """What the widget shows as text rows of runs (in pixel mode: none; the image child draws)."""
        if self.grid is None:
            if self._image is not None:  # this runs for every line drawn: schedule the removal once
                self.call_later(self._sync_image, None)
            if self._cache is None or self._cache[0] != self.placeholder:
                self._cache = (self.placeholder, [[(self.placeholder, DIM)]])
            return self._cache[1]
        key = (self.version, self.protocol, self.size.width, self.size.height, self.start, self.zoom, self.rows)
        if self._cache is None or self._cache[0] != key:
            picture = None
            if self.arrangement == "fixed":
                self.shown = self.grid.shape[1]
                if self.mode == "pixels":
                    rows, picture = [], fixed_picture(self.grid)
                else:
                    rows = text_rows(fixed_canvas(self.grid), self.mode)
            elif self.mode == "pixels":
                f = self._flow()
                self.shown, rows = f.shown, []
                picture = flow_picture(self.drawn, f, self.zoom, self.start) if f.shown else None
            else:
                rows, f = flow_rows(self.drawn, self.size.width, self.size.height, self.mode, self.zoom, self.start)
                self.shown = f.shown
            if not self.shown and self.size.height > 0:
                rows = [[("(too small for a whole digit: enlarge the terminal, or z to zoom)", DIM)]]
            self._cache = (key, rows)
            self.call_later(self._sync_image, picture)
        return self._cache[1]
