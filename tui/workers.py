"""The app's background work: the training child's reader, the read-only opener, pictures and diagnostics.

A mixin of :class:`~cuvae_tui.app.CuvaeApp`: each worker runs in a thread and reports only through
messages (:mod:`cuvae_tui.messages`), tagged with the generation of the run they belong to, so a late
message of a stopped run is recognised and dropped. Train steps are not messages: the reader appends
them to the run's step buffer, which the app's redraw timer drains (at most REDRAW_HZ times a second).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from textual import work

from cuvae.engine.events import Notice, RunStarted, StepMetrics, TrainingFinished
from cuvae.errors import CuvaeError

from .diagnostics import IwaeBudget, data_protocol, diagnose
from .messages import Diagnosed, Epoch, Failed, Finished, Info, Pictures, Ready, Started
from .session import ViewModel, open_run, warm_up_views
from .throttle import Newest
from .training import TrainingProcess, lower_priority, start_resource_tracker

RECON, SAMPLES = 8, 16
# An epoch's pictures (and the diagnostics after them) while training: at most once every so many seconds,
# the newest epoch's, and at once at the end of a run or on pause. Drawing every epoch of a fast run
# (small sets, the GPU: several epochs a second) would cost the UI more than it shows.
PICTURES_EVERY = 5.0
# The latent diagnostics while training (they cost about 0.05 CPU s each on MNIST, beside the pictures'):
# at most this often, unless asked for (the d screen opening) or training is over.
DIAGNOSE_EVERY = 10.0


def one_line(err: Exception) -> str:
    return str(err) if isinstance(err, CuvaeError) else f"unexpected {type(err).__name__}: {err}"


def background_priority() -> None:
    """Let the training child (and the UI thread) have the cores first: this thread is niced."""
    lower_priority(10)


class Workers:
    """Mixed into the app, which provides session, generation, prepared, finished, error, queue, read_only,
    start_training and say."""

    def init_workers(self, training: bool) -> None:
        if training:
            start_resource_tracker()  # before Textual owns stderr
        self._lock = threading.Lock()
        self._trainer: TrainingProcess | None = None
        self._stopped_gen = 0
        self.steps: deque = deque()  # the current run's StepMetrics, drained by the redraw timer
        self._diag_busy = False
        self._diagnosed = None  # (generation, epoch, idle) of the last diagnostics started
        self._diagnosed_at = -math.inf
        self._iwae = IwaeBudget()
        self.epoch_pictures = Newest(PICTURES_EVERY)

    @property
    def trainer(self) -> TrainingProcess | None:
        with self._lock:
            return self._trainer

    # ---- training: prepare here, train in the child, read its messages ---------------------------
    @work(thread=True, group="train", exit_on_error=False)
    def _train_worker(self, latent: int, gen: int, steps: deque) -> None:
        post = self.post_message
        try:
            prepared, job = self.session.prepare(latent, log=lambda m: post(Info(m)))
        except Exception as err:  # noqa: BLE001 - shown in the UI, never as a traceback
            post(Failed(one_line(err), gen))
            return
        post(Ready(prepared, gen))
        process = TrainingProcess(job)
        with self._lock:
            if self._stopped_gen >= gen:  # stopped before it started
                return
            self._trainer = process  # a stop from now on reaches the child: it reads the command once up
        # Started outside the lock: spawning sends the job (the whole training set) down a pipe, which
        # takes seconds on a large set, and the UI thread reads self.trainer on every redraw tick.
        try:
            process.start()
        except Exception as err:  # noqa: BLE001
            with self._lock:
                if self._trainer is process:
                    self._trainer = None
            post(Failed(f"could not start the training process: {one_line(err)}", gen))
            return
        try:  # while the child imports and loads (a second or two): its messages wait in the pipe
            warm_up_views(prepared.config, prepared.test_x, prepared.test_y, prepared.shape)
        except Exception:  # noqa: BLE001 - only a head start: the pictures worker reports real failures
            pass
        ended = False
        for kind, *payload in process.messages():
            if kind == "event":
                event = payload[0]
                if isinstance(event, StepMetrics):
                    steps.append(event)
                elif isinstance(event, RunStarted):
                    post(Started(event, gen))
                elif isinstance(event, Notice):
                    post(Info(event.message, event.level))
                elif isinstance(event, TrainingFinished):
                    post(Finished(event, gen))
                    ended = True
            elif kind == "epoch":
                post(Epoch(payload[0], payload[1], gen))
            elif kind == "failed":
                post(Failed(payload[0], gen))
                ended = True
        if not ended:
            post(Failed(f"the training process ended without a word (exit code {process.exitcode}); "
                        "the checkpoint keeps the last complete epoch", gen))

    @work(thread=True, group="train", exit_on_error=False)
    def _open_worker(self, run_dir: Path, data_dir) -> None:
        gen = self.generation
        try:
            self.post_message(Ready(open_run(run_dir, data_dir, log=lambda m: self.post_message(Info(m))), gen))
        except Exception as err:  # noqa: BLE001
            self.post_message(Failed(one_line(err), gen))

    async def stop_training(self) -> None:
        """Ask the child to stop after its current step and wait for it to end."""
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

    # ---- the queue of latent sizes (the compare screen fills it) -------------------------------------
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

    # ---- pictures and diagnostics from an epoch's parameters --------------------------------------
    def picture_epoch(self, params: np.ndarray, gen: int, epoch: int) -> None:
        """An epoch's parameters: drawn now, or kept until PICTURES_EVERY seconds after the last drawing
        (the redraw tick calls :meth:`draw_pending_pictures`); a newer epoch replaces a kept one."""
        self._draw_epoch(self.epoch_pictures.offer((params, gen, epoch), time.monotonic()))

    def draw_pending_pictures(self, at_once: bool = False) -> None:
        now = time.monotonic()
        self._draw_epoch(self.epoch_pictures.take(now) if at_once else self.epoch_pictures.due(now))

    def _draw_epoch(self, item) -> None:
        if item is not None:
            self._pictures_worker(*item)

    @work(thread=True, group="pictures", exclusive=True, exit_on_error=False)
    def _pictures_worker(self, params: np.ndarray, gen: int, epoch: int) -> None:
        background_priority()
        p = self.prepared
        view = ViewModel(p.config, params, p.test_x, p.test_y, p.shape)
        recon = np.stack(view.reconstructions(RECON)) if view.has_data else None
        samples = view.samples(SAMPLES, seed=self.sample_seed, temperature=self.temperature)
        self.post_message(Pictures(view, recon, samples, gen, epoch))

    def refresh_diagnostics(self, now: bool = False) -> None:
        """Diagnostics for the model on screen, when they are shown (the panel at 200x60, the d screen) or
        cost training nothing (read-only, or training over), once per epoch drawn (and once more when
        training is over, with the IWAE), and while training at most every DIAGNOSE_EVERY seconds unless
        ``now``. Called whenever one of those may have changed."""
        from .screens.diagnostics import DiagnosticsScreen

        p, view = self.prepared, self.view
        if view is None or p is None or not view.has_data or p.config.model != "vae" or self._diag_busy:
            return
        idle = self.read_only or self.finished is not None or self.pictured_epoch >= p.config.epochs
        shown = idle or self.has_class("-large") or any(isinstance(s, DiagnosticsScreen) for s in self.screen_stack)
        want = (self.generation, self.pictured_epoch, idle)
        due = idle or now or time.monotonic() - self._diagnosed_at >= DIAGNOSE_EVERY
        if shown and due and self._diagnosed != want:
            self._diagnosed, self._diag_busy, self._diagnosed_at = want, True, time.monotonic()
            self._diagnostics_worker(view, self.generation, self.pictured_epoch, p.eval_x, data_protocol(p.config), idle)

    @work(thread=True, group="diagnostics", exit_on_error=False)
    def _diagnostics_worker(self, view, gen, epoch, x, protocol, idle) -> None:
        try:
            background_priority()
            iwae = self._iwae
            d = diagnose(view, x, epoch, protocol,
                         iwae=lambda cheap: iwae.due(time.monotonic(), idle=idle, surgery_seconds=cheap))
            if d.iwae_nll is not None:
                iwae.record(time.monotonic(), d.seconds["iwae"])
        except Exception as err:  # noqa: BLE001 - diagnostics never stop training
            self._diag_busy = False
            self.post_message(Info(f"diagnostics failed: {type(err).__name__}: {err}", "warning"))
            return
        self._diag_busy = False  # before the message: its handler may start the next epoch's
        self.post_message(Diagnosed(d, gen))
