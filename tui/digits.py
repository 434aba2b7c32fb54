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


def ascii_lines(image: np.ndarray, px: int = 28) -> list[str]:
    """One digit as ``ceil(px/2)`` strings of ``px`` ramp characters."""
    top, bottom = _pairs(resize(image, px))
    level = np.clip(((top + bottom) / 2 * len(RAMP)).astype(int), 0, len(RAMP) - 1)
    return ["".join(RAMP[v] for v in row) for row in level]


@lru_cache(maxsize=4096)
def _half_style(top: int, bottom: int) -> Style:
    return Style.parse(f"rgb({top},{top},{top}) on rgb({bottom},{bottom},{bottom})")


def halfblock_lines(image: np.ndarray, px: int = 28) -> list[Text]:
    """One digit as ``ceil(px/2)`` Rich texts of ``px`` grey ``▀`` cells."""
    top, bottom = (np.clip(a * 255 + 0.5, 0, 255).astype(int) for a in _pairs(resize(image, px)))
    lines = []
    for t_row, b_row in zip(top, bottom):
        line = Text()
        for t, b in zip(t_row.tolist(), b_row.tolist()):
            line.append(HALF, _half_style(t, b))
        lines.append(line)
    return lines


def digit_lines(image: np.ndarray, px: int, mode: str) -> list[Text]:
    if mode == "ascii":
        return [Text(s) for s in ascii_lines(image, px)]
    if mode in ("halfblock", "pixels"):  # pixels falls back to half-blocks where drawn as text
        return halfblock_lines(image, px)
    raise ValueError(f"digit mode must be one of {MODES}, got {mode!r}")


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


def render_flow(grid: np.ndarray, width: int, height: int, mode: str = "halfblock", zoom: int = 1,
                start: int = 0) -> tuple[Text, Flow]:
    """A (rows, cols, H, W) grid drawn as cols groups (a group = the rows of one column, side by side).

    Digits keep their true resolution (28x28 -> 28 columns x 14 rows, times ``zoom``); groups that
    do not fit are left out (the caller says how many are shown), never shrunk.
    """
    grid = np.asarray(grid)
    rows, cols, h = grid.shape[0], grid.shape[1], grid.shape[2]
    f = flow(rows, cols - start, width, height, h * zoom)
    out = Text(no_wrap=True, overflow="crop")
    k_rows = math.ceil(f.px / 2)
    for line in range(f.lines):
        if line:
            out.append("\n\n")
        cs = range(start + line * f.per_line, min(start + f.shown, start + (line + 1) * f.per_line))
        cells = [[digit_lines(scaled(grid[r, c], zoom), f.px, mode) for r in range(rows)] for c in cs]
        for k in range(k_rows):
            if k:
                out.append("\n")
            for j, group in enumerate(cells):
                if j:
                    out.append(" " * group_gap(rows))
                for i, lines in enumerate(group):
                    if i:
                        out.append(" " * GAP)
                    out.append_text(lines[k])
    return out, f


def render_fixed(grid: np.ndarray, mode: str = "halfblock") -> Text:
    """A (rows, cols, H, W) grid as it is (a decoded manifold): true resolution, no gaps, nothing left out."""
    grid = np.asarray(grid)
    rows, cols, h = grid.shape[:3]
    out = Text(no_wrap=True, overflow="crop")
    for r in range(rows):
        cells = [digit_lines(grid[r, c], h, mode) for c in range(cols)]
        for k in range(math.ceil(h / 2)):
            if r or k:
                out.append("\n")
            for lines in cells:
                out.append_text(lines[k])
    return out


def flow_picture(grid: np.ndarray, f: Flow, zoom: int = 1, start: int = 0) -> Image.Image:
    """The groups a Flow shows as one greyscale picture laid out like the text (for real-pixel terminals).

    One text cell is one pixel wide and two tall, so gaps are 1 (2) pixels per column (row) of text.
    """
    grid = np.asarray(grid)
    rows, h = grid.shape[0], grid.shape[2] * zoom
    gw = group_width(rows, h)
    gg = group_gap(rows)
    W = f.per_line * gw + (f.per_line - 1) * gg
    rows_px = 2 * math.ceil(h / 2)
    H = f.lines * rows_px + (f.lines - 1) * 2
    canvas = np.zeros((max(H, 1), max(W, 1)), np.float32)
    for i in range(f.shown):
        line, j = divmod(i, f.per_line)
        x0, y0 = j * (gw + gg), line * (rows_px + 2)
        for r in range(rows):
            img = scaled(grid[r, start + i], zoom)
            xs = x0 + r * (h + GAP)
            canvas[y0:y0 + h, xs:xs + h] = np.clip(img, 0, 1)
    return Image.fromarray((canvas * 255 + 0.5).astype(np.uint8), mode="L")


def fixed_picture(grid: np.ndarray) -> Image.Image:
    grid = np.clip(np.asarray(grid, np.float32), 0, 1)
    rows, cols, h, w = grid.shape
    canvas = grid.transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    return Image.fromarray((canvas * 255 + 0.5).astype(np.uint8), mode="L")
