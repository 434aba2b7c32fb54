"""The terminal digit renderer (cuvae_tui.digits): sizes, ramps, grey levels, fitting."""


import numpy as np
import pytest

pytest.importorskip("textual")  # the TUI extra

from cuvae_tui import digits  # noqa: E402


def test_ascii_ramp_dark_to_bright():
    img = np.zeros((28, 28), np.float32)
    img[:, 14:] = 1.0
    lines = digits.ascii_lines(img, 28)
    assert len(lines) == 14 and all(len(s) == 28 for s in lines)
    assert set(lines[0][:14]) == {digits.RAMP[0]} and set(lines[0][14:]) == {digits.RAMP[-1]}


def test_ascii_averages_the_two_pixels_of_a_cell():
    img = np.zeros((2, 2), np.float32)
    img[0] = 1.0  # top bright, bottom dark: a middle character
    (line,) = digits.ascii_lines(img, 2)
    assert line[0] == digits.RAMP[len(digits.RAMP) // 2]


def test_halfblock_top_is_foreground_bottom_is_background():
    img = np.zeros((2, 2), np.float32)
    img[0] = 1.0
    (line,) = digits.halfblock_lines(img, 2)
    assert line.plain == digits.HALF * 2
    style = line.spans[0].style
    assert style.color.triplet == (255, 255, 255) and style.bgcolor.triplet == (0, 0, 0)


def test_odd_size_pads_the_last_row():
    lines = digits.ascii_lines(np.ones((7, 7), np.float32), 7)
    assert len(lines) == 4 and all(len(s) == 7 for s in lines)


def test_resize_keeps_mean_brightness():
    img = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    small = digits.resize(img, 14)
    assert small.shape == (14, 14)
    assert abs(small.mean() - img.mean()) < 1e-3


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="ascii"):
        digits.digit_lines(np.zeros((28, 28)), 28, "braille")


def test_a_digit_keeps_its_true_resolution():
    """28x28 pixels are 28 columns by 14 rows: nothing is averaged away."""
    img = np.random.default_rng(2).random((28, 28)).astype(np.float32)
    lines = digits.halfblock_lines(img, 28)
    assert len(lines) == 14 and all(len(t.plain) == 28 for t in lines)
    top = cell_style(lines[3], 5).color.triplet[0]
    assert top == int(np.clip(img[6, 5] * 255 + 0.5, 0, 255))


def cell_style(text, i):
    """The style of the i-th cell of a text line (equal neighbouring cells share one span)."""
    (span,) = [s for s in text.spans if s.start <= i < s.end]
    return span.style


def test_equal_cells_share_a_run_and_gaps_are_plain_spaces():
    """A digit's black margin is one run, not a style per cell; the gap between two digits is spaces."""
    img = np.zeros((2, 6), np.float32)
    img[:, 2:4] = 1.0
    (row,) = digits.halfblock_rows(img)
    assert [(len(chars), style.color.triplet[0]) for chars, style in row] == [(2, 0), (2, 255), (2, 0)]
    canvas = np.full((2, 5), np.nan, np.float32)
    canvas[:, :2] = canvas[:, 3:] = 0.5
    (row,) = digits.halfblock_rows(canvas)
    assert [chars for chars, _ in row] == [digits.HALF * 2, " ", digits.HALF * 2] and row[1][1] is None
    (row,) = digits.ascii_rows(canvas)
    assert row[0][0][2] == " " and row[0][0][0] != " "


def test_the_text_and_the_picture_share_one_layout():
    """Every cell the text draws as a digit is a digit pixel of the picture, every gap a gap."""
    grid = np.random.default_rng(4).random((2, 3, 7, 7)).astype(np.float32)
    f = digits.flow(2, 3, 40, 20, 7)
    canvas = digits.flow_canvas(grid, f)
    text, _ = digits.render_flow(grid, 40, 20)
    lines = text.plain.split("\n")
    assert len(lines) == canvas.shape[0] // 2 and {len(s) for s in lines} == {canvas.shape[1]}
    gaps = np.isnan(canvas[0::2])
    assert all((ch == " ") == gap for line, row in zip(lines, gaps) for ch, gap in zip(line, row))


@pytest.mark.parametrize("width,height,size,per_line,lines", [
    (57, 20, 2, 1, 1),  # 80x24's digit panel: one test digit beside its reconstruction
    (56, 20, 2, 0, 1),  # one column short: nothing, rather than a shrunken blob
    (118, 40, 2, 2, 2),  # 200x60: two pairs a line, two lines
    (118, 14, 1, 4, 1),  # four samples
])
def test_flow_fits_whole_digits_only(width, height, size, per_line, lines):
    f = digits.flow(size, 8, width, height, 28)
    assert (f.per_line, f.lines if per_line else 1) == (per_line, lines)
    assert f.shown == min(8, per_line * lines)


@pytest.mark.parametrize("mode", ["halfblock", "ascii"])
def test_render_flow_dimensions(mode):
    grid = np.random.default_rng(1).random((2, 8, 28, 28)).astype(np.float32)
    text, f = digits.render_flow(grid, 120, 40, mode)
    lines = text.plain.split("\n")
    assert f.shown == 4 and len(lines) == 2 * 14 + 1  # two lines of two pairs, one blank row between
    assert max(len(s) for s in lines) == 2 * 57 + 3


def test_zoom_scales_each_pixel_to_a_block():
    img = np.eye(2, dtype=np.float32)
    big = digits.scaled(img, 3)
    assert big.shape == (6, 6) and big[:3, :3].min() == 1.0 and big[:3, 3:].max() == 0.0


def test_picture_matches_the_text_layout():
    grid = np.random.default_rng(3).random((2, 8, 28, 28)).astype(np.float32)
    f = digits.flow(2, 8, 120, 40, 28)
    pic = digits.flow_picture(grid, f)
    assert pic.size == (2 * 57 + 3, 2 * 28 + 2)  # one pixel per column, two per text row
    assert abs(np.asarray(pic)[0, 0] - grid[0, 0, 0, 0] * 255) <= 1
