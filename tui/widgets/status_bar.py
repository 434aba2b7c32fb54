"""The always-visible status line (latent size, device, epoch, speed, elapsed time, data) and the
message line at the bottom."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def format_elapsed(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class StatusBar(Static):
    DEFAULT_CSS = "StatusBar { height: 2; }"  # fixed: a changing height would re-lay-out the screen

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.fields = dict(latent="?", device="starting...", epoch="-", rate="-", elapsed="0:00:00", data="loading data...",
                           state="starting")

    def set(self, **fields) -> None:
        changed = {k: v for k, v in fields.items() if self.fields.get(k) != v}
        if changed:
            self.fields.update(changed)
            self.update(self.compose_text(), layout=False)  # a fixed size: no re-layout of the screen

    def compose_text(self) -> Text:
        f = self.fields
        t = Text()
        parts = [("z=" + str(f["latent"]), "bold"), (f["device"], ""), ("epoch " + f["epoch"], ""),
                 (f["rate"], ""), (f["elapsed"], ""), (f["data"], ""), (f["state"], "bold")]
        for i, (text, style) in enumerate(parts):
            if i:
                t.append(" │ ", "dim")
            t.append(text, style)
        return t


class MessageLine(Static):
    """One line at the bottom; the text is shown as it is (no markup: `[cuda12]` stays)."""

    def say(self, text: str, level: str = "information") -> None:
        style = {"error": "bold red", "warning": "yellow"}.get(level, "")
        prefix = {"error": "error: ", "warning": "warning: "}.get(level, "")
        line = Text(prefix, style=style)
        line.append(text)
        self.update(line, layout=False)
