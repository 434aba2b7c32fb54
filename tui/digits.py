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
MODES = ("ascii", "hifi")
MIN_PX, MAX_PX = 7, 28
MIN_SHOWN = 4  # when not all digits fit, show at least this many, as large as possible


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


def ascii_lines(image: np.ndarray, px: int = MAX_PX) -> list[str]:
    """One digit as ``ceil(px/2)`` strings of ``px`` ramp characters."""
    top, bottom = _pairs(resize(image, px))
    level = np.clip(((top + bottom) / 2 * len(RAMP)).astype(int), 0, len(RAMP) - 1)
    return ["".join(RAMP[v] for v in row) for row in level]


@lru_cache(maxsize=4096)
def _half_style(top: int, bottom: int) -> Style:
    return Style.parse(f"rgb({top},{top},{top}) on rgb({bottom},{bottom},{bottom})")


def halfblock_lines(image: np.ndarray, px: int = MAX_PX) -> list[Text]:
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
    if mode == "hifi":
        return halfblock_lines(image, px)
    raise ValueError(f"digit mode must be one of {MODES}, got {mode!r}")


@dataclass(frozen=True)
class Fit:
    px: int  # digit size in pixels (= columns)
    per_band: int  # logical columns drawn side by side
    bands: int  # how many bands (wrapped groups of all rows) are drawn
    complete: bool  # False when some digits did not fit and are left out


def fit(rows: int, cols: int, width: int, height: int, gap: int = 1) -> Fit:
    """The largest digit size at which a rows x cols grid fits width x height cells.

    Columns that do not fit side by side wrap into further *bands* (each band repeats
    all rows, so an original stays above its reconstruction). When nothing fits even at
    the smallest size, the smallest size is used and what does not fit is left out.
    """
    if rows < 1 or cols < 1:
        return Fit(MIN_PX, 0, 0, True)
    for px in range(MAX_PX, MIN_PX - 1, -1):
        per_band = min(cols, (width + gap) // (px + gap))
        if per_band < 1:
            continue
        bands = math.ceil(cols / per_band)
        band_h = rows * math.ceil(px / 2)
        if bands * band_h + (bands - 1) * gap <= height:
            return Fit(px, per_band, bands, True)
    # Nothing shows everything: the largest size that still shows a few digits (legible beats many).
    want = min(cols, MIN_SHOWN)
    for px in range(MAX_PX, MIN_PX - 1, -1):
        per_band = min(cols, (width + gap) // (px + gap))
        band_h = rows * math.ceil(px / 2)
        bands = min(math.ceil(cols / max(per_band, 1)), (height + gap) // (band_h + gap))
        if per_band >= 1 and bands >= 1 and min(cols, per_band * bands) >= want:
            return Fit(px, per_band, bands, False)
    return Fit(MIN_PX, 0, 0, False)


def render_grid(grid: np.ndarray, width: int, height: int, mode: str = "hifi", gap: int = 1) -> tuple[Text, Fit]:
    """A (rows, cols, H, W) grid of images as one Rich Text fitting width x height cells."""
    grid = np.asarray(grid)
    rows, cols = grid.shape[:2]
    f = fit(rows, cols, width, height, gap)
    out = Text(no_wrap=True, overflow="crop")
    first = True
    spacer = " " * gap
    for band in range(f.bands):
        cs = range(band * f.per_band, min(cols, (band + 1) * f.per_band))
        if not first:
            out.append("\n" * gap)
        for r in range(rows):
            cells = [digit_lines(grid[r, c], f.px, mode) for c in cs]
            for k in range(math.ceil(f.px / 2)):
                if not first:
                    out.append("\n")
                first = False
                for j, lines in enumerate(cells):
                    if j:
                        out.append(spacer)
                    out.append_text(lines[k])
    return out, f
