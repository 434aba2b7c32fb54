"""The key bindings and what quitting keeps."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

QUIT_NOTE = "quitting keeps the last complete epoch; start again to resume"
KEYS = [
    ("space", "pause / resume training"),
    ("s", "new samples from the prior (seed +1 each press)"),
    ("+ / -", "sampling temperature up / down (0.1 steps)"),
    ("z", "zoom: the current digits large (n / p page through them)"),
    ("a", "cycle the drawing: real pixels (kitty/sixel, when the terminal has them), grey half-blocks, ASCII"),
    ("g", "loss plots: fitted / log / recent-half view"),
    ("d", "latent diagnostics: KL per dimension, active units, ELBO surgery, IWAE NLL"),
    ("l", "choose the latent size (presets, sizes already trained, or a typed number)"),
    ("c", "compare every latent size trained in --runs; queue untrained sizes (t)"),
    ("i", "interpolation between two test digits (n: new pair, t: linear/slerp)"),
    ("m", "latent map: decoded grid and the test set in z"),
    ("e", "export the current view to a PNG in the run directory (with the temperature)"),
    ("?", "this help"),
    ("q", "quit (" + QUIT_NOTE + ")"),
]

NOTES = (
    "Each latent size trains in its own run directory under --runs; switching back resumes it. "
    "The checkpoint is written after every complete epoch: quitting keeps the last complete "
    "epoch, and starting cuvae-tui again with the same options resumes from it."
)


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "app.pop_screen", "close", id="close-help")]

    def __init__(self, bindings: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.keys = bindings

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, text in self.keys:
            table.add_row(key, text)
        with VerticalScroll(id="help-box") as box:
            box.border_title = "cuvae-tui keys"
            box.border_subtitle = "esc closes"
            yield Static(table)
            yield Static(NOTES, id="help-notes")
