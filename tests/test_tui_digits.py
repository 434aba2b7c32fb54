"""The terminal digit renderer (cuvae_tui.digits): sizes, ramps, grey levels, fitting."""

import math

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


@pytest.mark.parametrize("rows,cols,width,height", [(2, 8, 36, 9), (1, 16, 36, 9), (2, 8, 120, 40), (1, 16, 200, 60)])
def test_fit_stays_inside_the_box(rows, cols, width, height):
    f = digits.fit(rows, cols, width, height)
    assert f.per_band * (f.px + 1) - 1 <= width
    used = f.bands * rows * math.ceil(f.px / 2) + (f.bands - 1)
    assert used <= height
    if f.complete:
        assert f.per_band * f.bands >= cols


def test_fit_prefers_the_largest_size_that_shows_everything():
    assert digits.fit(1, 2, 57, 14) == digits.Fit(28, 2, 1, True)
    f = digits.fit(1, 2, 56, 14)  # one column short of two 28-px digits side by side
    assert f.px < 28 and f.complete


def test_fit_leaves_out_what_cannot_fit():
    f = digits.fit(2, 8, 10, 4)  # not even one band of two 7-px rows (8 lines) fits
    assert not f.complete and f.bands == 0


@pytest.mark.parametrize("mode", digits.MODES)
def test_render_grid_dimensions(mode):
    grid = np.random.default_rng(1).random((2, 8, 28, 28)).astype(np.float32)
    text, f = digits.render_grid(grid, 40, 20, mode)
    lines = text.plain.split("\n")
    assert len(lines) <= 20 and max(len(s) for s in lines) <= 40
    assert len(lines) == f.bands * 2 * math.ceil(f.px / 2) + f.bands - 1


def test_when_not_all_fit_a_few_are_shown_large():
    f = digits.fit(2, 8, 58, 16)
    assert not f.complete and f.per_band * f.bands >= digits.MIN_SHOWN
    assert f.px > digits.MIN_PX
