"""One run of a sweep: train it (or resume it, or find it finished) and evaluate it into its row.

Plain data in (:class:`RunSpec`, which pickles into worker processes and Ray tasks), a row out;
nothing here imports NumPy or CuPy at the top (a spawned worker sets its threads and devices first).
"""

from __future__ import annotations

import argparse
import json
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from cuvae.cli.sweep_results import RESULT
from cuvae.errors import CuvaeError

# what a resumed run may not change (the data and the noise it was trained on)
FROZEN = ("recipe", "dataset", "model", "hidden", "latent", "likelihood", "init", "beta", "kl_warmup", "batch_size", "lr",
          "clip_norm", "seed", "binarize", "train_size", "test_size", "dtype")


@dataclass
class RunSpec:
    """One run of a sweep; plain data, so it pickles into worker processes and Ray tasks."""

    run_dir: str
    config: dict
    device: str = "auto"
    data_dir: str | None = None
    iwae_k: int = 100
    eval_seed: int | None = None  # None: each run's own seed (the one its training evaluated with)
    env: dict = field(default_factory=dict)
    tracking: dict = field(default_factory=dict)  # tensorboard, mlflow, mlflow_experiment (cuvae.engine.tracking)
    axes: tuple = ()  # the options besides model, latent and seed that the sweep varies (columns of its tables)
    together: str = "no"  # --seeds-together: auto, yes or no (cuvae.cli.sweep_together)

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


def run_one(spec: RunSpec, listeners=()) -> dict:
    """Train (or resume, or skip) and evaluate one run; returns its row. Never raises: a failure is a row."""
    row = {**blank(spec), "error": "", "likelihood": spec.config.get("likelihood")}
    try:
        row.update(_train_and_evaluate(spec, listeners))
        row["error"] = ""
    except CuvaeError as err:
        row["error"] = str(err)
    except Exception as err:  # noqa: BLE001 - a bug in one run must not stop the sweep
        row["error"] = f"{type(err).__name__}: {err}"
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(spec.run_dir) / "error.log").write_text(traceback.format_exc())
    return row


def _train_and_evaluate(spec: RunSpec, listeners=()) -> dict:
    from cuvae.engine import runlock
    from cuvae.engine.config import TrainConfig

    run_dir = Path(spec.run_dir)
    config = TrainConfig.from_dict(spec.config)
    with runlock.hold(run_dir):  # training, evaluation and result.json: one writer (re-entered by the trainer)
        return _train_and_evaluate_locked(spec, run_dir, config, listeners)


def _train_and_evaluate_locked(spec: RunSpec, run_dir: Path, config, listeners) -> dict:
    from cuvae.backends.backend import get_backend
    from cuvae.engine.trainer import Trainer

    resume, status = resume_state(run_dir, config)
    if status != "done":
        data = load_data(spec, config, resume)
        trainer = Trainer(config, get_backend(spec.device), data, run_dir, resume=resume,
                          listeners=run_listeners(spec, run_dir, listeners))
        result = trainer.run()
        if result.reason != "completed":
            raise CuvaeError(f"{run_dir.name}: {result.message}")
    return evaluated_row(spec, run_dir, config, status)


def resume_state(run_dir: Path, config):
    """(the run's checkpoint or None, "trained" | "resumed" | "done"); a run this sweep may not continue raises."""
    from cuvae.engine.checkpoint import CHECKPOINT, check_same_model, load_checkpoint

    resume = load_checkpoint(run_dir) if (run_dir / CHECKPOINT).exists() else None
    if resume is None:
        return None, "trained"
    stored = resume.config
    check_same_model(stored, config, run_dir)
    diffs = [k for k in FROZEN if getattr(stored, k) != getattr(config, k)]
    if diffs:
        raise CuvaeError(f"{run_dir} was trained with {', '.join(f'{k}={getattr(stored, k)}' for k in diffs)}, this sweep "
                         f"asks for {', '.join(f'{k}={getattr(config, k)}' for k in diffs)}: use a new --out")
    if resume.epoch > config.epochs:
        raise CuvaeError(f"{run_dir} already holds {resume.epoch} epochs, more than --epochs {config.epochs}: "
                         f"pass --epochs {resume.epoch} or use a new --out")
    return resume, "done" if resume.epoch == config.epochs else "resumed"


def load_data(spec: RunSpec, config, resume):
    """The dataset the run trains on (a resumed run's own, from its data record)."""
    from cuvae.data import load_dataset
    from cuvae.engine.provenance import data_dir_for_resume

    run_dir = Path(spec.run_dir)
    data_dir = data_dir_for_resume(resume.data, spec.data_dir, run_dir) if resume is not None else spec.data_dir
    data = load_dataset(config.dataset, data_dir=data_dir, train_size=config.train_size,
                        test_size=config.test_size, progress=False, log=lambda *_: None)
    if config.batch_size > len(data.train_x):
        raise CuvaeError(f"--batch-size {config.batch_size} is larger than the {len(data.train_x)} training examples")
    return data


def run_listeners(spec: RunSpec, run_dir: Path, listeners=()) -> list:
    """What a sweep run writes besides its checkpoint and metrics: pictures, train.log, the trackers."""
    from cuvae.cli.console import PictureWriter
    from cuvae.engine.tracking import tracking_listeners

    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = _LogFile(run_dir / "train.log")
    trackers = tracking_listeners(argparse.Namespace(**spec.tracking), run_dir, warn=log_file.warn,
                                  run_name=f"{run_dir.parent.name}/{run_dir.name}") if spec.tracking else []
    return [PictureWriter(run_dir), log_file, *trackers, *listeners]


def evaluated_row(spec: RunSpec, run_dir: Path, config, status: str) -> dict:
    row = _evaluate(spec, run_dir, config)
    row["status"] = "skipped" if status == "done" and row.pop("_cached") else status
    row.pop("_cached", None)
    return row


class _LogFile:
    """Appends one line per epoch to RUN_DIR/train.log (workers have no terminal)."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, event) -> None:
        from cuvae.cli.console import format_epoch
        from cuvae.engine.events import EpochEnded, Notice

        if isinstance(event, EpochEnded):
            line = format_epoch(event.metrics)
        elif isinstance(event, Notice):
            line = f"warning: {event.message}"
        else:
            return
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def warn(self, message: str) -> None:
        with open(self.path, "a") as f:
            f.write(f"warning: {message}\n")


def _evaluate(spec: RunSpec, run_dir: Path, config) -> dict:
    """The run's evaluation, from RUN_DIR/result.json when it matches (same epoch, k, seed), else computed."""
    from cuvae.atomic import atomic_write_bytes
    from cuvae.cli.evaluate import analyse_run, evaluate_run
    from cuvae.cli.runs import load_run
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.engine.trainer import METRICS

    ckpt = load_checkpoint(run_dir)
    epoch = ckpt.epoch
    eval_seed = config.seed if spec.eval_seed is None else spec.eval_seed
    key = {"epoch": epoch, "iwae_k": spec.iwae_k, "eval_seed": eval_seed, "test_size": config.test_size}
    path = run_dir / RESULT
    if path.exists():
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return {**saved["row"], "_cached": True}
        except (ValueError, KeyError, TypeError):
            pass  # torn or old: evaluate again
    quiet = lambda *_: None  # noqa: E731
    run = load_run(run_dir, device=spec.device, data_dir=spec.data_dir, ckpt=ckpt)  # opened once for both
    ev = evaluate_run(run_dir, iwae_k=spec.iwae_k, seed=eval_seed, pictures=True, log=quiet, progress=False, run=run)
    an = analyse_run(run_dir, seed=eval_seed, run=run)
    seconds, rates = 0.0, []
    metrics = run_dir / METRICS
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            seconds += m["seconds"]
            rates.append(m["examples_per_s"])
    row = {"epochs": epoch, "test_loss": ev["test_loss"], "test_recon": ev["test_recon"], "test_kl": ev["test_kl"],
           "iwae_nll": ev["iwae_nll"], "iwae_k": spec.iwae_k if ev["iwae_nll"] is not None else None,
           "active_units": ev["active_units"], "sharpness": an["sharpness_recon"],
           "sharpness_samples": an["sharpness_samples"], "mutual_info": an["mutual_info"], "marginal_kl": an["marginal_kl"],
           "train_seconds": seconds, "examples_per_s": sum(rates) / len(rates) if rates else None,
           "eval_seed": eval_seed, "likelihood": config.likelihood,
           "data": (ckpt.data or {}).get("source") or ev["data_source"],  # what it trained on
           "protocol": ev["protocol"]}
    atomic_write_bytes(path, lambda f: f.write(json.dumps({"key": key, "row": row}, indent=2).encode()))
    return {**row, "_cached": False}



def blank(spec: RunSpec) -> dict:
    """A failed run's row (the cause goes in "error")."""
    c = spec.config
    return {"model": c["model"], "latent": c["latent"], **{k: c[k] for k in spec.axes}, "seed": c["seed"],
            "run_dir": spec.run_dir, "status": "failed", "epochs": 0}
