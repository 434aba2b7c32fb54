"""The cuvae terminal UI: watch a VAE learn, switch its latent size, read its digits and diagnostics.

The app composes the panels, routes keys and turns engine events into messages. It talks to the
engine only through the trainer's events (wrapped by a listener running in the training thread) and
commands (stop, pause, unpause). Pictures and diagnostics come from workers over host copies of the
parameters (:class:`~cuvae_tui.session.ViewModel`), so the UI thread only draws.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Static

from cuvae.errors import CuvaeError
from cuvae.engine.events import EpochEnded, Notice, RunStarted, StepMetrics, TrainingFinished

from . import pixels
from .diagnostics import SUBSET, IwaeBudget, data_protocol, diagnose
from .export import export_png, main_rows
from .messages import Diagnosed, Epoch, Failed, Finished, Info, Pictures, Progress, Ready, Started
from .screens.help import QUIT_NOTE
from .session import Session, ViewModel, latent_choices, open_run
from .widgets.diagnostics_panel import DiagnosticsPanel
from .widgets.digit_grid import DigitGrid
from .widgets.loss_plot import LOSS_LEGEND, PARTS_LEGEND, VIEWS, Curves, LossPlot, PartsPlot
from .widgets.status_bar import StatusBar, format_elapsed

REDRAW_HZ = 10  # status line and elapsed time: at most 10 redraws a second
PLOT_HZ = 1  # the plots: plotext redraws cost a few ms, taken from the training thread's cores
RECON, SAMPLES = 8, 16


def size_class(width: int, height: int) -> str:
    """The layout for a terminal size: small (80x24), medium (120x40) or large (200x60)."""
    if width < 110 or height < 34:
        return "small"
    return "large" if width >= 170 and height >= 50 else "medium"


class CuvaeApp(App):
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
        self._lock = threading.Lock()
        self._trainer = None
        self._stopped_gen = 0
        self.prepared = None
        self.view: ViewModel | None = None
        self.sample_seed, self.temperature = 0, 1.0
        self.epochs_total = 0
        self.elapsed_by_latent: dict[int, float] = {}
        self.elapsed, self._clock_running, self._last_tick = 0.0, False, time.monotonic()
        self.curves = Curves()
        self._plot_dirty, self._last_plot = False, 0.0
        self.finished: TrainingFinished | None = None
        self.error: str | None = None
        self.diagnosis = None
        self.active_history: list[tuple[int, int]] = []
        self._diag_busy = False
        self._iwae = IwaeBudget()
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
                yield Static("waiting for the first epoch...", id="metrics")
            with Vertical(id="right"):
                with Vertical(id="recon-box") as box:
                    box.border_title = "test digit | reconstruction"
                    yield DigitGrid("reconstructions appear after the first epoch", id="recon")
                with Vertical(id="samples-box") as box:
                    box.border_title = "samples"
                    yield DigitGrid("samples appear after the first epoch", id="samples")
        with Horizontal(id="bottom"):
            yield Static("", id="message", markup=False)
            yield Static("", id="drawing", markup=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._apply_protocol()
        self.on_resize()
        self.status.set(latent=self.latent, state="read-only" if self.read_only else "starting")
        self.set_interval(1 / REDRAW_HZ, self._tick)
        if self.pixels_note:
            self.say(self.pixels_note, "warning")
        if self.read_only:
            self._open_worker(self.open_dir)
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
        cls = size_class(self.size.width, self.size.height)
        if not self.has_class(f"-{cls}"):
            for name in ("small", "medium", "large"):
                self.set_class(name == cls, f"-{name}")

    @property
    def main(self):
        """The main screen (queries on the app would search whichever screen is on top)."""
        return self.screen_stack[0]

    @property
    def status(self) -> StatusBar:
        return self.main.query_one("#status", StatusBar)

    def say(self, text: str, level: str = "information") -> None:
        """One line at the bottom; the text is shown as it is (no markup: `[cuda12]` stays)."""
        from rich.text import Text

        style = {"error": "bold red", "warning": "yellow"}.get(level, "")
        prefix = {"error": "error: ", "warning": "warning: "}.get(level, "")
        line = Text(prefix, style=style)
        line.append(text)
        self.main.query_one("#message", Static).update(line)

    # ---- the training thread ----------------------------------------------------------------
    def start_training(self, latent: int) -> None:
        self.elapsed_by_latent[self.latent] = self.elapsed
        self.generation += 1
        self.latent, self.view, self.finished, self.error = latent, None, None, None
        self.elapsed, self._clock_running = self.elapsed_by_latent.get(latent, 0.0), False
        self.diagnosis, self.active_history, self._iwae = None, [], IwaeBudget()
        self.status.set(latent=latent, epoch="-", rate="-", state="loading", elapsed=format_elapsed(self.elapsed))
        self._clear_pictures("appear after the first epoch")
        self.curves.reset([])
        self._replot()
        self.main.query_one(DiagnosticsPanel).show(None, [], latent)
        self.main.query_one("#metrics", Static).update("waiting for the first epoch...")
        self._train_worker(latent, self.generation)

    @work(thread=True, group="train", exit_on_error=False)
    def _train_worker(self, latent: int, gen: int) -> None:
        post = self.post_message
        holder = {}

        def listener(event) -> None:  # runs in the training thread
            if isinstance(event, StepMetrics):
                post(Progress(event, gen))
            elif isinstance(event, EpochEnded):
                params = np.array(holder["trainer"].checkpoint().params, dtype=np.float32, copy=True)
                post(Epoch(event, params, gen))
            elif isinstance(event, RunStarted):
                post(Started(event, gen))
            elif isinstance(event, Notice):
                post(Info(event.message, event.level))
            elif isinstance(event, TrainingFinished):
                post(Finished(event, gen))

        try:
            prepared, build = self.session.prepare(latent, log=lambda m: post(Info(m)))
            post(Ready(prepared, gen))
            trainer = holder["trainer"] = build([listener])
            with self._lock:
                if self._stopped_gen >= gen:
                    trainer.close()  # stopped before it ran: release its GPU step all the same
                    return
                self._trainer = trainer
            trainer.run()
        except CuvaeError as err:
            post(Failed(str(err), gen))
        except Exception as err:  # noqa: BLE001 - shown in the UI, never as a traceback
            post(Failed(f"unexpected {type(err).__name__}: {err}", gen))

    @work(thread=True, group="train", exit_on_error=False)
    def _open_worker(self, run_dir: Path) -> None:
        gen = self.generation
        try:
            self.post_message(Ready(open_run(run_dir, self.data_dir, log=lambda m: self.post_message(Info(m))), gen))
        except CuvaeError as err:
            self.post_message(Failed(str(err), gen))
        except Exception as err:  # noqa: BLE001
            self.post_message(Failed(f"unexpected {type(err).__name__}: {err}", gen))

    @property
    def trainer(self):
        with self._lock:
            return self._trainer

    async def stop_training(self) -> None:
        """Ask the trainer to stop after its current step and wait for the thread to end."""
        with self._lock:
            self._stopped_gen = self.generation
            trainer, self._trainer = self._trainer, None
        if trainer is not None:
            trainer.stop()
        for worker in list(self.workers):
            if worker.group == "train":
                try:
                    await worker.wait()
                except Exception:  # noqa: BLE001 - a failed worker already reported itself
                    pass

    # ---- workers for pictures and diagnostics ---------------------------------------------------
    @work(thread=True, group="pictures", exclusive=True, exit_on_error=False)
    def _pictures_worker(self, params: np.ndarray, gen: int, epoch: int) -> None:
        p = self.prepared
        view = ViewModel(p.config, params, p.test_x, p.test_y, p.shape)
        recon = np.stack(view.reconstructions(RECON)) if view.has_data else None
        samples = view.samples(SAMPLES, seed=self.sample_seed, temperature=self.temperature)
        self.post_message(Pictures(view, recon, samples, gen))
        if view.has_data and p.config.model == "vae" and not self._diag_busy:
            self._diag_busy = True
            self._diagnostics_worker(view, gen, epoch, p.eval_x, data_protocol(p.config), p.config.epochs)

    @work(thread=True, group="diagnostics", exit_on_error=False)
    def _diagnostics_worker(self, view, gen, epoch, x, protocol, last_epoch) -> None:
        try:
            try:  # a background job: let the training thread have the cores first
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):
                pass
            idle = self.read_only or epoch >= last_epoch or self.finished is not None
            d = diagnose(view, x, epoch, protocol,
                         iwae=lambda cheap: self._iwae.due(time.monotonic(), idle=idle, surgery_seconds=cheap))
            if d.iwae_nll is not None:
                self._iwae.record(time.monotonic(), d.seconds["iwae"])
            self.post_message(Diagnosed(d, gen))
        except Exception as err:  # noqa: BLE001 - diagnostics never stop training
            self.post_message(Info(f"diagnostics failed: {type(err).__name__}: {err}", "warning"))
        finally:
            self._diag_busy = False

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
        self._replot()
        self.active_history = [(m["epoch"], m["active_units"]) for m in p.history if "active_units" in m]
        if last:
            self._show_metrics(last)
        if p.params is not None:
            self._pictures_worker(p.params, self.generation, p.resumed_epoch)

    @on(Started)
    def handle_started(self, msg: Started) -> None:
        if msg.generation == self.generation:
            self._clock_running = True
            self._last_tick = time.monotonic()

    @on(Progress)
    def handle_progress(self, msg: Progress) -> None:
        if msg.generation != self.generation or self.closing:
            return
        e = msg.event
        self.curves.add_step(e.epoch - 1 + e.step / e.steps_per_epoch, e.loss, e.recon, e.kl)
        self._plot_dirty = True
        self.status.set(epoch=f"{e.epoch}/{self.epochs_total} {100 * e.step // e.steps_per_epoch}%",
                        rate=f"{e.examples_per_s:,.0f} ex/s")

    @on(Epoch)
    def handle_epoch(self, msg: Epoch) -> None:
        if msg.generation != self.generation or self.closing:
            return
        m = msg.event.metrics
        self.curves.add_epoch(m)
        self._plot_dirty = True
        self.active_history = [h for h in self.active_history if h[0] < m["epoch"]] + [(m["epoch"], m["active_units"])]
        self._show_metrics(m)
        self.status.set(epoch=f"{m['epoch']}/{self.epochs_total}", rate=f"{m['examples_per_s']:,.0f} ex/s")
        self._pictures_worker(msg.params, msg.generation, m["epoch"])

    @on(Pictures)
    def handle_pictures(self, msg: Pictures) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self.view = msg.view
        recon = self.main.query_one("#recon", DigitGrid)
        if msg.recon is not None:
            recon.set_grid(msg.recon)
        else:
            recon.set_placeholder("no test data")
        self.main.query_one("#samples", DigitGrid).set_grid(msg.samples[None])
        self._samples_title()

    @on(Diagnosed)
    def handle_diagnosed(self, msg: Diagnosed) -> None:
        if msg.generation != self.generation or self.closing:
            return
        d = msg.diagnosis
        if d.iwae_nll is None and self.diagnosis is not None:  # keep showing the last NLL, with its epoch
            d.iwae_nll, d.iwae_epoch = self.diagnosis.iwae_nll, self.diagnosis.iwae_epoch
        self.diagnosis = d
        self.main.query_one(DiagnosticsPanel).show(d, self.active_history, self.latent)
        if isinstance(self.screen, _diag_screen()):
            self.screen.show(d, self.active_history, self.latent)

    @on(Info)
    def handle_info(self, msg: Info) -> None:
        self.say(msg.text, msg.level)

    @on(Finished)
    def handle_finished(self, msg: Finished) -> None:
        if msg.generation != self.generation or self.closing:
            return
        self.finished, self._clock_running = msg.event, False
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
            self.status.set(elapsed=format_elapsed(self.elapsed))
        self._last_tick = now
        if self._plot_dirty and now - self._last_plot >= 1 / PLOT_HZ:
            self._plot_dirty, self._last_plot = False, now
            self._replot()

    def _replot(self) -> None:
        for plot in (self.main.query_one(LossPlot), self.main.query_one(PartsPlot)):
            if plot.display and plot.parent.display:
                plot.replot()

    def _show_metrics(self, m: dict) -> None:
        self.main.query_one("#metrics", Static).update(
            f"epoch {m['epoch']}: train {m['train_loss']:.2f} · test {m['test_loss']:.2f} "
            f"= recon {m['test_recon']:.2f} + KL {m['test_kl']:.2f} · active {m['active_units']}/{self.latent}"
            + ("" if m.get("protocol", "continuous") == "continuous" else f" · {m['protocol']}"))

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
        self.main.query_one("#samples-box").border_title = f"samples · seed {self.sample_seed} · T={self.temperature:.1f}"

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
        plot = self.main.query_one(LossPlot)
        view = VIEWS[(VIEWS.index(plot.view) + 1) % len(VIEWS)]
        for p in (plot, self.main.query_one(PartsPlot)):
            p.view = view
        self.main.query_one("#loss-box").border_title = f"negative ELBO (nats) · {view} view (g)"
        self._replot()

    def action_zoom(self) -> None:
        from .screens.zoom import ZoomScreen

        if self._need_view("zoom works"):
            r, s = self.main.query_one("#recon", DigitGrid).grid, self.main.query_one("#samples", DigitGrid).grid
            self.push_screen(ZoomScreen(r, s, self.protocol))

    def action_diagnostics(self) -> None:
        self.push_screen(_diag_screen()(self.diagnosis, self.active_history, self.latent))

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

    def enqueue(self, latent: int) -> None:
        """Train ``latent`` after the current run (and those queued before it) ends."""
        idle = self.finished is not None or self.error is not None
        if latent == self.latent and not idle or latent in self.queue:
            return
        self.queue.append(latent)
        if idle and not self.read_only:  # nothing training now: start at once
            self._start_next()

    def _start_next(self) -> None:
        """The next queued size: from now on the app counts as busy, so a second enqueue only queues."""
        self.finished, self.error = None, None
        self.run_worker(self.switch_latent(self.queue.pop(0)), group="switch", exclusive=True)

    async def switch_latent(self, latent: int) -> None:
        self.say(f"stopping z={self.latent} (its checkpoint keeps the last complete epoch)...")
        await self.stop_training()
        self.start_training(latent)

    def action_export(self) -> None:
        screen = self.screen
        if hasattr(screen, "export_rows"):
            found = screen.export_rows()
            view = type(screen).__name__.replace("Screen", "").lower()
        elif self.view is not None:
            found = main_rows(self.main.query_one("#recon", DigitGrid).grid, self.main.query_one("#samples", DigitGrid).grid)
            view = "main"
        else:
            found = None
        if not found or not found[0]:
            self.notify("nothing to export yet: wait for the first epoch", severity="warning")
            return
        rows, labels, title = found
        epoch = self.prepared.resumed_epoch if self.read_only else (self.curves.epochs or [{"epoch": 0}])[-1]["epoch"]
        try:
            path = export_png(rows, labels, title, self.latent, epoch, view, self.prepared.run_dir,
                              temperature=self.temperature, seed=self.sample_seed)
        except OSError as err:
            self.notify(f"could not write the PNG into {self.prepared.run_dir}: {err.strerror}", severity="error")
            return
        self.notify(f"saved {path}")

    async def action_quit(self) -> None:
        if not self.read_only and self.trainer is not None:
            self.say("stopping after the current step; " + QUIT_NOTE)
        self.queue.clear()
        self.closing = True
        await self.stop_training()
        self.exit(return_code=1 if self.error else 0)


def _diag_screen():
    from .screens.diagnostics import DiagnosticsScreen

    return DiagnosticsScreen


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
