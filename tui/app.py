"""The cuvae terminal UI: watch a VAE learn, switch its latent size, sample digits.

The app talks to the engine only through the trainer's events (wrapped into the
messages of :mod:`cuvae_tui.messages` by a listener running in the training
thread) and its commands (stop, pause, unpause). Pictures come from a separate
CPU model over a host copy of the parameters (:class:`~cuvae_tui.session.ViewModel`).
"""

from __future__ import annotations

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

from .export import export_png
from .messages import Epoch, Failed, Finished, Info, Progress, Ready, Started
from .screens.help import QUIT_NOTE
from .session import PRESET_LATENTS, Session, ViewModel, open_run, trained_epochs
from .widgets.digit_grid import DigitGrid
from .widgets.loss_plot import LossPlot
from .widgets.status_bar import StatusBar, format_elapsed

REDRAW_HZ = 10  # status line and elapsed time
PLOT_HZ = 1  # the loss plot: plotext redraws cost a few ms, taken from the training thread's cores


class CuvaeApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "cuvae"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("space", "toggle_pause", "pause", id="pause"),
        Binding("s", "samples", "sample", id="samples"),
        Binding("l", "choose_latent", "latent", id="latent"),
        Binding("a", "toggle_ascii", "ascii", id="ascii"),
        Binding("i", "interpolation", "interp", id="interpolation"),
        Binding("m", "latent_map", "map", id="latent-map"),
        Binding("e", "export", "png", id="export"),
        Binding("plus,equals_sign", "temperature(0.1)", "T+", show=False, id="temperature-up"),
        Binding("minus", "temperature(-0.1)", "T-", show=False, id="temperature-down"),
        Binding("question_mark", "help", "help", id="help"),
        Binding("q", "quit", "quit", id="quit"),
    ]

    def __init__(self, session: Session | None = None, latent: int = 8, open_dir: Path | None = None,
                 data_dir: Path | None = None, digit_mode: str = "hifi") -> None:
        super().__init__()
        self.session, self.latent, self.open_dir, self.data_dir = session, latent, open_dir, data_dir
        self.read_only = open_dir is not None
        self.digit_mode = digit_mode
        self.generation = 0
        self._lock = threading.Lock()
        self._trainer = None
        self._stopped_gen = 0
        self.prepared = None
        self.view: ViewModel | None = None
        self.sample_seed, self.temperature = 0, 1.0
        self.epochs_total = 0
        self.elapsed, self._clock_running, self._last_tick = 0.0, False, time.monotonic()
        self._plot_dirty, self._last_plot = False, 0.0
        self.finished: TrainingFinished | None = None
        self.error: str | None = None

    # ---- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        with Horizontal(id="main"):
            with Vertical(id="left") as left:
                left.border_title = "loss"
                yield LossPlot(id="plot")
                yield Static("waiting for the first epoch...", id="metrics")
            with Vertical(id="right"):
                with Vertical(id="recon-box") as box:
                    box.border_title = "test digits / reconstructions"
                    yield DigitGrid("reconstructions appear after the first epoch", id="recon")
                with Vertical(id="samples-box") as box:
                    box.border_title = "samples"
                    yield DigitGrid("samples appear after the first epoch", id="samples")
        yield Static("", id="message")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        for grid in self.query(DigitGrid):
            grid.mode = self.digit_mode
        self.status.set(latent=self.latent, state="read-only" if self.read_only else "starting")
        self.set_interval(1 / REDRAW_HZ, self._tick)
        if self.read_only:
            self._open_worker(self.open_dir)
        else:
            self.start_training(self.latent)

    @property
    def status(self) -> StatusBar:
        return self.query_one("#status", StatusBar)

    def say(self, text: str, level: str = "information") -> None:
        style = {"error": "bold red", "warning": "yellow"}.get(level, "")
        prefix = {"error": "error: ", "warning": "warning: "}.get(level, "")
        self.query_one("#message", Static).update(f"[{style}]{prefix}[/]{text}" if style else text)

    # ---- the training thread ----------------------------------------------------------------
    def start_training(self, latent: int) -> None:
        self.generation += 1
        self.latent, self.view, self.finished, self.error = latent, None, None, None
        self.elapsed, self._clock_running = 0.0, False
        self.status.set(latent=latent, epoch="-", rate="-", state="loading")
        self._clear_pictures("appear after the first epoch")
        self.query_one(LossPlot).reset([])
        self.query_one("#metrics", Static).update("waiting for the first epoch...")
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

    # ---- messages from the thread ------------------------------------------------------------
    @on(Ready)
    def handle_ready(self, msg: Ready) -> None:
        if msg.generation != self.generation:
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
            self.status.set(state="training")
            self.say(f"run {p.run_dir} · {p.config.arch.describe()} · {p.data_source}")
        self.query_one(LossPlot).reset(p.history)
        if last:
            self._show_metrics(last)
        if p.params is not None:
            self._new_view(p.params)

    @on(Started)
    def handle_started(self, msg: Started) -> None:
        if msg.generation == self.generation:
            self._clock_running = True
            self._last_tick = time.monotonic()

    @on(Progress)
    def handle_progress(self, msg: Progress) -> None:
        if msg.generation != self.generation:
            return
        e = msg.event
        self.query_one(LossPlot).add_step(e.epoch - 1 + e.step / e.steps_per_epoch, e.loss)
        self._plot_dirty = True
        self.status.set(epoch=f"{e.epoch}/{self.epochs_total} {100 * e.step // e.steps_per_epoch}%",
                        rate=f"{e.examples_per_s:,.0f} ex/s")

    @on(Epoch)
    def handle_epoch(self, msg: Epoch) -> None:
        if msg.generation != self.generation:
            return
        m = msg.event.metrics
        self.query_one(LossPlot).add_epoch(m)
        self._plot_dirty = True
        self._show_metrics(m)
        self.status.set(epoch=f"{m['epoch']}/{self.epochs_total}", rate=f"{m['examples_per_s']:,.0f} ex/s")
        self._new_view(msg.params)

    @on(Info)
    def handle_info(self, msg: Info) -> None:
        self.say(msg.text, msg.level)

    @on(Finished)
    def handle_finished(self, msg: Finished) -> None:
        if msg.generation != self.generation:
            return
        self.finished, self._clock_running = msg.event, False
        state = {"completed": "done", "stopped": "stopped", "diverged": "diverged"}[msg.event.reason]
        self.status.set(state=state)
        self.say(msg.event.message, "error" if msg.event.reason == "diverged" else "information")

    @on(Failed)
    def handle_failed(self, msg: Failed) -> None:
        if msg.generation != self.generation:
            return
        self.error, self._clock_running = msg.text, False
        self.status.set(state="error", device=self.status.fields["device"].replace("starting...", "-"),
                        data=self.status.fields["data"].replace("loading data...", "-"))
        self.say(msg.text, "error")
        self._clear_pictures("unavailable: " + msg.text)

    # ---- drawing -------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        trainer = self.trainer
        if self._clock_running and not (trainer is not None and trainer.paused):
            self.elapsed += now - self._last_tick
            self.status.set(elapsed=format_elapsed(self.elapsed))
        self._last_tick = now
        if self._plot_dirty and now - self._last_plot >= 1 / PLOT_HZ:
            self._plot_dirty, self._last_plot = False, now
            self.query_one(LossPlot).replot()

    def _show_metrics(self, m: dict) -> None:
        self.query_one("#metrics", Static).update(
            f"epoch {m['epoch']}: train {m['train_loss']:.2f} · test {m['test_loss']:.2f} "
            f"= recon {m['test_recon']:.2f} + KL {m['test_kl']:.2f} · active {m['active_units']}/{self.latent}"
            + ("" if m.get("protocol", "continuous") == "continuous" else f" · {m['protocol']}"))

    def _clear_pictures(self, why: str) -> None:
        for grid, what in ((self.query_one("#recon", DigitGrid), "reconstructions"),
                           (self.query_one("#samples", DigitGrid), "samples")):
            grid.set_grid(None)
            grid.set_placeholder(why if why.startswith("unavailable") else f"{what} {why}")

    def _new_view(self, params: np.ndarray) -> None:
        p = self.prepared
        self.view = ViewModel(p.config, params, p.test_x, p.test_y, p.shape)
        if self.view.has_data:
            orig, recon = self.view.reconstructions(8)
            self.query_one("#recon", DigitGrid).set_grid(np.stack([orig, recon]))
        else:
            self.query_one("#recon", DigitGrid).set_placeholder("no test data")
        self._draw_samples()

    def _draw_samples(self) -> None:
        images = self.view.samples(16, seed=self.sample_seed, temperature=self.temperature)
        self.query_one("#samples", DigitGrid).set_grid(images[None])
        self.query_one("#samples-box").border_title = f"samples · seed {self.sample_seed} · T={self.temperature:.1f}"

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

    def action_toggle_ascii(self) -> None:
        self.digit_mode = "ascii" if self.digit_mode == "hifi" else "hifi"
        for screen in self.screen_stack:
            for grid in screen.query(DigitGrid):
                grid.mode = self.digit_mode

    def action_interpolation(self) -> None:
        from .screens.interpolation import InterpolationScreen

        if self._need_view("the interpolation view opens"):
            self.push_screen(InterpolationScreen(self.view, self.digit_mode, seed=self.sample_seed))

    def action_latent_map(self) -> None:
        from .screens.latent_map import LatentMapScreen

        if self._need_view("the latent map opens"):
            self.push_screen(LatentMapScreen(self.view, self.digit_mode))

    def action_help(self) -> None:
        from .screens.help import KEYS, HelpScreen

        self.push_screen(HelpScreen(KEYS))

    def action_choose_latent(self) -> None:
        from .screens.latent import LatentScreen

        if self.read_only:
            self.notify("read-only (--open): start cuvae-tui without --open to train other sizes", severity="warning")
            return
        sizes = sorted(set(PRESET_LATENTS) | {self.latent})
        choices = []
        for z in sizes:
            done = trained_epochs(self.session.run_dir(z))
            note = "(current)" if z == self.latent else f"trained {done} epochs" if done else "new: starts training"
            choices.append((z, note))

        def chosen(latent: int | None) -> None:
            if latent is not None and latent != self.latent:
                self.run_worker(self.switch_latent(latent), group="switch", exclusive=True)

        self.push_screen(LatentScreen(choices, self.latent), chosen)

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
            r = self.query_one("#recon", DigitGrid).grid
            rows = [] if r is None else list(r)
            s = self.query_one("#samples", DigitGrid).grid
            rows += [s[0][:8], s[0][8:16]] if s is not None else []
            found = (rows, ["data", "recon", "samples", ""][: len(rows)], "reconstructions and samples")
            view = "main"
        else:
            found = None
        if not found or not found[0]:
            self.notify("nothing to export yet: wait for the first epoch", severity="warning")
            return
        rows, labels, title = found
        epoch = self.prepared.resumed_epoch if self.read_only else (self.query_one(LossPlot).epochs or [{"epoch": 0}])[-1]["epoch"]
        try:
            path = export_png(rows, labels, title, self.latent, epoch, view)
        except OSError as err:
            self.notify(f"could not write the PNG: {err.strerror}; run cuvae-tui from a writable folder", severity="error")
            return
        self.notify(f"saved {path}")

    async def action_quit(self) -> None:
        if not self.read_only and self.trainer is not None:
            self.say("stopping after the current step; " + QUIT_NOTE)
        await self.stop_training()
        self.exit()


def make_app(argv: list[str] | None = None) -> CuvaeApp:
    """Build the app from command-line arguments (the entry point and the tests use this)."""
    from .options import parse_args

    return app_from_args(parse_args(argv))


def app_from_args(args) -> CuvaeApp:
    mode = "ascii" if args.ascii else "hifi"
    if args.open:
        return CuvaeApp(open_dir=args.open, data_dir=args.data_dir, digit_mode=mode)
    session = Session(args)
    return CuvaeApp(session, latent=session.base_config(args.latent).latent, data_dir=args.data_dir, digit_mode=mode)
