"""The training loop: shuffles, steps, evaluates, checkpoints, and emits events.

The trainer knows nothing of terminals: the CLI prints and the TUI draws by
listening to the events of :mod:`cuvae.events`. A UI thread controls it through
:meth:`Trainer.stop`, :meth:`Trainer.pause` and :meth:`Trainer.unpause`.

Randomness: epoch e draws its permutation, eps and binarisation from a generator
seeded with (seed, e), so a run resumed from the checkpoint of epoch e-1
replays epoch e exactly as an uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np

from cuvae.measure import evaluation
from cuvae.backends.backend import Backend
from cuvae.engine import runlock
from cuvae.engine.checkpoint import Checkpoint, save_checkpoint, write_run_config
from cuvae.data.base import prepare_images
from cuvae.data.protocol import protocol, evaluation_images
from cuvae.engine import objective, schedules
from cuvae.engine.config import TrainConfig
from cuvae.engine.events import EpochEnded, Listener, Notice, RunStarted, SamplesReady, StepMetrics, TrainingFinished
from cuvae.errors import CuvaeError
from cuvae.nn.optim import Adam

METRICS = "metrics.jsonl"
PREVIEW = 8  # test digits shown as reconstructions after each epoch
COLLAPSE_MIN_STEPS = 500  # the collapse warning waits for this many steps: early epochs have few active units


def one_line(err: BaseException) -> str:
    """``Type: first non-empty line`` of an exception (just ``Type`` when its message is empty)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:160]}" if lines else type(err).__name__


class Trainer:
    def __init__(self, config: TrainConfig, backend: Backend, dataset, run_dir, *,
                 listeners: list[Listener] = (), resume: Checkpoint | None = None, report_every: float = 0.25,
                 graph: bool = True, tf32: bool = False, own_steps: bool = True):
        """``own_steps=False``: the trainer of one of k models that :class:`cuvae.engine.together.TrainTogether`
        steps together; it opens no device step of its own (and says nothing about one)."""
        self.config, self.backend, self.dataset = config, backend, dataset
        self.run_dir = Path(run_dir)
        self.listeners = list(listeners)
        self.report_every = report_every
        self.dtype = np.dtype(config.dtype)
        xp = self.xp = backend.xp
        from cuvae.engine.memory import check_fits
        from cuvae.engine.provenance import check_same_data

        check_fits(config, backend, len(dataset.train_x) + len(dataset.test_x))
        self.data_record = dataset.record() if hasattr(dataset, "record") else None
        if resume is not None:
            check_same_data(resume.data, dataset, self.run_dir, "--out")
        self._collapse_warned = False

        self.model = config.build_model(backend.ops)
        layout = self.model.layout
        host = resume.params if resume else self.model.initial_params(config.init, config.seed)
        self.params = backend.to_device(host.astype(self.dtype))
        self.grads = xp.zeros_like(self.params)
        self.P, self.G = layout.views(self.params), layout.views(self.grads)
        self.adam = Adam(backend.ops, layout.size, self.dtype, lr=config.lr, eps=config.adam_eps, clip_norm=config.clip_norm)
        if resume:
            self.adam.m[...] = backend.to_device(resume.adam_m.astype(self.dtype))
            self.adam.v[...] = backend.to_device(resume.adam_v.astype(self.dtype))
            self.adam.step_count = resume.adam_step
        self.epoch = resume.epoch if resume else 0

        self.train_x = backend.to_device(prepare_images(dataset.train_x, config.binarize, self.dtype))
        self.test_x = backend.to_device(evaluation_images(dataset.test_x, config.binarize, config.test_binarize, self.dtype))
        self.protocol = protocol(config.binarize, config.test_binarize)
        self._loss_and_grad, self._k = objective.train_step(self.model, config)  # K noise rows per example
        B, L = config.batch_size, config.latent
        self._x = xp.empty((B, self.train_x.shape[1]), self.dtype)
        self._u = xp.empty_like(self._x)
        self._eps = xp.empty((B * self._k, L), self.dtype)
        # GPU, float32 MLP or conv model without clipping: the device-resident step (shuffle, noise, step,
        # Adam on the device, captured in a CUDA graph unless graph=False); anything else takes the loop below
        self._graph, self._tf32 = graph, tf32
        blocker = objective.fused_gpu_blocker(config)
        if backend.name == "gpu" and blocker and own_steps:
            self.emit(Notice(f"the fused GPU step is ReLU, one-sample ELBO, constant lr only; {blocker}: using the plain CuPy step"))
        self._device_wanted = (own_steps and backend.name == "gpu" and self.dtype == np.float32
                               and config.clip_norm is None and type(self.model).__name__ in ("VAE", "ConvVAE")
                               and not blocker)
        self._device_step, self._device_proven = None, False
        self._open_device_step()

        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    # ---- control (safe to call from another thread) ---------------------------
    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def unpause(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def emit(self, event) -> None:
        for listener in self.listeners:
            listener(event)

    # ---- the fused device step: opened here, closed on every way out of run() ------------------
    def _open_device_step(self) -> None:
        if not self._device_wanted or self._device_step is not None:
            return
        if type(self.model).__name__ == "ConvVAE":
            from cuvae.backends.gpu_conv_step import ConvDeviceStep as DeviceStep
        else:
            from cuvae.backends.gpu_step import DeviceStep

        try:
            self._device_step = DeviceStep(
                self.model.arch, self.params, self.grads, self.adam.m, self.adam.v, self.train_x,
                seed=self.config.seed, lr=self.config.lr, beta1=self.adam.beta1, beta2=self.adam.beta2,
                eps=self.adam.eps, binarize=self.config.binarize == "dynamic", graph=self._graph, tf32=self._tf32,
                log=lambda m: self.emit(Notice(m)))
            self._device_proven = False
        except Exception as err:  # e.g. no NVRTC to compile the kernels: the plain CuPy step still works
            self._fall_back(err)

    def _fall_back(self, err: BaseException) -> None:
        """Use the plain CuPy step from now on, saying why in one line."""
        self._device_wanted = False
        self.emit(Notice(f"fused GPU step unavailable ({one_line(err)}); using the plain CuPy step"))

    def close(self) -> None:
        """Wait for the device's queued work and release the fused step (idempotent; run() calls it)."""
        dev, self._device_step = self._device_step, None
        try:
            if dev is not None:
                dev.close()  # synchronises its stream first
            self.backend.synchronize()
        except Exception as err:  # noqa: BLE001 - a broken device: say so, the checkpoint on disk is whole
            self.emit(Notice(f"closing the GPU step failed ({one_line(err)})", "warning"))

    # ---- the loop ----------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_x.shape[0] / self.config.batch_size)

    def run(self) -> TrainingFinished:
        """Train to ``config.epochs``; on any way out (done, stop, divergence, Ctrl-C, error) the device is
        synchronised and the fused step closed, so nothing still writes the parameters once it returns.
        One writer per run directory (the CLI, the UI and the sweep all end up here): runlock."""
        with runlock.hold(self.run_dir):
            try:
                self._open_device_step()  # again after a previous run() closed it
                # a diverging model overflows exp(); that is detected and reported, so NumPy need not warn
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    return self._run()
            finally:
                self.close()

    def _run(self) -> TrainingFinished:
        cfg = self.config
        self._begin()
        if self.epoch >= cfg.epochs:
            self.emit_pictures()
            return self._finish("completed", f"already trained for {_epochs(self.epoch)}; pass a larger --epochs to go on")
        self._warm_up()
        while self.epoch < cfg.epochs:
            result = self._train_epoch(self.epoch + 1)
            if result is not None:
                return result
        self.emit_pictures()
        return self._finish("completed", f"trained {_epochs(self.epoch)}; model in {self.run_dir}")

    def _begin(self) -> None:
        """The run's record before its first step: config.json, metrics trimmed to the checkpoint, RunStarted."""
        cfg = self.config
        self._write(lambda: write_run_config(self.run_dir, cfg, self.data_record), "config.json")
        self._trim_metrics()
        self.emit(RunStarted(str(self.run_dir), cfg.to_dict(), self.backend.device_name, self.dataset.source,
                             self.epoch, self.steps_per_epoch, int(self.train_x.shape[0])))

    def _warm_up(self) -> None:
        """Compile the CPU kernels (numba, on first use) before an epoch's clock starts.

        A step on two examples with zero noise: it writes only the gradient buffer, which
        every real step overwrites, and touches neither the parameters nor any RNG.
        """
        if self._device_step is not None:
            return
        from cuvae.nn.model import free_workspaces

        xp, L = self.xp, self.config.latent
        self.model.loss_and_grad(self.P, self.G, self.train_x[:2].copy(), xp.zeros((2, L), self.dtype), 1.0)
        free_workspaces(self.model, keep=self.config.batch_size)
        scratch = [xp.zeros(8, self.dtype) for _ in range(5)]
        self.backend.ops.adam(*scratch, 1e-3, 0.9, 0.999, 1e-8, 1)

    def _rng(self, epoch: int):
        return np.random.default_rng([self.config.seed, epoch])

    def _beta(self, epoch: int, step: int) -> float:
        cfg = self.config
        if cfg.kl_warmup <= 0:
            return cfg.beta
        progress = (epoch - 1 + step / self.steps_per_epoch) / cfg.kl_warmup
        return cfg.beta * min(1.0, progress)

    def _host_stepper(self, epoch: int):
        """(step(start, b, k), read_sums) for the loop below: the step is built from the backend's ops."""
        xp, backend, cfg = self.xp, self.backend, self.config
        rng = self._rng(epoch)
        perm = backend.to_device(rng.permutation(self.train_x.shape[0]))
        sums = xp.zeros(3, np.float64)  # loss, recon, kl, each summed over examples

        def step(start: int, b: int, k: int) -> None:
            nonlocal sums
            x, eps = self._x[:b], self._eps[:b * self._k]
            xp.take(self.train_x, perm[start : start + b], axis=0, out=x)
            if cfg.binarize == "dynamic":
                u = self._u[:b]
                self._draw(rng.random, u)
                xp.copyto(x, u < x)
            self._draw(rng.standard_normal, eps)
            self.adam.lr = schedules.lr_at(cfg.schedule, cfg.lr, schedules.progress(epoch, k, self.steps_per_epoch, cfg.epochs))
            loss, recon, kl = self._loss_and_grad(self.P, self.G, x, eps, self._beta(epoch, k))
            self.adam.step(self.params, self.grads)
            sums += xp.stack([loss, recon, kl]).astype(np.float64) * b

        return step, lambda: backend.to_host(sums)

    def _device_stepper(self, epoch: int):
        """The same on the device: shuffle keyed by (seed, epoch), sums accumulated on the GPU.

        Until its first step has run and synchronised, a failure of the device step (a kernel that does not
        compile or launch) falls back to the plain step for the whole epoch, from the weights as they were.
        """
        dev = self._device_step
        saved = None if self._device_proven else (self.params.copy(), self.adam.m.copy(), self.adam.v.copy())
        try:
            dev.start_epoch(epoch, [self._beta(epoch, k) for k in range(self.steps_per_epoch)], self.adam.step_count)
        except Exception as err:
            if saved is None:
                raise
            return self._abandon_device(err, saved, epoch)
        current = {}

        def step(start: int, b: int, k: int) -> None:
            if "host" in current:
                return current["host"][0](start, b, k)
            if not self._device_proven:
                try:
                    dev.step(b)
                    dev.synchronize()  # an asynchronous launch failure shows here, not steps later
                except Exception as err:
                    current["host"] = self._abandon_device(err, saved, epoch)
                    return current["host"][0](start, b, k)
                self._device_proven = True
            else:
                dev.step(b)
            self.adam.step_count += 1

        def read_sums():
            return current["host"][1]() if "host" in current else dev.read_sums()[0]

        return step, read_sums

    def _abandon_device(self, err: BaseException, saved, epoch: int):
        """First use failed: restore the weights, close the device step, and give the epoch's plain stepper."""
        self._fall_back(err)
        self.params[...], self.adam.m[...], self.adam.v[...] = saved
        self.close()
        return self._host_stepper(epoch)

    def _train_epoch(self, epoch: int) -> TrainingFinished | None:
        cfg, backend = self.config, self.backend
        n, B = self.train_x.shape[0], cfg.batch_size
        dev = self._device_step
        step_fn, read_sums = self._host_stepper(epoch) if dev is None else self._device_stepper(epoch)
        seen, last_report, paused_for = 0, time.perf_counter(), 0.0
        start = time.perf_counter()
        for step, s in enumerate(range(0, n, B)):
            if not self._running.is_set():
                t0 = time.perf_counter()
                self._running.wait()
                paused_for += time.perf_counter() - t0
            if self._stop.is_set():
                return self._finish("stopped", f"stopped during epoch {epoch}; the checkpoint holds epoch {self.epoch}")
            b = min(B, n - s)
            step_fn(s, b, step)
            seen += b
            now = time.perf_counter()
            if now - last_report >= self.report_every:  # the only host read inside an epoch
                last_report = now
                mean = read_sums() / seen
                if not np.isfinite(mean[0]):
                    return self._diverged(epoch)
                rate = seen / max(now - start - paused_for, 1e-9)
                self.emit(StepMetrics(epoch, step + 1, self.steps_per_epoch, *map(float, mean), rate))
        if self._device_step is not None:
            self._device_step.synchronize()
        backend.synchronize()
        return self._end_epoch(epoch, read_sums() / n, time.perf_counter() - start - paused_for)

    def _end_epoch(self, epoch: int, train, seconds: float) -> TrainingFinished | None:
        """After an epoch's steps (``train``: mean loss, recon, kl): the test figures, the metrics line, the
        checkpoint, the events and pictures; a TrainingFinished if the run diverged."""
        cfg, n, B = self.config, self.train_x.shape[0], self.config.batch_size
        if not np.isfinite(train).all():
            return self._diverged(epoch)
        self.emit(StepMetrics(epoch, self.steps_per_epoch, self.steps_per_epoch, *map(float, train), n / seconds))

        test = evaluation.elbo(self.model, self.P, self.test_x, seed=cfg.seed, keep_batch=B)
        if not np.isfinite(test["test_loss"]):
            return self._diverged(epoch)
        metrics = {
            "epoch": epoch,
            "train_loss": float(train[0]), "train_recon": float(train[1]), "train_kl": float(train[2]),
            "test_loss": test["test_loss"], "test_recon": test["test_recon"], "test_kl": test["test_kl"],
            "active_units": test["active_units"],
            "beta": self._beta(epoch, self.steps_per_epoch),
            "seconds": seconds, "examples_per_s": n / seconds, "protocol": self.protocol, "lr": self.adam.lr,
        }
        if cfg.likelihood == "logistic":  # a probability mass over the 256 levels: a proper bits/dim
            from cuvae.nn.conv_model import bits_per_dim

            metrics["test_bpd"] = bits_per_dim(test["test_loss"], self.model.arch.in_dim)
        # metrics first, checkpoint second: a crash in between leaves a line that resume trims
        def append():
            with open(self.run_dir / METRICS, "a") as f:
                f.write(json.dumps(metrics) + "\n")

        self._write(append, METRICS)
        done = self.epoch
        self.epoch = epoch
        try:
            self.save()
        except OSError as err:
            self.epoch = done
            raise CuvaeError(f"cannot write the checkpoint of epoch {epoch} in {self.run_dir}: {err.strerror or err}; "
                             + (f"the checkpoint of epoch {done} is intact" if done else "no checkpoint was written")
                             + "; free some space") from None
        self.emit(EpochEnded(epoch, metrics, tuple(map(float, test["kl_per_dim"])) if cfg.model == "vae" else ()))
        if (cfg.model == "vae" and test["active_units"] < max(1, cfg.latent // 2) and not self._collapse_warned
                and self.adam.step_count >= COLLAPSE_MIN_STEPS):
            self._collapse_warned = True
            self.emit(Notice(f"only {test['active_units']} of {cfg.latent} latent units are active (posterior collapse) "
                             f"after {self.adam.step_count:,} steps; {collapse_advice(cfg)}"))
        self.emit_pictures()
        return None

    def _draw(self, sample, out) -> None:
        """Fill ``out`` from a NumPy generator method (random, standard_normal), in place on the CPU."""
        if self.backend.name == "cpu" and out.dtype == np.float32:
            sample(out=out, dtype=np.float32)
        else:
            out[...] = self.backend.to_device(sample(out.shape).astype(self.dtype))

    def _diverged(self, epoch: int) -> TrainingFinished:
        kept = f"the checkpoint of epoch {self.epoch} is intact" if self.epoch else "no epoch finished, so nothing was saved"
        return self._finish("diverged", f"the loss became NaN or infinite in epoch {epoch}; lower the learning rate "
                                        f"(--lr {self.config.lr / 10:g}) or add --clip-norm 100; {kept}")

    def _write(self, write, what: str) -> None:
        """A write into the run directory; a full or read-only disk becomes one line naming the file."""
        try:
            write()
        except OSError as err:
            raise CuvaeError(f"cannot write {self.run_dir / what}: {err.strerror or err}; "
                             + (f"the checkpoint of epoch {self.epoch} is intact" if self.epoch else "nothing was trained yet")
                             + "; free some space or pick a folder you can write") from None

    def _finish(self, reason: str, message: str) -> TrainingFinished:
        if self._device_step is not None:  # listeners may read the weights: nothing may still be writing them
            self._device_step.synchronize()
        event = TrainingFinished(reason, self.epoch, message)
        self.emit(event)
        return event

    # ---- state ---------------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        b = self.backend
        return Checkpoint(self.config, b.to_host(self.params), b.to_host(self.adam.m), b.to_host(self.adam.v),
                          self.adam.step_count, self.epoch, self.data_record)

    def save(self) -> None:
        save_checkpoint(self.run_dir, self.checkpoint())

    def _trim_metrics(self) -> None:
        """Keep only metrics lines of epochs the checkpoint holds (a resumed run rewrites the rest)."""
        path = self.run_dir / METRICS
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["epoch"] <= self.epoch:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash
        self._write(lambda: path.write_text("".join(k + "\n" for k in keep)), METRICS)

    def emit_pictures(self) -> None:
        """Reconstructions of the first test digits and samples from the prior, as events."""
        from cuvae.measure.render import to_display

        shape = tuple(self.dataset.image_shape)
        recon = to_display(evaluation.reconstruct(self.model, self.P, self.test_x[:PREVIEW], shape), shape)
        originals = to_display(self.backend.to_host(self.test_x[:PREVIEW]), shape)
        self.emit(SamplesReady("reconstructions", np.concatenate([originals, recon]), self.epoch))
        samples = evaluation.prior_samples(self.model, self.P, 16, seed=self.config.seed, shape=shape)
        self.emit(SamplesReady("samples", to_display(samples, shape), self.epoch))


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def collapse_advice(cfg) -> str:
    """What may help against posterior collapse, for this run's settings."""
    tips = []
    if cfg.lr > 2e-3:
        chapter = " (the chapter's 0.01 collapses this network)" if cfg.recipe == "chapter" and cfg.lr >= 0.01 else ""
        tips.append(f"a lower --lr than {cfg.lr:g}{chapter}, e.g. 1e-3")
    if cfg.beta > 1:
        tips.append(f"a smaller --beta than {cfg.beta:g}")
    if cfg.kl_warmup <= 0:
        tips.append("--kl-warmup 5")
    if cfg.likelihood == "bernoulli" and cfg.arch_type == "conv":
        tips.append("fewer --channels (a strong decoder can ignore the latent code)")
    if not tips:
        return "the unused units carry no information; a smaller --latent gives the same model"
    return "try " + " or ".join(tips)
