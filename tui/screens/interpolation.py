"""Interpolation between the encodings of two test digits, decoded step by step."""

from __future__ import annotations

import numpy as np
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..widgets.digit_grid import DigitGrid


class InterpolationScreen(Screen):
    BINDINGS = [
        Binding("escape,i", "app.pop_screen", "back", id="close-interpolation"),
        Binding("n", "new_pair", "new pair", id="new-pair"),
        Binding("t", "toggle_mode", "linear/slerp", id="interp-mode"),
    ]

    def __init__(self, view, mode: str = "halfblock", steps: int = 10, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view, self.digit_mode, self.steps = view, mode, steps
        self.rng = np.random.default_rng([seed, 4242])
        self.interp = "linear"
        self.pair = (0, 1)

    def compose(self) -> ComposeResult:
        with Vertical(id="interp-box") as box:
            box.border_title = "interpolation"
            yield Static("", id="interp-caption")
            yield DigitGrid(id="interp-grid")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one(DigitGrid).protocol = self.digit_mode
        if len(self.view.test_x) >= 2:
            y = self.view.test_y
            # start with two different digits when the labels allow it
            b = next((j for j in range(1, len(y)) if y[j] != y[0]), 1)
            self.pair = (0, b)
        self.redraw()

    def redraw(self) -> None:
        caption = self.query_one("#interp-caption", Static)
        if len(self.view.test_x) < 2:
            caption.update("no test data to interpolate between (see the status line)")
            return
        a, b = self.pair
        images = self.view.interpolate(a, b, self.steps, self.interp)
        self.images = images
        y = self.view.test_y
        caption.update(f"test #{a} (a {y[a]}) → test #{b} (a {y[b]}), {self.steps} steps, {self.interp} in z; "
                       "n: new pair · t: linear/slerp · e: export")
        self.query_one(DigitGrid).set_grid(images[None])

    def action_new_pair(self) -> None:
        if len(self.view.test_x) >= 2:
            a, b = self.rng.choice(len(self.view.test_x), 2, replace=False)
            self.pair = (int(a), int(b))
            self.redraw()

    def action_toggle_mode(self) -> None:
        self.interp = "slerp" if self.interp == "linear" else "linear"
        self.redraw()

    def export_rows(self):
        grid = self.query_one(DigitGrid).grid
        return None if grid is None else ([grid[0]], None, f"interpolation ({self.interp})")
