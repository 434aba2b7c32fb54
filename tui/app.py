"""The cuvae terminal UI: watch a VAE learn, switch its latent size, read its digits and diagnostics.

The app composes the panels and routes keys and engine events. Training runs in a child process
(:mod:`cuvae_tui.training`), whose events and commands (stop, pause, unpause) travel over a pipe;
pictures and diagnostics come from workers (:mod:`cuvae_tui.workers`) over host copies of the
parameters (:class:`~cuvae_tui.session.ViewModel`), so the UI thread only draws.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from pathlib import Path

import numpy as np
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from cuvae.engine.events import TrainingFinished

from . import pixels
from .diagnostics import IwaeBudget
from .export import export_screen
from .layout import apply_layout
from .messages import Diagnosed, Epoch, Failed, Finished, Info, Pictures, Ready, Started
from .screens.help import QUIT_NOTE
from .session import Session, ViewModel, data_label, latent_choices
from .widgets.diagnostics_panel import DiagnosticsPanel
from .widgets.digit_grid import DigitGrid
from .widgets.loss_plot import LOSS_LEGEND, PARTS_LEGEND, Charts, Curves, LossPlot, PartsPlot
from .widgets.metrics_line import MetricsLine
from .widgets.status_bar import MessageLine, StatusBar, format_elapsed
from .workers import SAMPLES, Workers

# What the UI draws costs CPU that training would use (scripts/tui_epochs.py measures it; with both cores
# training, the trainer loses about twice the UI's CPU): the timer ticks 5 times a second for the clock,
# resizes and the pictures due (keys do not wait for it), the status line redraws once a second and each
# chart (10-25 ms of CPU a build, measured) every PLOT_EVERY seconds, the two in turn.
REDRAW_HZ = 5
STATUS_EVERY = 1.0
PLOT_EVERY = 5.0


class CuvaeApp(Workers, App):
    CSS_PATH = "app.tcss"
    TITLE = "cuvae"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("space", "toggle_pause", "pause", id="pause"),
        Binding("s", "samples", "sample", id="samples"),
        Binding("z", "zoom", "zoom", id="zoom"),
        Binding("a", "cycle_drawing", "drawing", id="drawing"),
        Binding("g", "plot_view", "fit/log/recent", id="plot-view"),
        Binding("d", "diagnostics", "diag", id="diagnostics"),
        Binding("l", "choose_latent", "latent", id="latent"),
        Binding("c", "compare", "compare", id="compare"),
        Binding("i", "interpolation", "interp", id="interpolation"),
        Binding("m", "latent_map", "map", id="latent-map"),
        Binding("e", "export", "png", id="export"),
        Binding("plus,equals_sign", "temperature(0.1)", "T+", show=False, id="temperature-up"),
        Binding("minus", "temperature(-0.1)", "T-", show=False, id="temperature-down"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("q", "quit", "quit", id="quit"),
    ]

    def __init__(self, session: Session | None = None, latent: int = 8, open_dir: Path | None = None,
                 data_dir: Path | None = None, protocol: str = "halfblock", note: str | None = None) -> None:
        super().__init__()
        self.session, self.latent, self.open_dir, self.data_dir = session, latent, open_dir, data_dir
        self.read_only = open_dir is not None
        self.protocol, self.modes, self.pixels_note = protocol, pixels.cycle(protocol), note
        self.generation = 0
        self.init_workers(training=session is not None)
        self.prepared = None
        self.view: ViewModel | None = None
        self.pictured_epoch = 0  # the epoch the digits on screen come from
        self.sample_seed, self.temperature = 0, 1.0
        self.epochs_total = 0
        self.elapsed_by_latent: dict[int, float] = {}
        self.elapsed, self._clock_running, self._last_tick, self._last_status = 0.0, False, time.monotonic(), 0.0
        self.curves = Curves()
        self.finished: TrainingFinished | None = None
        self.error: str | None = None
        self.diagnosis = None
        self.active_history: list[tuple[int, int]] = []
        self.closing = False  # set when quitting: late messages from the threads are dropped
        self.queue: list[int] = []  # latent sizes to train one after another (from the compare screen)

    # ---- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with Vertical(id="loss-box") as box:
                    box.border_title, box.border_subtitle = "negative ELBO (nats)", LOSS_LEGEND
                    yield LossPlot(self.curves, id="plot")
                with Vertical(id="parts-box") as box:
                    box.border_title, box.border_subtitle = "reconstruction and KL (nats)", PARTS_LEGEND
                    yield PartsPlot(self.curves, id="parts")
                with Vertical(id="diag-box") as box:
                    box.border_title = "latent diagnostics (d: full screen)"
                    yield DiagnosticsPanel(id="diag")
                yield MetricsLine(id="metrics")
            with Vertical(id="right"):
                with Vertical(id="recon-box") as box:
                    box.border_title = "test digit | reconstruction"
                    yield DigitGrid("reconstructions appear after the first epoch", id="recon")
                with Vertical(id="samples-box") as box:
                    box.border_title = "samples"
                    yield DigitGrid("samples appear after the first epoch", id="samples")
        with Horizontal(id="bottom"):
            yield MessageLine("", id="message", markup=False)
            yield Static("", id="drawing", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.charts = Charts(self.query_one(LossPlot), self.query_one(PartsPlot), PLOT_EVERY)
        self._apply_protocol()
        self.on_resize()
        self.status.set(latent=self.latent, state="read-only" if self.read_only else "starting")
        self.set_interval(1 / REDRAW_HZ, self._tick)
        if self.pixels_note:
            self.say(self.pixels_note, "warning")
        if self.read_only:
            self._open_worker(self.open_dir, self.data_dir)
        else:
            self.start_training(self.latent)

    def on_unmount(self) -> None:
        """However the app ends (a crash, a test leaving early), the training thread must not outlive it."""
        self.queue.clear()
        self.closing = True
        with self._lock:
            trainer = self._trainer
        if trainer is not None:
            trainer.stop()

    def on_resize(self, event=None) -> None:
        """Pick the layout for the terminal's size (also checked on every tick: not every resize reaches the app)."""
        apply_layout(self)

    @property
    def main(self):
        """The main screen (queries on the app would search whichever screen is on top)."""
        return self.screen_stack[0]

    @property
    def status(self) -> StatusBar:
        return self.main.query_one("#status", StatusBar)

    def say(self, text: str, level: str = "information") -> None:
        self.main.query_one(MessageLine).say(text, level)

    # ---- runs ------------------------------------------------------------------------------------
    def start_training(self, latent: int) -> None:
        self.elapsed_by_latent[self.latent] = self.elapsed
        self.generation += 1
        self.latent, self.view, self.finished, self.error = latent, None, None, None
        self.elapsed, self._clock_running = self.elapsed_by_latent.get(latent, 0.0), False
        self.diagnosis, self.active_history, self._iwae = None, [], IwaeBudget()
        self._diagnosed_at = float("-inf")  # a new run's first diagnostics come at once
        self.epoch_pictures.reset()
        self.status.set(latent=latent, epoch="-", rate="-", state="loading", elapsed=format_elapsed(self.elapsed))
        self._clear_pictures("appear after the first epoch")
        self.curves.reset([])
        self.charts.redraw()
        self.main.query_one(DiagnosticsPanel).show(None, [], latent)
        self.main.query_one(MetricsLine).show(None)
        self.steps = deque()  # a fresh buffer: late steps of the stopped run land in the old one
        self._train_worker(latent, self.generation, self.steps)

    # ---- messages from the threads ------------------------------------------------------------
    @on(Ready)
    def handle_ready(self, msg: Ready) -> None:
        if msg.generation != self.generation or self.closing:
            return
        p = self.prepared = msg.prepared
        self.latent, self.epochs_total = p.latent, p.config.epochs
        last = p.history[-1] if p.history else None
        self.status.set(latent=p.latent, device=p.device, data=p.data_label,
                        epoch=f"{p.resumed_epoch}/{p.config.epochs}",
                        rate=f"{last['examples_per_s']:,.0f} ex/s" if last else "-")
        if self.read_only:
            self.elapsed = sum(m.get("seconds", 0.0) for m in p.history)
            self.status.set(elapsed=format_elapsed(self.elapsed), state="read-only")
            self.say(f"read-only: {p.run_dir.name} · {p.config.arch.describe()} · {p.resumed_epoch} epochs")
        else:
            if not self.elapsed:
                self.elapsed = sum(m.get("seconds", 0.0) for m in p.history)
            self.status.set(state="training", elapsed=format_elapsed(self.elapsed))
            self.say(f"run {p.run_dir} · {p.config.arch.describe()} · {p.data_source}")
        self.curves.reset(p.history)
        self.charts.redraw()
        self.active_history = [(m["epoch"], m["active_units"]) for m in p.history if "active_units" in m]
        if last:
            self._show_metrics(last)
        if p.params is not None:
            self._pictures_worker(p.params, self.generation, p.resumed_epoch)

    @on(Started)
    def handle_started(self, msg: Started) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self._clock_running = True
        self._last_tick = time.monotonic()
        # Everything loaded so far (modules, the app, the run's data) lives as long as the run: out of the
        # collector's reach, a full collection no longer walks it (one took 366 ms of the UI thread at 200x60)
        gc.freeze()
        e, p = msg.event, self.prepared
        p.device, p.data_label = e.device, data_label(p.dataset, e.train_examples)
        self.status.set(device=p.device, data=p.data_label)

    @on(Epoch)
    def handle_epoch(self, msg: Epoch) -> None:
        if msg.generation != self.generation or self.closing:
            return
        m = msg.event.metrics
        self.curves.add_epoch(m)
        self.charts.changed()
        self.active_history = [h for h in self.active_history if h[0] < m["epoch"]] + [(m["epoch"], m["active_units"])]
        self._show_metrics(m)
        self.status.set(epoch=f"{m['epoch']}/{self.epochs_total}", rate=f"{m['examples_per_s']:,.0f} ex/s")
        self.picture_epoch(msg.params, msg.generation, m["epoch"])

    @on(Pictures)
    def handle_pictures(self, msg: Pictures) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self.view, self.pictured_epoch = msg.view, msg.epoch
        self.charts.defer(time.monotonic())
        recon = self.main.query_one("#recon", DigitGrid)
        if msg.recon is not None:
            recon.set_grid(msg.recon)
        else:
            recon.set_placeholder("no test data")
        self.main.query_one("#samples", DigitGrid).set_grid(msg.samples[None])
        self._samples_title()
        self.refresh_diagnostics()

    @on(Diagnosed)
    def handle_diagnosed(self, msg: Diagnosed) -> None:
        if msg.generation != self.generation or self.closing:
            return
        d = msg.diagnosis
        if d.iwae_nll is None and self.diagnosis is not None:  # keep showing the last NLL, with its epoch
            d.iwae_nll, d.iwae_epoch = self.diagnosis.iwae_nll, self.diagnosis.iwae_epoch
        self.diagnosis = d
        self.refresh_diagnostics()  # a newer epoch (or the end of training) may have come meanwhile
        self.main.query_one(DiagnosticsPanel).show(d, self.active_history, self.latent)
        from .screens.diagnostics import DiagnosticsScreen

        if isinstance(self.screen, DiagnosticsScreen):
            self.screen.show(d, self.active_history, self.latent)

    @on(Info)
    def handle_info(self, msg: Info) -> None:
        self.say(msg.text, msg.level)

    @on(Finished)
    def handle_finished(self, msg: Finished) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self.finished, self._clock_running = msg.event, False
        self.draw_pending_pictures(at_once=True)  # the run's last epoch, if it was kept back
        if msg.event.reason == "completed":
            self.refresh_diagnostics()  # training is over: they cost it nothing now
        state = {"completed": "done", "stopped": "stopped", "diverged": "diverged"}[msg.event.reason]
        self.status.set(state=state)
        self.say(msg.event.message, "error" if msg.event.reason == "diverged" else "information")
        if msg.event.reason == "diverged":
            self.error = msg.event.message
        if msg.event.reason != "stopped" and self.queue:
            self._start_next()

    @on(Failed)
    def handle_failed(self, msg: Failed) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self.error, self._clock_running = msg.text, False
        self.epoch_pictures.reset()
        self.status.set(state="error", device=self.status.fields["device"].replace("starting...", "-"),
                        data=self.status.fields["data"].replace("loading data...", "-"))
        self.say(msg.text, "error")
        self._clear_pictures("unavailable: " + msg.text)
        if self.queue:
            self._start_next()

    # ---- drawing -------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.on_resize()
        now = time.monotonic()
        trainer = self.trainer
        if self._clock_running and not (trainer is not None and trainer.paused):
            self.elapsed += now - self._last_tick
        self._last_tick = now
        if now - self._last_status >= STATUS_EVERY:
            self._last_status = now
            self._drain_steps()
        self.charts.tick(now)
        self.draw_pending_pictures()

    def _drain_steps(self) -> None:
        """The train steps that arrived since the last turn: all go into the curve, the last into the status
        line, redrawn once with the clock."""
        e, fields = None, {"elapsed": format_elapsed(self.elapsed)}
        while self.steps:
            e = self.steps.popleft()
            self.curves.add_report(e.epoch, e.step, e.steps_per_epoch, e.loss, e.recon, e.kl)
        if e is not None and not self.closing:
            self.charts.changed()
            fields.update(epoch=f"{e.epoch}/{self.epochs_total} {100 * e.step // e.steps_per_epoch}%",
                          rate=f"{e.examples_per_s:,.0f} ex/s")
        self.status.set(**fields)

    def _show_metrics(self, m: dict) -> None:
        self.main.query_one(MetricsLine).show(m, self.latent)

    def _clear_pictures(self, why: str) -> None:
        for grid, what in ((self.main.query_one("#recon", DigitGrid), "reconstructions"),
                           (self.main.query_one("#samples", DigitGrid), "samples")):
            grid.set_grid(None)
            grid.set_placeholder(why if why.startswith("unavailable") else f"{what} {why}")

    def _draw_samples(self) -> None:
        images = self.view.samples(SAMPLES, seed=self.sample_seed, temperature=self.temperature)
        self.main.query_one("#samples", DigitGrid).set_grid(images[None])
        self._samples_title()

    def _samples_title(self) -> None:
        self.main.query_one("#samples-box").border_title = (f"samples · epoch {self.pictured_epoch} · seed {self.sample_seed}"
                                                             f" · T={self.temperature:.1f}")

    def _apply_protocol(self) -> None:
        for screen in self.screen_stack:
            for grid in screen.query(DigitGrid):
                grid.protocol = self.protocol
        self.main.query_one("#drawing", Static).update(f"digits: {pixels.LABELS[self.protocol]} (a cycles)")

    def _need_view(self, what: str) -> bool:
        if self.view is None:
            self.notify(f"no complete epoch yet: {what} after the first epoch ends", severity="warning")
            return False
        return True

    # ---- actions ---------------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        if self.read_only:
            self.notify("read-only (--open): nothing is training", severity="warning")
            return
        trainer = self.trainer
        if trainer is None:
            self.notify("training has not started yet (or has ended)", severity="warning")
            return
        if trainer.paused:
            trainer.unpause()
            self.status.set(state="training")
        else:
            trainer.pause()
            self.status.set(state="paused")
            self.draw_pending_pictures(at_once=True)  # the newest epoch, to look at while paused

    def action_samples(self) -> None:
        if self._need_view("samples come"):
            self.sample_seed += 1
            self._draw_samples()

    def action_temperature(self, delta: float) -> None:
        self.temperature = float(np.clip(round(self.temperature + delta, 1), 0.1, 3.0))
        if self.view is not None:
            self._draw_samples()

    def action_cycle_drawing(self) -> None:
        self.protocol = self.modes[(self.modes.index(self.protocol) + 1) % len(self.modes)] \
            if self.protocol in self.modes else self.modes[0]
        self._apply_protocol()

    def action_plot_view(self) -> None:
        self.main.query_one("#loss-box").border_title = f"negative ELBO (nats) · {self.charts.next_view()} view (g)"

    def action_zoom(self) -> None:
        from .screens.zoom import ZoomScreen

        if self._need_view("zoom works"):
            r, s = self.main.query_one("#recon", DigitGrid).grid, self.main.query_one("#samples", DigitGrid).grid
            self.push_screen(ZoomScreen(r, s, self.protocol))

    def action_diagnostics(self) -> None:
        from .screens.diagnostics import DiagnosticsScreen

        self.push_screen(DiagnosticsScreen(self.diagnosis, self.active_history, self.latent))
        self.refresh_diagnostics(now=True)  # computed only while shown: this epoch's, if not yet

    def action_interpolation(self) -> None:
        from .screens.interpolation import InterpolationScreen

        if self._need_view("the interpolation view opens"):
            self.push_screen(InterpolationScreen(self.view, self.protocol, seed=self.sample_seed))

    def action_latent_map(self) -> None:
        from .screens.latent_map import LatentMapScreen

        if self._need_view("the latent map opens"):
            dataset = self.prepared.config.dataset if self.prepared else "mnist"
            self.push_screen(LatentMapScreen(self.view, self.protocol, dataset))

    def action_help(self) -> None:
        from .screens.help import KEYS, HelpScreen

        self.push_screen(HelpScreen(KEYS))

    def action_compare(self) -> None:
        from .screens.compare import CompareScreen

        runs = self.session.runs if self.session else self.open_dir.parent
        self.push_screen(CompareScreen(runs, self.session, self.data_dir, self.protocol))

    def action_choose_latent(self) -> None:
        from .screens.latent import LatentScreen

        if self.read_only:
            self.notify("read-only (--open): start cuvae-tui without --open to train other sizes", severity="warning")
            return

        def chosen(latent: int | None) -> None:
            if latent is not None and latent != self.latent:
                self.run_worker(self.switch_latent(latent), group="switch", exclusive=True)

        self.push_screen(LatentScreen(latent_choices(self.session, self.latent), self.latent), chosen)

    def action_export(self) -> None:
        export_screen(self)

    async def action_quit(self) -> None:
        if not self.read_only and self.trainer is not None:
            self.say("stopping after the current step; " + QUIT_NOTE)
        self.queue.clear()
        self.closing = True
        await self.stop_training()
        self.exit(return_code=1 if self.error else 0)


def make_app(argv: list[str] | None = None) -> CuvaeApp:
    """Build the app from command-line arguments (the entry point and the tests use this)."""
    from .options import parse_args

    return app_from_args(parse_args(argv))


def app_from_args(args, detected: str | None = None) -> CuvaeApp:
    requested = "ascii" if args.ascii else args.pixels
    protocol, note = pixels.resolve(requested, detected)
    if args.open:
        return CuvaeApp(open_dir=args.open, data_dir=args.data_dir, protocol=protocol, note=note)
    session = Session(args)
    return CuvaeApp(session, latent=session.base_config(args.latent).latent, data_dir=args.data_dir,
                    protocol=protocol, note=note)
