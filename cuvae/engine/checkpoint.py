"""Atomic, pickle-free checkpoints: ``RUN_DIR/checkpoint.npz`` plus ``config.json``.

Written to a temporary file in the same folder, fsync'd, then renamed over the
old one, so a crash or SIGKILL at any moment leaves either the previous
checkpoint or the new one, never a torn file. Loaded with allow_pickle=False.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cuvae.atomic import atomic_write_bytes
from cuvae.engine.config import TrainConfig
from cuvae.errors import CheckpointError

CHECKPOINT = "checkpoint.npz"
FORMAT = 1


@dataclass
class Checkpoint:
    config: TrainConfig
    params: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    adam_step: int
    epoch: int


def save_checkpoint(run_dir, ckpt: Checkpoint) -> Path:
    run_dir = Path(run_dir)
    meta = {
        "format": FORMAT,
        "config": ckpt.config.to_dict(),
        "epoch": int(ckpt.epoch),
        "adam_step": int(ckpt.adam_step),
        "layout": ckpt.config.arch.layout().describe(),
    }
    for stale in run_dir.glob(f".{CHECKPOINT}.tmp-*"):  # left by a killed writer
        stale.unlink(missing_ok=True)

    def write(f):
        np.savez(
            f,
            meta=np.array(json.dumps(meta)),
            params=np.ascontiguousarray(ckpt.params),
            adam_m=np.ascontiguousarray(ckpt.adam_m),
            adam_v=np.ascontiguousarray(ckpt.adam_v),
        )

    path = run_dir / CHECKPOINT
    atomic_write_bytes(path, write)
    atomic_write_bytes(run_dir / "config.json", lambda f: f.write((json.dumps(meta["config"], indent=2) + "\n").encode()))
    return path


def load_checkpoint(run_dir) -> Checkpoint:
    path = Path(run_dir)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train one first with cuvae-train --out {path.parent}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            params, m, v = z["params"], z["adam_m"], z["adam_v"]
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is damaged or not a cuvae checkpoint ({err}); train again or restore a copy") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, this cuvae reads format {FORMAT}")
    config = TrainConfig.from_dict(meta["config"])
    expected = config.arch.layout().size
    if params.shape != (expected,) or m.shape != params.shape or v.shape != params.shape:
        raise CheckpointError(f"checkpoint {path} is inconsistent: {params.shape[0]} parameters stored, its config needs {expected}")
    return Checkpoint(config, params, m, v, int(meta["adam_step"]), int(meta["epoch"]))


def check_same_model(stored: TrainConfig, wanted: TrainConfig, path) -> None:
    """Refuse to load weights into a different architecture, naming both shapes."""
    diffs = [k for k in TrainConfig.ARCH_KEYS if getattr(stored, k) != getattr(wanted, k)]
    if diffs:
        have = ", ".join(f"{k}={_fmt(getattr(stored, k))}" for k in diffs)
        want = ", ".join(f"{k}={_fmt(getattr(wanted, k))}" for k in diffs)
        flags = " ".join(f"--{k.replace('_', '-')} {_fmt(getattr(stored, k), ' ')}" for k in diffs)
        raise CheckpointError(
            f"checkpoint {path} holds a model with {have} ({stored.arch.describe()}), "
            f"but {want} was asked for ({wanted.arch.describe()}): pass {flags} or use a new --out"
        )


def _fmt(value, sep=","):
    return sep.join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
