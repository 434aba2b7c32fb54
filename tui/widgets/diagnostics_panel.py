"""The latent space at a glance: KL per dimension as sorted bars (active units marked), the active-unit
count over epochs, the ELBO-surgery split and the importance-weighted NLL, with the data protocol."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..diagnostics import IWAE_K, SUBSET, Diagnosis

BLOCKS = " ▏▎▍▌▋▊▉█"
SPARK = "▁▂▃▄▅▆▇█"


def bar(value: float, top: float, width: int) -> str:
    """A horizontal bar of value/top of width cells, in eighths of a cell."""
    eighths = int(round(max(0.0, min(1.0, value / top if top > 0 else 0.0)) * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[part] if part else "")).ljust(width)


def spark(counts: list[int], top: int) -> str:
    return "".join(SPARK[min(len(SPARK) - 1, int(c / max(top, 1) * (len(SPARK) - 1) + 0.5))] for c in counts)


def diagnosis_text(d: Diagnosis | None, history: list[tuple[int, int]], latent: int, width: int = 60,
                   max_bars: int = 20) -> Text:
    """The panel as Rich text (also what the tests read)."""
    t = Text(no_wrap=True, overflow="ellipsis")
    if d is None:
        t.append("diagnostics appear after the first epoch (computed in the background)", style="dim")
        return t
    order = sorted(range(len(d.kl_per_dim)), key=lambda u: -d.kl_per_dim[u])
    top = float(max(d.kl_per_dim.max(), 1e-9))
    w = max(8, width - 26)
    t.append(f"KL per dimension (nats), sorted; ● active (Cov_x E[z] > 0.01), epoch {d.epoch}\n", style="bold")
    for u in order[:max_bars]:
        mark, style = ("●", "green") if d.active[u] else ("○", "dim")
        t.append(f"{mark} z{u:<3}", style=style)
        t.append(bar(float(d.kl_per_dim[u]), top, w), style=style)
        t.append(f" {d.kl_per_dim[u]:6.2f}  var {d.variances[u]:.3f}\n", style="" if d.active[u] else "dim")
    if len(order) > max_bars:
        t.append(f"  ... {len(order) - max_bars} more dimensions (all shown on the d screen)\n", style="dim")
    t.append(f"active units: {d.active_count}/{latent}")
    if history:
        t.append("   by epoch ")
        t.append(spark([c for _, c in history[-(width - 30):]], latent), style="cyan")
    t.append("\n")
    t.append(f"ELBO surgery: MI {d.mutual_info:.2f} (at most log N = {d.mi_bound:.2f}) + marginal KL "
             f"{d.marginal_kl:.2f} ≈ KL {d.avg_kl:.2f}\n")
    nll = "not yet (runs every few epochs)" if d.iwae_nll is None else f"{d.iwae_nll:.2f} nats (epoch {d.iwae_epoch})"
    t.append(f"IWAE NLL (k={IWAE_K}, first {SUBSET:,} test images): {nll}  ")
    t.append(f"[{d.protocol} data]", style="bold yellow")
    return t


class DiagnosticsPanel(Static):
    DEFAULT_CSS = "DiagnosticsPanel { height: auto; }"

    def __init__(self, max_bars: int = 8, **kwargs) -> None:
        super().__init__("", markup=False, **kwargs)
        self.max_bars = max_bars
        self.diagnosis: Diagnosis | None = None
        self.history: list[tuple[int, int]] = []  # (epoch, active units)
        self.latent = 0
        self.last_nll: float | None = None
        self._lines = -1  # lines of the text shown: its height

    def show(self, d: Diagnosis | None, history: list[tuple[int, int]], latent: int) -> None:
        self.diagnosis, self.history, self.latent = d, history, latent
        self.refresh_text()

    def refresh_text(self) -> None:
        """A new text; the screen is laid out again only when its height changes (a layout of the 200x60
        screen costs about 25 ms of the UI thread, and each epoch's figures keep the height)."""
        text = diagnosis_text(self.diagnosis, self.history, self.latent, max(self.size.width, 40), self.max_bars)
        lines = len(str(text).splitlines())
        self.update(text, layout=lines != self._lines)
        self._lines = lines

    def on_resize(self) -> None:
        self.refresh_text()
