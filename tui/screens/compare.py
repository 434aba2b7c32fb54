"""The chapter's study on one screen (`c`): every latent size trained in the runs folder side by side,
test curves overlaid, the same test digits reconstructed by each size, a row of samples per size and
cuvae-sweep's table; sizes typed into the field are queued to train one after another."""

from __future__ import annotations

import os
import threading

import numpy as np
from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Static
from textual_plotext import PlotextPlot

from ..classes import PALETTE
from ..session import read_history, run_prefix, trained_epochs, trained_sizes
from ..study import COLUMNS, table_cells
from ..widgets.digit_grid import DigitGrid

MARKS = "ox+*#@%&$"
RESCAN_S = 2.0


class CompareScreen(Screen):
    BINDINGS = [Binding("escape,c", "app.pop_screen", "back", id="close-compare"),
                Binding("t", "focus_queue", "queue sizes", id="queue-sizes")]

    def __init__(self, runs, session, data_dir, protocol: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs, self.session, self.data_dir, self.protocol = runs, session, data_dir, protocol
        self.rows: dict[int, object] = {}  # latent -> study.StudyRow
        self.seen: dict[int, int] = {}  # latent -> checkpoint epoch measured (or being measured)
        self._lock = threading.Lock()

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="compare-box") as box:
            box.border_title = "latent sizes in this runs folder"
            yield Static("", id="compare-note", markup=False)
            yield PlotextPlot(id="compare-plot")
            yield Static("", id="compare-table")
            yield Vertical(id="compare-digits")
        yield Input(placeholder="queue sizes to train, e.g. 3 10 16, then Enter (they train one after another)",
                    id="compare-queue")
        yield Footer(compact=True)

    @property
    def prefix(self) -> str:
        if self.session is not None:
            return run_prefix(self.session.base_config(self.app.latent))
        p = self.app.prepared
        return run_prefix(p.config) if p else ""

    def on_mount(self) -> None:
        self.rescan()
        self.set_interval(RESCAN_S, self.rescan)

    def rescan(self) -> None:
        """Pick up runs that appeared or grew (the queue trains them while this screen is open)."""
        found = trained_sizes(self.runs, self.prefix)
        queue = self.app.queue
        note = f"{len(found)} trained size(s) under {self.runs}"
        if queue:
            note += " · queued: " + ", ".join(f"z={z}" for z in queue)
        if self.app.trainer is not None:
            note += f" · training z={self.app.latent} now"
        self.query_one("#compare-note", Static).update(note)
        for z, d in found.items():
            epoch = trained_epochs(d) or 0
            if self.seen.get(z) != epoch:
                self.seen[z] = epoch
                self._measure(z, d)
        self.draw_curves(found)

    @work(thread=True, group="compare", exit_on_error=False)
    def _measure(self, latent: int, run_dir) -> None:
        from ..study import study_row

        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        p = self.app.prepared
        test_x = p.test_x if p is not None else np.zeros((0, 784), np.float32)
        eval_x = p.eval_x if p is not None else test_x
        shape = p.shape if p is not None else (28, 28)
        with self._lock:  # one at a time: the IWAE is the costly part
            try:
                row = study_row(latent, run_dir, test_x, eval_x, shape)
            except Exception as err:  # noqa: BLE001 - one unreadable run does not end the screen
                self.app.call_from_thread(self.app.notify, f"z={latent}: {err}", severity="warning")
                return
        self.app.call_from_thread(self._add_row, row)

    def _add_row(self, row) -> None:
        self.rows[row.latent] = row
        self.draw_table()
        self.draw_digits()

    def draw_curves(self, found: dict) -> None:
        plt = self.query_one(PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("test negative ELBO per epoch (each size its own marker)")
        plt.xlabel("epoch")
        values = []
        for k, (z, d) in enumerate(found.items()):
            hist = read_history(d)
            if hist:
                ys = [m["test_loss"] for m in hist]
                values += ys[min(1, len(ys) - 1):]
                plt.plot([m["epoch"] for m in hist], ys, marker=MARKS[k % len(MARKS)], color=PALETTE[k % 10],
                         label=f"z={z}")
        if values:
            lo, hi = min(values), max(values)
            pad = max(0.05 * (hi - lo), 0.5)
            plt.ylim(lo - pad, hi + pad)
        self.query_one(PlotextPlot).refresh()

    def draw_table(self) -> None:
        t = Table(title="the study's table (as cuvae-sweep writes it; NLL and sharpness on the first 1,000 test images)",
                  title_justify="left")
        for _, header, _ in COLUMNS:
            t.add_column(header, justify="right")
        for z in sorted(self.rows):
            t.add_row(*table_cells(self.rows[z]))
        self.query_one("#compare-table", Static).update(t)

    def draw_digits(self) -> None:
        box = self.query_one("#compare-digits", Vertical)
        box.remove_children()
        rows = [self.rows[z] for z in sorted(self.rows)]
        p = self.app.prepared
        if p is not None and len(p.test_x) and rows and rows[0].recon is not None:
            n = rows[0].recon.shape[0]
            box.mount(Static("the same test digits", classes="compare-label"))
            box.mount(self._grid(p.test_x[:n].reshape((1, n, *p.shape))))
        for r in rows:
            if r.recon is not None:
                box.mount(Static(f"z={r.latent}: reconstructions", classes="compare-label"))
                box.mount(self._grid(r.recon[None]))
            box.mount(Static(f"z={r.latent}: samples (seed 0)", classes="compare-label"))
            box.mount(self._grid(r.samples[None]))

    def _grid(self, images) -> DigitGrid:
        g = DigitGrid(layout="fixed")
        g.protocol = self.protocol
        g.set_grid(images)
        return g

    def action_focus_queue(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted, "#compare-queue")
    def _queue(self, event: Input.Submitted) -> None:
        sizes = []
        for word in event.value.replace(",", " ").split():
            if not word.isdigit() or not 1 <= int(word) <= 512:
                self.app.notify(f"latent sizes are whole numbers from 1 to 512, got {word!r}", severity="error")
                return
            sizes.append(int(word))
        if self.app.read_only:
            self.app.notify("read-only (--open): start cuvae-tui without --open to train sizes", severity="warning")
            return
        for z in sizes:
            self.app.enqueue(z)
        event.input.value = ""
        self.rescan()
