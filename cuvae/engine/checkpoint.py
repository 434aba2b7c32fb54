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
CONFIG = "config.json"
FORMAT = 1
ARRAYS = ("params", "adam_m", "adam_v")


@dataclass
class Checkpoint:
    config: TrainConfig
    params: np.ndarray
    adam_m: np.ndarray
    adam_v: np.ndarray
    adam_step: int
    epoch: int
    data: dict | None = None  # the data record (cuvae.engine.provenance); None in checkpoints written before it


def save_checkpoint(run_dir, ckpt: Checkpoint) -> Path:
    run_dir = Path(run_dir)
    meta = {
        "format": FORMAT,
        "config": ckpt.config.to_dict(),
        "epoch": int(ckpt.epoch),
        "adam_step": int(ckpt.adam_step),
        "layout": ckpt.config.arch.layout().describe(),
    }
    if ckpt.data is not None:
        meta["data"] = ckpt.data
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
    write_run_config(run_dir, ckpt.config, ckpt.data)
    return path


def write_run_config(run_dir, config: TrainConfig, data: dict | None) -> None:
    """RUN_DIR/config.json: the config and the data record (written when training starts, so that a run
    stopped before its first checkpoint can be resumed from it)."""
    d = config.to_dict()
    if data is not None:
        d["data"] = data
    atomic_write_bytes(Path(run_dir) / CONFIG, lambda f: f.write((json.dumps(d, indent=2) + "\n").encode()))


def load_run_config(run_dir) -> tuple[TrainConfig, dict | None]:
    """The config and data record of RUN_DIR/config.json (a run with no finished epoch has nothing else)."""
    path = Path(run_dir) / CONFIG
    try:
        d = json.loads(path.read_text())
        if not isinstance(d, dict):
            raise ValueError(f"a JSON {type(d).__name__}, expected an object")
        data = d.get("data")
        return TrainConfig.from_dict(d), data if isinstance(data, dict) else None
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir} holds neither a checkpoint nor a config.json: start a new run with "
                              f"cuvae-train --out {run_dir}") from None
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed content is the same problem for the user
        raise CheckpointError(f"{path} is damaged ({type(err).__name__}: {err}); start a new run with another "
                              "--out") from None


def load_checkpoint(run_dir) -> Checkpoint:
    path = Path(run_dir)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: train one first with cuvae-train --out {path.parent}")
    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"checkpoint {path} {problem}; train again or restore a copy")

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ARRAYS}
    except (zipfile.BadZipFile, ValueError, KeyError, EOFError, OSError, json.JSONDecodeError) as err:
        if "allow_pickle" in str(err):  # NumPy's advice to unpickle: never taken, never passed on
            if zipfile.is_zipfile(path):
                raise bad("holds pickled Python objects, which cuvae never loads") from None
            raise bad("is damaged or not a cuvae checkpoint (not an .npz archive)") from None
        raise bad(f"is damaged or not a cuvae checkpoint ({err})") from None
    if not isinstance(meta, dict):
        raise bad(f"has a meta entry that is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')}, this cuvae reads format {FORMAT}")
    for key, kind in (("config", dict), ("epoch", int), ("adam_step", int)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise bad(f"has a meta entry {key!r} of type {type(meta.get(key)).__name__}, expected {kind.__name__}")
    if meta["epoch"] < 0 or meta["adam_step"] < 0:
        raise bad(f"has a negative epoch or step count ({meta['epoch']}, {meta['adam_step']})")
    try:
        config = TrainConfig.from_dict(meta["config"])
        expected = config.arch.layout().size
    except Exception as err:  # noqa: BLE001 - a config of wrong types or values
        raise bad(f"has a config that cuvae cannot use ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    for key, a in arrays.items():
        if a.dtype.kind != "f":
            raise bad(f"has a {key} array of dtype {a.dtype}, expected floating point")
        if a.shape != (expected,):
            raise bad(f"has a {key} array of shape {a.shape}, but its config ({config.arch.describe()}) needs "
                      f"shape ({expected},)")
    data = meta.get("data")
    return Checkpoint(config, arrays["params"], arrays["adam_m"], arrays["adam_v"], meta["adam_step"], meta["epoch"],
                      data if isinstance(data, dict) else None)


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
