"""The latent diagnostics on a screen of their own: every dimension's KL bar, the active-unit history,
ELBO surgery and the importance-weighted NLL (updated while training runs)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer

from ..widgets.diagnostics_panel import DiagnosticsPanel


class DiagnosticsScreen(Screen):
    BINDINGS = [Binding("escape,d", "app.pop_screen", "back", id="close-diagnostics")]

    def __init__(self, diagnosis, history, latent: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.initial = (diagnosis, history, latent)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="diag-screen-box") as box:
            box.border_title = "latent diagnostics"
            box.border_subtitle = "computed in the background while shown · esc: back"
            yield DiagnosticsPanel(max_bars=512, id="diag-full")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.show(*self.initial)

    def show(self, diagnosis, history, latent: int) -> None:
        self.query_one(DiagnosticsPanel).show(diagnosis, history, latent)
