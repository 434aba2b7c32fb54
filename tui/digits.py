"""Digits as terminal text: an ASCII character ramp, or Unicode half-blocks in grey.

No Textual here, only NumPy, Pillow and Rich, so it is unit-tested on its own.
A digit drawn at ``px`` pixels square takes ``px`` columns and ``ceil(px / 2)`` rows
in both modes: a terminal cell is about twice as tall as it is wide, so one cell
shows two pixels stacked (ASCII: their mean as a character; half-block: the top
pixel as the foreground of ``▀`` and the bottom one as its background).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from rich.style import Style
from rich.text import Text

RAMP = " .:-=+*#%@"  # dark (0) to bright (1)
HALF = "\u2580"  # ▀ upper half block
MODES = ("pixels", "halfblock", "ascii")


def resize(image: np.ndarray, px: int) -> np.ndarray:
    """(H, W) floats in [0, 1] -> (px, px), box-filtered (each output pixel averages its area)."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.shape == (px, px):
        return image
    return np.asarray(Image.fromarray(image, mode="F").resize((px, px), Image.BOX), np.float32)


def _pairs(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top and bottom pixel rows of each text row (an odd last row gets a black bottom)."""
    if image.shape[0] % 2:
        image = np.concatenate([image, np.zeros((1, image.shape[1]), image.dtype)])
    return image[0::2], image[1::2]


# ---- a picture as text rows of runs --------------------------------------------------------------
# A text row is a list of runs, (characters, Style or None for the widget's own): equal neighbouring
# cells share one run, so a digit's black margins are one run and not a style per cell. Pixels that
# are NaN are gaps between digits, drawn as spaces in the widget's own colours.
Run = tuple[str, "Style | None"]


def _levels(a: np.ndarray) -> np.ndarray:
    """Pixels in [0, 1] as grey levels 0..255 (-1 for a gap)."""
    return np.where(np.isnan(a), -1, np.clip(np.nan_to_num(a) * 255 + 0.5, 0, 255).astype(np.int32))


@lru_cache(maxsize=4096)
def _half_style(top: int, bottom: int) -> Style:
    return Style.parse(f"rgb({top},{top},{top}) on rgb({bottom},{bottom},{bottom})")


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values in a 1-D array."""
    cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(keys)]
    return list(zip(bounds[:-1], bounds[1:]))


def halfblock_rows(canvas: np.ndarray) -> list[list[Run]]:
    """Each text row: the top pixel as the foreground of ``▀``, the bottom one as its background."""
    top, bottom = (_levels(a) for a in _pairs(canvas))
    rows = []
    for t, b in zip(top, bottom):
        keys = t * 256 + b  # a gap is negative whatever the other half is
        row = []
        for s, e in _runs(keys):
            if keys[s] < 0:
                row.append((" " * (e - s), None))
            else:
                row.append((HALF * (e - s), _half_style(int(t[s]), int(b[s]))))
        rows.append(row)
    return rows


def ascii_rows(canvas: np.ndarray) -> list[list[Run]]:
    """Each text row: the mean of a cell's two pixels as a ramp character (gaps as spaces)."""
    top, bottom = _pairs(canvas)
    mean = (top + bottom) / 2
    level = np.clip(np.nan_to_num(mean * len(RAMP)).astype(int), 0, len(RAMP) - 1)
    chars = np.asarray(list(RAMP))[level]
    chars[np.isnan(mean)] = " "
    return [[("".join(row), None)] for row in chars]


def text_rows(canvas: np.ndarray, mode: str) -> list[list[Run]]:
    if mode == "ascii":
        return ascii_rows(canvas)
    if mode in ("halfblock", "pixels"):  # pixels falls back to half-blocks where drawn as text
        return halfblock_rows(canvas)
    raise ValueError(f"digit mode must be one of {MODES}, got {mode!r}")


def as_text(rows: list[list[Run]]) -> Text:
    """Text rows as one Rich text (rows joined by newlines)."""
    out = Text(no_wrap=True, overflow="crop")
    for i, row in enumerate(rows):
        if i:
            out.append("\n")
        for chars, style in row:
            out.append(chars, style)
    return out


# ---- one digit -----------------------------------------------------------------------------------
def ascii_lines(image: np.ndarray, px: int = 28) -> list[str]:
    """One digit as ``ceil(px/2)`` strings of ``px`` ramp characters."""
    return [row[0][0] for row in ascii_rows(resize(image, px))]


def halfblock_lines(image: np.ndarray, px: int = 28) -> list[Text]:
    """One digit as ``ceil(px/2)`` Rich texts of ``px`` grey ``▀`` cells."""
    return [as_text([row]) for row in halfblock_rows(resize(image, px))]


def digit_lines(image: np.ndarray, px: int, mode: str) -> list[Text]:
    return [as_text([row]) for row in text_rows(resize(image, px), mode)]


def scaled(image: np.ndarray, zoom: int) -> np.ndarray:
    """Each pixel as a zoom x zoom block: large digits with no smoothing (zoom 1 is the image itself)."""
    return image if zoom == 1 else np.kron(np.asarray(image, np.float32), np.ones((zoom, zoom), np.float32))


# ---- flow layout: groups of digits side by side, wrapped into lines, at true resolution -----------
@dataclass(frozen=True)
class Flow:
    px: int  # digit size in pixels = columns; ceil(px / 2) rows
    per_line: int  # groups side by side
    lines: int  # lines of groups
    shown: int  # groups drawn (<= the groups there are)
    total: int


GAP = 1  # columns between the digits of a group


def group_gap(size: int) -> int:
    """Columns between groups: wider than inside a group, so pairs read as pairs."""
    return 1 if size == 1 else 3


def group_width(size: int, px: int) -> int:
    return size * px + (size - 1) * GAP


def flow(size: int, total: int, width: int, height: int, px: int) -> Flow:
    """How many groups of ``size`` digits (each px wide) fit width x height cells, whole and unscaled."""
    gw, gg = group_width(size, px), group_gap(size)
    per_line = max(0, (width + gg) // (gw + gg))
    rows = math.ceil(px / 2)
    lines = max(0, (height + 1) // (rows + 1))  # one blank row between lines
    if per_line and lines:
        lines = min(lines, math.ceil(total / per_line))
    shown = min(total, per_line * lines)
    return Flow(px, per_line, lines, shown, total)


def flow_canvas(grid: np.ndarray, f: Flow, zoom: int = 1, start: int = 0) -> np.ndarray:
    """The groups a Flow shows, laid out as they are drawn: one pixel a column, two a text row, and NaN
    in the gaps (between the digits of a group, between groups, and a text row between lines)."""
    grid = np.asarray(grid, np.float32)
    rows, h = grid.shape[0], grid.shape[2] * zoom
    gw, gg = group_width(rows, h), group_gap(rows)
    rows_px = 2 * math.ceil(h / 2)  # an odd digit's last text row has a black bottom
    W = f.per_line * gw + (f.per_line - 1) * gg
    H = f.lines * rows_px + (f.lines - 1) * 2
    canvas = np.full((max(H, 0), max(W, 0)), np.nan, np.float32)
    for i in range(f.shown):
        line, j = divmod(i, f.per_line)
        x0, y0 = j * (gw + gg), line * (rows_px + 2)
        for r in range(rows):
            xs = x0 + r * (h + GAP)
            canvas[y0:y0 + rows_px, xs:xs + h] = 0.0
            canvas[y0:y0 + h, xs:xs + h] = np.clip(scaled(grid[r, start + i], zoom), 0, 1)
    return canvas


def fixed_canvas(grid: np.ndarray) -> np.ndarray:
    """A (rows, cols, H, W) grid as one picture, no gaps (an odd H is padded black per grid row)."""
    grid = np.clip(np.asarray(grid, np.float32), 0, 1)
    rows, cols, h, w = grid.shape
    if h % 2:
        grid = np.concatenate([grid, np.zeros((rows, cols, 1, w), np.float32)], axis=2)
        h += 1
    return grid.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def flow_rows(grid: np.ndarray, width: int, height: int, mode: str = "halfblock", zoom: int = 1,
              start: int = 0) -> tuple[list[list[Run]], Flow]:
    """A (rows, cols, H, W) grid drawn as cols groups (a group = the rows of one column, side by side).

    Digits keep their true resolution (28x28 -> 28 columns x 14 rows, times ``zoom``); groups that
    do not fit are left out (the caller says how many are shown), never shrunk.
    """
    grid = np.asarray(grid)
    f = flow(grid.shape[0], grid.shape[1] - start, width, height, grid.shape[2] * zoom)
    return (text_rows(flow_canvas(grid, f, zoom, start), mode) if f.shown else []), f


def render_flow(grid: np.ndarray, width: int, height: int, mode: str = "halfblock", zoom: int = 1,
                start: int = 0) -> tuple[Text, Flow]:
    rows, f = flow_rows(grid, width, height, mode, zoom, start)
    return as_text(rows), f


def _grey(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray((np.nan_to_num(canvas) * 255 + 0.5).astype(np.uint8), mode="L")


def flow_picture(grid: np.ndarray, f: Flow, zoom: int = 1, start: int = 0) -> Image.Image:
    """The groups a Flow shows as one greyscale picture laid out like the text (for real-pixel terminals),
    gaps black."""
    canvas = flow_canvas(grid, f, zoom, start)
    return _grey(canvas if canvas.size else np.zeros((1, 1), np.float32))


def fixed_picture(grid: np.ndarray) -> Image.Image:
    grid = np.clip(np.asarray(grid, np.float32), 0, 1)
    rows, cols, h, w = grid.shape
    return _grey(grid.transpose(0, 2, 1, 3).reshape(rows * h, cols * w))
