"""The engine seen from the UI: run directories per latent size, trainers, and a view model.

No Textual here. :class:`Session` turns the command line into prepared runs and the jobs the
training child builds its Trainer from (one run directory per latent size, resumed from its
checkpoint when there is one);
:class:`ViewModel` draws pictures with its *own* model object over a host copy of
the parameters, so the UI thread never touches the trainer's buffers.
"""

from __future__ import annotations

import argparse
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cuvae.measure import views
from cuvae.errors import CuvaeError

PRESET_LATENTS = (2, 5, 8, 20)


def data_label(dataset, train_examples: int | None = None) -> str:
    """A short name for the status line: which data, how many train/test, whether it is the offline subset.

    ``train_examples`` is what the trainer really uses (its RunStarted event), when known.
    """
    from cuvae.data import DISPLAY

    name = DISPLAY.get(dataset.name, dataset.name)
    train = len(dataset.train_x) if train_examples is None else train_examples
    n = f"{train:,} train/{len(dataset.test_x):,} test"
    return f"{name} bundled subset {n} (offline)" if dataset.is_subset else f"{name} {n}"


def run_prefix(config) -> str:
    return f"{config.recipe}-{config.dataset}-{config.model}-z"


def trained_sizes(runs, prefix: str) -> dict[int, Path]:
    """Latent size -> run directory for every run under ``runs`` named prefix<size> with a checkpoint."""
    out = {}
    runs = Path(runs)
    if runs.is_dir():
        for d in runs.iterdir():
            tail = d.name[len(prefix):]
            if d.name.startswith(prefix) and tail.isdigit() and (d / "checkpoint.npz").exists():
                out[int(tail)] = d
    return dict(sorted(out.items()))


def latent_choices(session, current: int) -> list[tuple[int, str]]:
    """The picker's rows: the presets, every size already trained in the runs folder, and the current one."""
    trained = trained_sizes(session.runs, run_prefix(session.base_config(current)))
    choices = []
    for z in sorted(set(PRESET_LATENTS) | set(trained) | {current}):
        done = trained_epochs(session.run_dir(z))
        note = "(current)" if z == current else f"trained {done} epochs" if done else "new: starts training"
        choices.append((z, note))
    return choices


def read_history(run_dir) -> list[dict]:
    """The metrics lines of a run (one dict per complete epoch); torn lines are skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def trained_epochs(run_dir) -> int | None:
    """Epochs held by the checkpoint in run_dir, None if there is none (or it is unreadable)."""
    from cuvae.engine.checkpoint import load_checkpoint

    if not (Path(run_dir) / "checkpoint.npz").exists():
        return None
    try:
        return load_checkpoint(run_dir).epoch
    except CuvaeError:
        return None


@dataclass
class Prepared:
    """Everything the UI needs before training starts (all host data)."""

    latent: int
    run_dir: Path
    config: object  # TrainConfig
    device: str
    data_label: str
    data_source: str
    test_x: np.ndarray  # (N, 784) float32 in [0, 1]
    test_y: np.ndarray
    shape: tuple
    eval_x: np.ndarray  # the diagnostics' fixed subset, prepared as the trainer prepares its test set
    params: np.ndarray | None  # the checkpoint's parameters when resuming
    history: list[dict]
    resumed_epoch: int
    dataset: object = None  # the host Dataset (None without data): its label is redrawn with the trainer's count


class Session:
    """Builds trainers from the parsed command line; one run directory per latent size."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.runs = Path(args.runs)
        self._lock = threading.Lock()
        self._datasets: dict = {}

    def base_config(self, latent: int):
        from cuvae.engine.options import config_from_args

        return config_from_args(replace_ns(self.args, latent=latent))

    def run_dir(self, latent: int) -> Path:
        c = self.base_config(latent)
        return self.runs / f"{run_prefix(c)}{latent}"

    def dataset(self, config, log=None, data_dir=None):
        from cuvae.data import load_dataset

        data_dir = self.args.data_dir if data_dir is None else data_dir  # a resumed run: where its data came from
        key = (config.dataset, config.train_size, config.test_size, str(data_dir))
        with self._lock:
            if key not in self._datasets:
                self._datasets[key] = load_dataset(config.dataset, data_dir=data_dir,
                                                   train_size=config.train_size, test_size=config.test_size,
                                                   progress=False, log=log or (lambda m: None))
            return self._datasets[key]

    def prepare(self, latent: int, log=None):
        """(Prepared, TrainJob): the UI's host data and the child's recipe for the Trainer (the backend is
        chosen there, so the UI process never opens the GPU); raises CuvaeError on bad input."""
        from cuvae.engine.checkpoint import CHECKPOINT, load_checkpoint
        from cuvae.engine.options import resumed_config
        from cuvae.data.base import prepare_images
        from .training import TrainJob

        run_dir = self.run_dir(latent)
        resume = None
        if (run_dir / CHECKPOINT).exists():
            resume = load_checkpoint(run_dir)
            try:
                config = resumed_config(replace_ns(self.args, latent=latent, resume=run_dir), resume.config)
            except CuvaeError as err:
                raise CuvaeError(f"{err} (cuvae-tui has no --out: pass another --runs DIR)") from None
        else:
            config = self.base_config(latent)
        from cuvae.engine.provenance import data_dir_for_resume

        dataset = self.dataset(config, log, data_dir_for_resume(resume.data, self.args.data_dir, run_dir) if resume else None)
        if config.batch_size > len(dataset.train_x):
            raise CuvaeError(f"--batch-size {config.batch_size} is larger than the {len(dataset.train_x)} "
                             "training examples; pass a smaller --batch-size or a larger --train-size")
        prepared = Prepared(latent, run_dir, config, "starting...", data_label(dataset), dataset.source,
                            prepare_images(dataset.test_x, "none", np.float32), dataset.test_y,
                            tuple(dataset.image_shape), eval_subset(dataset.test_x, config), None if resume is None else resume.params.copy(),
                            read_history(run_dir) if resume else [], resume.epoch if resume else 0, dataset)
        return prepared, TrainJob(config, dataset, run_dir, resume, self.args.device)


def open_run(run_dir, data_dir=None, log=None) -> Prepared:
    """A finished run, read-only: its checkpoint, metrics and test data (CPU only)."""
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.data import load_dataset
    from cuvae.data.base import prepare_images

    run_dir = Path(run_dir)
    ckpt = load_checkpoint(run_dir)
    c = ckpt.config
    try:
        ds = load_dataset(c.dataset, data_dir=data_dir, train_size=c.train_size, test_size=c.test_size,
                          progress=False, log=log or (lambda m: None))
        test_x, test_y = prepare_images(ds.test_x, "none", np.float32), ds.test_y
        eval_x = eval_subset(ds.test_x, c)
        trained = (ckpt.data or {}).get("train")  # what the run trained on, from its data record
        label, source, shape = data_label(ds, trained), ds.source, tuple(ds.image_shape)
    except CuvaeError as err:  # samples still work without data
        if log:
            log(f"no test data, so no reconstructions, interpolation or map: {err}")
        test_x, test_y = np.zeros((0, 784), np.float32), np.zeros(0, np.uint8)
        eval_x = test_x
        label, source, shape = "no data", str(err), (28, 28)
    return Prepared(c.latent, run_dir, c, "read-only (CPU views)", label, source, test_x, test_y, shape, eval_x,
                    ckpt.params.copy(), read_history(run_dir), ckpt.epoch)


def eval_subset(test_u8: np.ndarray, config) -> np.ndarray:
    """The first diagnostics.SUBSET test images, binarised (or not) exactly as the trainer's test set."""
    from cuvae.data.base import prepare_images
    from .diagnostics import SUBSET

    return prepare_images(test_u8, config.binarize, np.float32)[:SUBSET]


def replace_ns(ns: argparse.Namespace, **changes) -> argparse.Namespace:
    d = vars(ns).copy()
    d.update(changes)
    return argparse.Namespace(**d)


def warm_up_views(config, test_x: np.ndarray, test_y: np.ndarray, shape) -> None:
    """Load the CPU backend and the kernels the pictures use (numba's disk cache) now, at the caller's
    priority: the first ViewModel costs about 0.4 CPU s, which the niced pictures worker, beside the
    training child, took seconds of wall time to get (the first epoch's digits came late)."""
    from cuvae.backends.backend import get_backend

    model = replace(config, dtype="float32").build_model(get_backend("cpu").ops)
    view = ViewModel(config, np.zeros(model.layout.size, np.float32), test_x[:2], test_y[:2], shape)
    if view.has_data:
        view.reconstructions(2)
    view.samples(2)


class ViewModel:
    """Pictures from a parameter snapshot on a separate CPU model (safe to use while training runs)."""

    def __init__(self, config, params: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, shape=(28, 28)):
        from cuvae.backends.backend import get_backend

        cpu_config = replace(config, dtype="float32")
        self.model = cpu_config.build_model(get_backend("cpu").ops)
        self.params = np.ascontiguousarray(params, np.float32)
        self.P = self.model.layout.views(self.params)
        self.test_x, self.test_y, self.shape = test_x, test_y, tuple(shape)

    @property
    def latent(self) -> int:
        return self.model.arch.latent

    @property
    def has_data(self) -> bool:
        return len(self.test_x) > 0

    def samples(self, n=16, seed=0, temperature=1.0) -> np.ndarray:
        return views.samples(self.model, self.P, n, seed=seed, temperature=temperature, shape=self.shape)

    def reconstructions(self, n=8) -> tuple[np.ndarray, np.ndarray]:
        return views.reconstructions(self.model, self.P, self.test_x[:n], shape=self.shape)

    def interpolate(self, a: int, b: int, steps=10, mode="linear") -> np.ndarray:
        return views.interpolate(self.model, self.P, self.test_x[a], self.test_x[b], steps, mode=mode, shape=self.shape)

    def manifold(self, n=9) -> np.ndarray:
        x = self.test_x[:1000] if self.has_data else None
        return views.manifold(self.model, self.P, n, x=x, shape=self.shape)

    def scatter(self, n=1000) -> tuple[np.ndarray, np.ndarray]:
        return views.latent_scatter(self.model, self.P, self.test_x[:n]), self.test_y[:n]
