"""Live loss curves with textual-plotext: train (per step, smoothed) and test (per epoch) -ELBO, with
the reconstruction and KL parts of the test loss."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps: list[tuple[float, float]] = []  # (epoch as a float, smoothed train loss)
        self.epochs: list[dict] = []  # metrics.jsonl lines
        self._version, self._cache = 0, None

    def reset(self, history: list[dict]) -> None:
        self.epochs = list(history)
        self.steps = [(float(m["epoch"]), float(m["train_loss"])) for m in history]
        self.replot()

    def add_step(self, x: float, loss: float) -> None:
        if self.steps and x <= self.steps[-1][0]:
            self.steps = [s for s in self.steps if s[0] < x]  # a resumed epoch replays
        self.steps.append((x, loss))
        if len(self.steps) > 2000:
            self.steps = self.steps[::2]

    def add_epoch(self, metrics: dict) -> None:
        self.epochs = [m for m in self.epochs if m["epoch"] < metrics["epoch"]] + [metrics]

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("negative ELBO (nats)")
        plt.xlabel("epoch")
        if self.steps:
            xs, ys = zip(*self.steps)
            plt.plot(list(xs), list(ys), label="train", color="cyan", marker="braille")
        if self.epochs:
            ep = [m["epoch"] for m in self.epochs]
            plt.plot(ep, [m["test_loss"] for m in self.epochs], label="test", color="yellow", marker="dot")
            plt.plot(ep, [m["test_recon"] for m in self.epochs], label="test recon", color="green", marker="dot")
            plt.plot(ep, [m["test_kl"] for m in self.epochs], label="test KL", color="magenta", marker="dot")
        top = self._y_top()
        if top is not None:
            plt.ylim(0, top)
        self._version += 1
        self.refresh()

    def _y_top(self) -> float | None:
        """Leave out the first steps' transient (hundreds of nats) so later progress stays visible."""
        if not self.steps and not self.epochs:
            return None
        end = max([x for x, _ in self.steps] + [m["epoch"] for m in self.epochs])
        skip = min(0.5, 0.1 * end)  # the first tenth of training, at most half an epoch
        values = [y for x, y in self.steps if x >= skip] + [m["test_loss"] for m in self.epochs]
        return 1.05 * max(values) if values else None

    def render(self):
        """plotext's build is the costliest thing on screen: rebuild only for new data or a new size."""
        key = (self._version, self.size, self.app.theme)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, super().render())
        return self._cache[1]
