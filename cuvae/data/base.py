"""What every data set shares: the :class:`Dataset` record, size checks, the cache folder.

Imported by :mod:`cuvae.data.mnist` and :mod:`cuvae.data.images`, which import
nothing of each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cuvae.errors import DataError

DATASETS = ("mnist", "fashion-mnist")
DISPLAY = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}


@dataclass
class Dataset:
    name: str                 # "mnist" or "fashion-mnist"
    train_x: np.ndarray       # uint8, (N, 784), C-contiguous
    train_y: np.ndarray       # uint8, (N,)
    test_x: np.ndarray        # uint8, (M, 784)
    test_y: np.ndarray        # uint8, (M,)
    image_shape: tuple        # (28, 28)
    source: str               # one line: what was loaded and from where
    is_subset: bool           # True when the bundled subset is used
    path: str | None = None   # the folder or file it was read from (absolute), for the run's data record

    def record(self) -> dict:
        """Where these data came from and a fingerprint of exactly the examples used (after --train-size
        and --test-size): what a run stores so that a resume can check it trains on the same data."""
        import hashlib

        h = hashlib.sha256()
        for a in (self.train_x, self.train_y, self.test_x, self.test_y):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
        return {"name": self.name, "source": self.source, "path": self.path, "subset": bool(self.is_subset),
                "train": int(len(self.train_x)), "test": int(len(self.test_x)), "sha256": h.hexdigest()}


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/cuvae/<name>`` (``~/.cache/cuvae/<name>`` by default)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "cuvae" / name


def check_size(label: str, n) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise DataError(f"{label} must be a whole number, got {n!r}")
    if n < 1:
        raise DataError(f"{label} must be at least 1, got {n}")


def take(label: str, n, x, y, where: str):
    if n is None:
        return x, y
    if n > len(x):
        raise DataError(f"{label} {n:,} is larger than the {len(x):,} examples available "
                        f"in {where}")
    return x[:n].copy(), y[:n].copy()


def count(n: int, total: int) -> str:
    return f"{n:,}" if n == total else f"first {n:,} of {total:,}"


def prepare_images(images_u8: np.ndarray, binarize: str, dtype) -> np.ndarray:
    """uint8 pixels (or floats already in [0, 1]) -> [0, 1] floats; ``static`` draws one fixed
    Bernoulli sample per pixel."""
    if images_u8.dtype == np.uint8:
        x = images_u8.astype(dtype) * np.asarray(1.0 / 255.0, dtype)
    else:  # the Python API's float arrays
        x = images_u8.astype(dtype, copy=True)
    if binarize == "static":
        x = (np.random.default_rng(20_24).random(x.shape, dtype=np.float32) < x).astype(dtype)
    return x
