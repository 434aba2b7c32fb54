"""A plotext figure as Textual strips, straight from the character matrix plotext builds.

textual-plotext draws a chart by having plotext write it out as ANSI text, which Rich then parses back
into styled text, and Textual into strips: on the 200x60 screen that round trip was about half of a
chart's cost on the UI thread (measured with cProfile: 0.28 of 0.83 s in Text.from_ansi alone). The
matrix holds each cell's character and colours; runs of equal colours become one segment each, styled
as Rich reads plotext's own ANSI for those colours, so the strips are the same cell for cell (a test
checks against textual-plotext's path).
"""

from __future__ import annotations

from functools import lru_cache

from plotext._utility import colors_to_ansi
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip


def _key(color):
    return tuple(color) if isinstance(color, list) else color  # rgb colours may come as lists


@lru_cache(maxsize=1024)
def cell_style(fullground, style, background) -> Style:
    """plotext's colours of a cell as the Rich style its ANSI stands for."""
    text = Text.from_ansi(colors_to_ansi(fullground, style, background) + "x")
    return text.spans[0].style if text.spans else Style.null()


def figure_strips(figure, base: Style, width: int) -> list[Strip]:
    """Build the figure (sized and themed already) and return its rows, top first, as strips."""
    figure._set_sizes()
    figure._build_matrix()
    m = figure.monitor.matrix
    lines = []
    for row in reversed(range(m.rows)):  # plotext's row 0 is the bottom one
        markers = m.marker[row]
        keys = [(_key(f), _key(s), _key(b)) for f, s, b in zip(m.fullground[row], m.style[row], m.background[row])]
        segments, start = [], 0
        for col in range(1, m.cols + 1):
            if col == m.cols or keys[col] != keys[start]:
                segments.append(Segment("".join(markers[start:col]), base + cell_style(*keys[start])))
                start = col
        lines.append(Strip(segments, m.cols).crop_extend(0, width, base))
    return lines
