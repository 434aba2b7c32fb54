"""The last epoch's figures under the charts, in one line: long where there is room, short at 80 columns."""

from __future__ import annotations

from textual.widgets import Static


def metrics_text(m: dict, latent: int, width: int) -> str:
    """The longest of three forms that fits ``width`` (the shortest, about 45 characters, otherwise)."""
    binarized = m.get("protocol", "continuous") != "continuous"
    forms = [
        f"epoch {m['epoch']}: train {m['train_loss']:.2f} · test {m['test_loss']:.2f} = recon {m['test_recon']:.2f}"
        f" + KL {m['test_kl']:.2f} · active {m['active_units']}/{latent}" + (f" · {m['protocol']}" if binarized else ""),
        f"ep {m['epoch']} train {m['train_loss']:.1f} test {m['test_loss']:.1f} = {m['test_recon']:.1f}+{m['test_kl']:.1f}"
        f" KL · active {m['active_units']}/{latent}" + (" · binarized" if binarized else ""),
        f"ep {m['epoch']} test {m['test_loss']:.1f} ({m['test_recon']:.1f}+{m['test_kl']:.1f} KL) act "
        f"{m['active_units']}/{latent}" + (" bin" if binarized else ""),
    ]
    return next((f for f in forms if len(f) <= width), forms[-1])


class MetricsLine(Static):
    DEFAULT_CSS = "MetricsLine { height: 1; color: $text-muted; }"

    def __init__(self, **kwargs) -> None:
        super().__init__("waiting for the first epoch...", **kwargs)
        self.metrics: tuple[dict, int] | None = None

    def show(self, m: dict | None, latent: int = 0) -> None:
        self.metrics = None if m is None else (m, latent)
        self._draw()

    def _draw(self) -> None:
        text = "waiting for the first epoch..." if self.metrics is None else metrics_text(*self.metrics, self.size.width or 200)
        self.update(text, layout=False)  # one line, a fixed size

    def on_resize(self) -> None:
        if self.metrics is not None:
            self._draw()
