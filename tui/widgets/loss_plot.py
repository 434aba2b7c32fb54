"""Live loss curves with textual-plotext.

:class:`LossPlot`: negative ELBO alone on its axes, train smoothed per step (a braille line) and test
per epoch (``•`` points joined), y scaled to the data once the first steps' transient is over.
:class:`PartsPlot`: reconstruction (left axis) and KL (right axis), each on its own scale. Both are
told apart by their markers as well as their colours; the legends live outside the plot (in the
box's subtitle), and ``view`` switches between the fitted, logarithmic and recent-half views.
"""

from __future__ import annotations

import numpy as np
from textual.strip import Strip
from textual_plotext import PlotextPlot

from .plot_strips import figure_strips

VIEWS = ("fit", "log", "recent")
TRAIN_MARK, TEST_MARK, KL_MARK = "braille", "•", "x"
LOSS_LEGEND = "⣀⣀ train (smoothed steps)  •─• test (epochs)"  # fits the 48-column chart at 80x24
PARTS_LEGEND = "recon ⣀ train • test (left)  KL ⣀ train x test (right)"


def _skip(end: float) -> float:
    """Leave out the first tenth of training (at most half an epoch): its transient is hundreds of nats."""
    return min(0.5, 0.1 * end)


def _range(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi) * 0.02, 0.5)
    return lo - pad, hi + pad


def binned(steps: list[tuple], bins: int) -> list[tuple]:
    """At most ``bins`` points: the mean of the steps in each of ``bins`` equal x intervals.

    A chart shows about two braille dots a column, so more points draw nothing new, while plotext's
    build grows with them (a 100x18 chart: 40 ms for 2,000 points, 11 ms for 200, measured), and
    training pays for that CPU."""
    if len(steps) <= bins:
        return steps
    a = np.asarray(steps, dtype=float)
    x0, x1 = a[0, 0], a[-1, 0]
    idx = np.minimum(((a[:, 0] - x0) * (bins / max(x1 - x0, 1e-12))).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    means = np.stack([np.bincount(idx, a[:, i], minlength=bins) for i in range(a.shape[1])], 1)
    keep = counts > 0
    return [tuple(row) for row in (means[keep] / counts[keep, None]).tolist()]


class Curves:
    """The data both plots draw: train steps (x in epochs) and metrics.jsonl lines. No Textual."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float, float, float]] = []  # (epoch as a float, loss, recon, kl)
        self.epochs: list[dict] = []
        self._last: tuple | None = None  # the last report: (epoch, step, its running means)

    def reset(self, history: list[dict]) -> None:
        self._last = None
        self.epochs = list(history)
        self.steps = [(float(m["epoch"]), float(m["train_loss"]), float(m.get("train_recon", m["train_loss"])),
                       float(m.get("train_kl", 0.0))) for m in history]

    def add_report(self, epoch: int, step: int, steps_per_epoch: int, loss: float, recon: float, kl: float) -> None:
        """A StepMetrics report, whose figures are running means over the epoch so far, drawn as the mean
        of the steps since the previous report (at the middle of those steps): plotted as they come, the
        running means stay flat within each epoch and the curve is a staircase."""
        last = self._last if self._last and self._last[0] == epoch and self._last[1] < step else (epoch, 0, 0.0, 0.0, 0.0)
        n0 = last[1]
        recent = [(v * step - u * n0) / (step - n0) for v, u in zip((loss, recon, kl), last[2:])]
        self._last = (epoch, step, loss, recon, kl)
        self.add_step(epoch - 1 + (n0 + step) / 2 / steps_per_epoch, *recent)

    def add_step(self, x: float, loss: float, recon: float, kl: float) -> None:
        if self.steps and x <= self.steps[-1][0]:
            self.steps = [s for s in self.steps if s[0] < x]  # a resumed epoch replays
        self.steps.append((x, loss, recon, kl))
        if len(self.steps) > 2000:
            self.steps = self.steps[::2]

    def add_epoch(self, metrics: dict) -> None:
        self.epochs = [m for m in self.epochs if m["epoch"] < metrics["epoch"]] + [metrics]

    @property
    def end(self) -> float:
        return max([s[0] for s in self.steps] + [m["epoch"] for m in self.epochs] + [0.0])

    def window(self, view: str) -> float:
        """The first x shown: after the transient, or the last half of training in the recent view."""
        return self.end / 2 if view == "recent" else _skip(self.end)


class _Plot(PlotextPlot):
    def __init__(self, curves: Curves, **kwargs) -> None:
        super().__init__(**kwargs)
        self.curves, self.view = curves, "fit"
        self._version, self._cache = 0, None

    @property
    def bins(self) -> int:
        """Train points worth drawing: two braille dots a column of the plotting area."""
        return 2 * max(self.size.width, 40)

    def replot(self) -> None:
        """New data: built now, in the caller's turn (the redraw tick), and drawn in the next frame; built
        inside the frame, the two together held the UI thread 50-60 ms at 200x60."""
        self._version += 1
        if self.size.area:
            self._build()
        self.refresh()

    def _key(self) -> tuple:
        return self._version, self.size, self.app.theme

    def _build(self) -> None:
        self._cache = (self._key(), self.build_strips(), Strip.blank(self.size.width, self.visual_style.rich_style))

    def redraw_figure(self) -> None:
        """The figure from the curves afresh: plotext may not build one figure twice (a second build in
        the log view loses the curves), so every build, for new data or a new size, starts here."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self.draw(plt)

    def render_line(self, y: int) -> Strip:
        """plotext's build is the costliest thing on screen: rebuilt only for new data, size or theme, and
        turned into strips straight from its matrix (plot_strips), not through ANSI text."""
        if self._cache is None or self._cache[0] != self._key():
            self._build()  # a new size or theme
        _, lines, blank = self._cache
        return lines[y] if y < len(lines) else blank

    def build_strips(self) -> list[Strip]:
        """As PlotextPlot.render sizes and themes the figure, then its rows as strips."""
        self.redraw_figure()
        plt, (w, h) = self._plot, self.size
        plt.plotsize(w, h)
        plt._set_size(w, h)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        return figure_strips(plt, self.visual_style.rich_style, w)


class LossPlot(_Plot):
    def draw(self, plt) -> None:
        c, log = self.curves, self.view == "log"
        x0 = c.window(self.view)
        steps = [(x, y) for x, y, _, _ in c.steps if x >= x0] or [(x, y) for x, y, _, _ in c.steps]
        steps = binned(steps, self.bins)
        tests = [(m["epoch"], m["test_loss"]) for m in c.epochs if m["epoch"] >= x0] or \
                [(m["epoch"], m["test_loss"]) for m in c.epochs]
        plt.xlabel("epoch")
        if log:
            plt.yscale("log")
        if tests:  # first: the joined test line fills every column, so the train points go on top of it
            plt.plot([x for x, _ in tests], [y for _, y in tests], color="orange", marker=TEST_MARK)
        if steps:
            plt.plot([x for x, _ in steps], [y for _, y in steps], color="cyan", marker=TRAIN_MARK)
        r = None if log else _range([y for _, y in steps] + [y for _, y in tests])
        if r:  # (plotext takes log-view limits as exponents: it scales those itself)
            plt.ylim(*r)


class PartsPlot(_Plot):
    def draw(self, plt) -> None:
        c = self.curves
        x0 = c.window(self.view)
        steps = binned([s for s in c.steps if s[0] >= x0] or c.steps, self.bins)
        tests = [m for m in c.epochs if m["epoch"] >= x0] or c.epochs
        plt.xlabel("epoch")
        if self.view == "log":
            plt.yscale("log", yside="left")
            plt.yscale("log", yside="right")
        sx = [s[0] for s in steps]
        ex = [m["epoch"] for m in tests]
        recon = [s[2] for s in steps] + [m["test_recon"] for m in tests]
        kl = [s[3] for s in steps] + [m["test_kl"] for m in tests]
        if tests:  # first, as in LossPlot: the train points are drawn over the joined test lines
            plt.plot(ex, [m["test_recon"] for m in tests], color="green", marker=TEST_MARK, yside="left")
            plt.plot(ex, [m["test_kl"] for m in tests], color="magenta", marker=KL_MARK, yside="right")
        if steps:
            plt.plot(sx, [s[2] for s in steps], color="green", marker=TRAIN_MARK, yside="left")
            plt.plot(sx, [s[3] for s in steps], color="magenta", marker=TRAIN_MARK, yside="right")
        for values, side in ((recon, "left"), (kl, "right")):
            r = None if self.view == "log" else _range(values)
            if r:
                plt.ylim(*r, yside=side)


class Charts:
    """The main screen's two charts: redrawn in turn, each at most every ``every`` seconds while data
    arrives (a plotext build costs 15-50 ms of CPU, measured, which training would otherwise use)."""

    def __init__(self, loss: LossPlot, parts: PartsPlot, every: float) -> None:
        self.plots, self.every = (loss, parts), every
        self.dirty: set[int] = set()
        self.last, self.turn = 0.0, 0

    def changed(self) -> None:
        self.dirty = {0, 1}

    def defer(self, now: float) -> None:
        """Something else costly is drawn now (new pictures): the next chart waits its turn from here, so
        the two do not land in one frame (at 200x60 together they held the UI thread 50-60 ms)."""
        self.last = max(self.last, now)

    def shown(self, i: int) -> bool:
        plot = self.plots[i]
        return bool(plot.display and plot.parent.display)

    def tick(self, now: float) -> None:
        """One chart a turn (no 50+ ms block), turns every/2 seconds apart: the charts on screen take
        them in turn (at 80x24, where only one is, it redraws every turn)."""
        due = {i for i in self.dirty if self.shown(i)}
        if due and now - self.last >= self.every / 2:
            if 1 - self.turn in due:
                self.turn = 1 - self.turn
            self.dirty.discard(self.turn)
            self.last = now
            self.redraw(self.turn)

    def redraw(self, which: int | None = None) -> None:
        """Both charts, or only chart ``which`` (0: -ELBO, 1: recon and KL), where shown."""
        for i, plot in enumerate(self.plots):
            if which in (None, i) and self.shown(i):
                plot.replot()

    def next_view(self) -> str:
        view = VIEWS[(VIEWS.index(self.plots[0].view) + 1) % len(VIEWS)]
        for p in self.plots:
            p.view = view
        self.redraw()
        return view
