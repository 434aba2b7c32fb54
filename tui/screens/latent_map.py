"""The latent map: decoded grid over two latent dimensions, beside the test set's encodings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from ..widgets.digit_grid import DigitGrid

COLORS = ["red", "green", "yellow", "blue", "magenta", "cyan", "white", "orange", "gray", "bright-green"]


class LatentMapScreen(Screen):
    BINDINGS = [Binding("escape,m", "app.pop_screen", "back", id="close-map")]

    def __init__(self, view, mode: str = "hifi", **kwargs) -> None:
        super().__init__(**kwargs)
        self.view, self.digit_mode = view, mode

    def compose(self) -> ComposeResult:
        with Horizontal(id="map-row"):
            with Vertical(id="map-left") as left:
                left.border_title = "decoded grid"
                yield Static("", id="map-caption")
                yield DigitGrid(id="map-grid")
            with Vertical(id="map-right") as right:
                right.border_title = "test digits in z"
                yield PlotextPlot(id="map-scatter")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        grid = self.query_one(DigitGrid)
        grid.mode = self.digit_mode
        L = self.view.latent
        h, w = max(self.app.size.height - 5, 4), max(self.app.size.width // 2 - 2, 8)
        n = max(3, min(15, h // 4, w // 8))
        if L < 2:
            self.query_one("#map-caption", Static).update("a 1-D latent has no 2-D map; pick another size with l")
            return
        what = ("z1 across, z2 up, at the Gaussian quantiles" if L == 2 else
                f"latent size {L}: the two most active dimensions, others 0 (the map is exact only for z=2)")
        self.query_one("#map-caption", Static).update(what)
        grid.set_grid(self.view.manifold(n))
        plt = self.query_one(PlotextPlot).plt
        plt.clear_figure()
        if self.view.has_data:
            pts, labels = self.view.scatter(1000)
            for d in range(10):
                sel = labels == d
                if sel.any():
                    plt.scatter(pts[sel, 0].tolist(), pts[sel, 1].tolist(), color=COLORS[d], label=str(d), marker="dot")
            plt.title("encoder means" + ("" if L == 2 else " (first two principal components)"))
        else:
            plt.title("no test data")

    def export_rows(self):
        grid = self.query_one(DigitGrid).grid
        return None if grid is None else (list(grid), None, "latent map")
