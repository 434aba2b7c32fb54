"""The latent map: the decoded grid over two latent dimensions at full digit resolution, beside the
test set's encodings coloured by class (for a 2-D latent, the chapter's picture)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, ScrollableContainer, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from ..classes import PALETTE, class_names
from ..widgets.digit_grid import DigitGrid


def axis_caption(latent: int, dims: tuple[int, int], q_lo: float, q_hi: float) -> str:
    """The grid's axes, named as cuvae-show names them."""
    a, b = dims
    head = f"z{a} left->right, z{b} bottom->top, Gaussian quantiles {q_lo:+.2f} .. {q_hi:+.2f}"
    return head if latent == 2 else f"{head}; the other {latent - 2} dimensions at 0 (the two most active shown)"


def rgb(c) -> str:
    return "rgb({},{},{})".format(*c)


def legend(names) -> Text:
    t = Text()
    for d, name in enumerate(names):
        if d:
            t.append("  ")
        t.append(f"{d}", style="bold " + rgb(PALETTE[d]))
        t.append(f" {name}" if name != str(d) else "", style=rgb(PALETTE[d]))
    return t


class LatentMapScreen(Screen):
    BINDINGS = [Binding("escape,m", "app.pop_screen", "back", id="close-map")]

    def __init__(self, view, protocol: str = "halfblock", dataset: str = "mnist", **kwargs) -> None:
        super().__init__(**kwargs)
        self.view, self.protocol, self.names = view, protocol, class_names(dataset)
        self.dims = (0, 1)

    def compose(self) -> ComposeResult:
        with Horizontal(id="map-row"):
            with Vertical(id="map-left") as left:
                left.border_title = "decoded grid (true resolution; scroll for more)"
                yield Static("", id="map-caption", markup=False)
                with ScrollableContainer(id="map-scroll"):
                    yield DigitGrid(id="map-grid", layout="fixed")
            with Vertical(id="map-right") as right:
                right.border_title = "test digits in z (each drawn as its class)"
                yield PlotextPlot(id="map-scatter")
                yield Static(legend(self.names), id="map-legend")
        yield Footer(compact=True)

    def grid_size(self) -> int:
        """Digits per side: what fits half the screen at 28x14 cells, at least 4 (then it scrolls)."""
        w, h = max(self.app.size.width // 2 - 4, 28), max(self.app.size.height - 7, 14)
        return max(4, min(12, w // 28, h // 14))

    def on_mount(self) -> None:
        from cuvae.measure.views import manifold_dims, quantile_grid

        grid = self.query_one(DigitGrid)
        grid.protocol = self.protocol
        L = self.view.latent
        if L < 2:
            self.query_one("#map-caption", Static).update("a 1-D latent has no 2-D map; pick another size with l")
            return
        n = self.grid_size()
        x = self.view.test_x[:1000] if self.view.has_data else None
        self.dims = manifold_dims(self.view.model, self.view.P, x)
        q = quantile_grid(n)
        self.query_one("#map-caption", Static).update(axis_caption(L, self.dims, q[0], q[-1]))
        grid.set_grid(self.view.manifold(n))
        plt = self.query_one(PlotextPlot).plt
        plt.clear_figure()
        if self.view.has_data:
            pts, labels = self.view.scatter(1000)
            for d in range(10):
                sel = labels == d
                if sel.any():
                    plt.scatter(pts[sel, 0].tolist(), pts[sel, 1].tolist(), color=PALETTE[d], marker=str(d))
            if L == 2:
                plt.xlabel("z0 (encoder mean) left->right")
                plt.ylabel("z1 bottom->top")
            else:
                plt.xlabel("first principal component of the encoder means")
                plt.ylabel("second")
        else:
            plt.title("no test data")

    def export_rows(self):
        grid = self.query_one(DigitGrid).grid
        return None if grid is None else (list(grid), None, f"latent map, z{self.dims[0]} left->right, "
                                                             f"z{self.dims[1]} bottom->top")
