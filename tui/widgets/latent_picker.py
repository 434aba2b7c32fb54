"""Pick a latent size: the presets (with how far each is trained) or a typed number."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option


class LatentPicker(Vertical):
    DEFAULT_CSS = "LatentPicker { height: auto; } LatentPicker OptionList { height: auto; max-height: 8; }"

    class Chosen(Message):
        def __init__(self, latent: int) -> None:
            super().__init__()
            self.latent = latent

    def __init__(self, choices: list[tuple[int, str]], current: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.choices, self.current = choices, current

    def compose(self) -> ComposeResult:
        options = [Option(f"z = {z:<3} {note}", id=str(z)) for z, note in self.choices]
        yield OptionList(*options, id="latent-options")
        yield Input(placeholder="or type a size (1-512) and press Enter", id="latent-input", type="integer",
                    select_on_focus=False)

    def on_mount(self) -> None:
        opts = self.query_one(OptionList)
        ids = [str(z) for z, _ in self.choices]
        if str(self.current) in ids:
            opts.highlighted = ids.index(str(self.current))

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.post_message(self.Chosen(int(event.option.id)))

    @on(Input.Submitted)
    def _typed(self, event: Input.Submitted) -> None:
        try:
            value = int(event.value)
        except ValueError:
            value = 0
        if not 1 <= value <= 512:
            self.app.notify(f"latent size must be a whole number from 1 to 512, got {event.value!r}", severity="error")
            return
        self.post_message(self.Chosen(value))
