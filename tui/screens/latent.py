"""A modal to choose the latent size."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static

from ..widgets.latent_picker import LatentPicker


class LatentScreen(ModalScreen[int]):
    BINDINGS = [Binding("escape", "dismiss_none", "cancel", id="cancel-latent")]

    def __init__(self, choices: list[tuple[int, str]], current: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choices, self.current = choices, current

    def compose(self) -> ComposeResult:
        with Vertical(id="latent-box") as box:
            box.border_title = "latent size"
            box.border_subtitle = "enter picks · esc cancels"
            yield Static("Each size has its own run: a trained one is shown at once, a new one starts training.",
                         id="latent-note")
            yield LatentPicker(self.choices, self.current)

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_key(self, event) -> None:
        """Typing a digit anywhere in the picker goes to the number field."""
        field = self.query_one(Input)
        if event.character and event.character.isdigit() and not field.has_focus:
            field.focus()
            field.insert_text_at_cursor(event.character)
            event.stop()

    @on(LatentPicker.Chosen)
    def _chosen(self, event: LatentPicker.Chosen) -> None:
        self.dismiss(event.latent)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
