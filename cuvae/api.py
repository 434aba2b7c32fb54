"""cuvae from Python or a notebook: :func:`fit` your own arrays, :func:`load` a run, use the :class:`Model`.

The same engine as the command line (trainer, typed events, atomic checkpoints, metrics.jsonl),
so a run made here can be continued with ``cuvae-train --resume`` once its data can be named,
and any run made by ``cuvae-train`` or ``cuvae-tui`` can be loaded here. Every method takes and
returns NumPy arrays whatever the device, and works in batches so memory stays bounded.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Callable

import numpy as np

from cuvae.errors import CuvaeError

BATCH = 1000  # rows per forward pass in the handle's methods
ARRAYS = "arrays"  # the dataset name of a run trained on the caller's arrays
_FIXED = {"dataset", "image_shape", "latent", "hidden", "likelihood", "epochs"}


def _as_rows(x, what: str, in_dim: int | None = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """(N, ...) uint8 images or floats in [0, 1] -> ((N, D) rows of the same dtype, the per-example shape)."""
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise CuvaeError(f"{what} must be an array of shape (N, D) or (N, H, W) with N >= 1, got shape {x.shape}")
    if x.dtype != np.uint8 and x.size:
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise CuvaeError(f"{what} must hold numbers (uint8 images or floats in [0, 1]), got dtype {x.dtype}")
        x = x.astype(np.float32)
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise CuvaeError(f"{what} holds values in [{lo:g}, {hi:g}]; pass floats in [0, 1] or uint8 images (0-255)")
    rows = x.reshape(x.shape[0], -1)
    if rows.shape[1] == 0:
        raise CuvaeError(f"{what} has 0 values per example (shape {x.shape}); each example needs at least one")
    if in_dim is not None and rows.shape[1] != in_dim:
        raise CuvaeError(f"{what} has {rows.shape[1]} values per example; this model takes {in_dim}")
    return np.ascontiguousarray(rows), tuple(x.shape[1:])


def _image_shape(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) for the pictures: images keep theirs; a flat D is a square when it can be, else one row."""
    if len(sample_shape) == 3:
        return tuple(sample_shape)
    if len(sample_shape) == 2:
        return (1, *sample_shape)
    d = sample_shape[0]
    side = math.isqrt(d)
    return (1, side, side) if side * side == d else (1, 1, d)


def _display_shape(image_shape) -> tuple[int, ...]:
    c, h, w = image_shape
    return (h, w) if c == 1 else (c, h, w)


def fit(x_train, x_test=None, *, latent: int = 8, hidden=(256, 128), likelihood: str = "bernoulli", epochs: int = 10,
        device: str = "auto", out=None, on_epoch: Callable | None = None, verbose: bool = True, **options) -> "Model":
    """Train a VAE on your own arrays and return its :class:`Model`.

    ``x_train`` (and ``x_test``): N x D floats in [0, 1], or uint8 images (N x H x W, N x C x H x W, or
    N x D), any D. Without ``x_test`` the per-epoch test figures are computed on the first 1,000
    training examples (and say so in the run's data source). ``options`` are any other training
    options of ``cuvae-train`` by their config names (``batch_size``, ``lr``, ``beta``, ``kl_warmup``,
    ``clip_norm``, ``seed``, ``binarize``, ``model``, ``init``, ``dtype``, ``arch_type``, ``channels``,
    ``recipe``), plus ``threads``. ``out`` is the run directory (default: a new one under ``runs/``).
    ``on_epoch(event)`` gets each :class:`cuvae.engine.events.EpochEnded` as it happens, so a
    notebook can plot while training. Ctrl-C stops after the current step; the handle of the last
    complete epoch is returned.
    """
    from cuvae.backends.backend import get_backend
    from cuvae.data.base import Dataset
    from cuvae.engine.checkpoint import CHECKPOINT
    from cuvae.engine.config import TrainConfig
    from cuvae.engine.events import EpochEnded, Notice
    from cuvae.engine.options import new_run_dir
    from cuvae.engine.trainer import Trainer

    threads = options.pop("threads", None)
    known = {f.name for f in fields(TrainConfig)} - _FIXED
    unknown = sorted(set(options) - known)
    if unknown:
        raise CuvaeError(f"fit() got unknown option(s) {', '.join(unknown)}; the options are: {', '.join(sorted(known))}")
    train_x, sample_shape = _as_rows(x_train, "x_train")
    if x_test is None:
        test_x, source = train_x[:1000], f"arrays ({len(train_x):,} train; test figures on the first {min(len(train_x), 1000):,} of them)"
    else:
        test_x, test_shape = _as_rows(x_test, "x_test", train_x.shape[1])
        source = f"arrays ({len(train_x):,} train / {len(test_x):,} test)"
    recipe = options.pop("recipe", "default")
    image_shape = _image_shape(sample_shape)
    config = TrainConfig.from_recipe(recipe, latent=latent, hidden=tuple(hidden), likelihood=likelihood, epochs=epochs,
                                     dataset=ARRAYS, image_shape=image_shape, **options)
    if config.batch_size > len(train_x):
        raise CuvaeError(f"batch_size {config.batch_size} is larger than the {len(train_x)} training examples")
    run_dir = Path(out) if out is not None else new_run_dir(config)
    if (run_dir / CHECKPOINT).exists():
        raise CuvaeError(f"{run_dir} already holds a checkpoint: open it with cuvae.load({str(run_dir)!r}), "
                         "or pass a new out=")
    labels = lambda n: np.zeros(n, np.uint8)  # noqa: E731 - the engine carries labels; arrays have none
    dataset = Dataset(ARRAYS, train_x, labels(len(train_x)), test_x, labels(len(test_x)),
                      _display_shape(image_shape), source, False)
    say = print if verbose else (lambda *_: None)
    backend = get_backend(device, log=say, threads=threads)

    def listen(event):
        if isinstance(event, EpochEnded):
            m = event.metrics
            say(f"epoch {m['epoch']:>3}/{config.epochs}  train {m['train_loss']:.3f}  test {m['test_loss']:.3f} "
                f"(recon {m['test_recon']:.3f} + KL {m['test_kl']:.3f})  {m['seconds']:.1f} s")
            if on_epoch is not None:
                on_epoch(event)
        elif isinstance(event, Notice):
            say(f"{event.level}: {event.message}")

    trainer = Trainer(config, backend, dataset, run_dir, listeners=[listen])
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        trainer.stop()
        if not (run_dir / CHECKPOINT).exists():
            raise
        say(f"interrupted; returning the model of epoch {trainer.epoch} (checkpoint in {run_dir})")
        return load(run_dir, device=backend.name)
    if result.reason == "diverged":
        raise CuvaeError(result.message)
    return Model(config, backend, trainer.model, trainer.params, run_dir)


def load(run_dir, device: str = "auto") -> "Model":
    """The :class:`Model` of a finished (or interrupted) run, from its checkpoint."""
    from cuvae.backends.backend import get_backend
    from cuvae.engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir)
    backend = get_backend(device, log=None)
    model = ckpt.config.build_model(backend.ops)
    params = backend.to_device(ckpt.params.astype(model.dtype))
    return Model(ckpt.config, backend, model, params, Path(run_dir))


class Model:
    """A trained VAE (or AE): encode, decode, reconstruct, sample, and measure it, on NumPy arrays."""

    def __init__(self, config, backend, model, params, run_dir):
        self.config, self.run_dir = config, Path(run_dir)
        self._backend, self._model = backend, model
        self._params = params
        self._P = model.layout.views(params)

    def __repr__(self) -> str:
        return f"<cuvae.Model {self._model.arch.describe()} on {self._backend.name}, run {self.run_dir}>"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example: reshape ``decode`` and ``sample`` rows with it to draw them."""
        return tuple(self.config.image_shape)

    @property
    def history(self) -> list[dict]:
        """The run's metrics lines (one dict per complete epoch)."""
        path = self.run_dir / "metrics.jsonl"
        out = []
        for line in path.read_text().splitlines() if path.exists() else []:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash
        return out

    # ---- helpers ---------------------------------------------------------------------
    def _device_rows(self, x, what: str = "x"):
        from cuvae.data.base import prepare_images

        rows, _ = _as_rows(x, what, self._model.arch.in_dim)
        return prepare_images(rows, "none", self._model.dtype)

    def _batches(self, n: int):
        for a in range(0, n, BATCH):
            yield a, min(a + BATCH, n)

    def _host(self, a) -> np.ndarray:
        return np.array(self._backend.to_host(a), dtype=np.float32)

    # ---- the model -----------------------------------------------------------------------
    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Means and log-variances of q(z|x), each (N, latent). (An AE's log-variances are zeros.)"""
        rows = self._device_rows(x)
        means, logvars = [], []
        for a, b in self._batches(len(rows)):
            xb = self._backend.to_device(rows[a:b])
            mean, logvar = self._model.encode(self._P, xb, self._model.workspace(b - a))
            means.append(self._host(mean))
            logvars.append(self._host(logvar) if logvar is not None else np.zeros_like(means[-1]))
        return np.concatenate(means), np.concatenate(logvars)

    def decode(self, z) -> np.ndarray:
        """Decoder probabilities (Bernoulli means, or the Gaussian's means) for latent codes z: (N, D) in [0, 1]."""
        z = np.asarray(z, dtype=self._model.dtype)
        L = self._model.arch.latent
        if z.ndim != 2 or z.shape[1] != L:
            raise CuvaeError(f"z must have shape (N, {L}), got {z.shape}")
        out = []
        for a, b in self._batches(len(z)):
            ws = self._model.workspace(b - a)
            logits = self._model.decode(self._P, self._backend.to_device(z[a:b]), ws)
            out.append(self._host(self._model.ops.sigmoid(logits, self._backend.xp.empty_like(logits))))
        return np.concatenate(out) if out else np.zeros((0, self._model.arch.in_dim), np.float32)

    def reconstruct(self, x) -> np.ndarray:
        """Decode the encoder mean of each example; the result has x's shape, values in [0, 1]."""
        shape = np.asarray(x).shape
        return self.decode(self.encode(x)[0]).reshape(shape)

    def sample(self, n: int, temperature: float = 1.0, seed: int | None = None) -> np.ndarray:
        """n draws from the prior N(0, T^2 I), decoded: (n, D) in [0, 1]."""
        if int(n) < 1:
            raise CuvaeError(f"n must be at least 1, got {n}")
        z = np.random.default_rng(seed).standard_normal((int(n), self._model.arch.latent)) * float(temperature)
        return self.decode(z)

    # ---- measures --------------------------------------------------------------------------
    def _measure_rows(self, x):
        from cuvae.data.base import prepare_images

        rows, _ = _as_rows(x, "x", self._model.arch.in_dim)
        return self._backend.to_device(prepare_images(rows, self.config.binarize, self._model.dtype))

    def elbo(self, x, seed: int | None = None) -> dict:
        """Negative ELBO per example in nats, its reconstruction and KL parts, and the active units."""
        from cuvae.measure import evaluation

        r = evaluation.elbo(self._model, self._P, self._measure_rows(x), seed=self.config.seed if seed is None else seed,
                            batch=BATCH)
        return {"negative_elbo": float(r["test_loss"]), "reconstruction": float(r["test_recon"]),
                "kl": float(r["test_kl"]), "active_units": int(r["active_units"])}

    def iwae_nll(self, x, k: int = 1000, seed: int | None = None) -> float:
        """Importance-weighted estimate of -log p(x) in nats per example (k samples each)."""
        from cuvae.measure import evaluation

        if self.config.model != "vae":
            raise CuvaeError("the importance-weighted NLL needs a VAE; an autoencoder has no q(z|x)")
        return evaluation.iwae_nll(self._model, self._P, self._measure_rows(x), k=int(k),
                                   seed=self.config.seed if seed is None else seed)
