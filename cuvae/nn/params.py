"""Flat parameter buffers with named per-layer views.

Parameters, gradients and both Adam moments share one :class:`Layout`: each is
a single contiguous 1-D array, and each layer's weight and bias are views into
it. One fused optimiser pass, one zeroing call, one checkpoint array.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Ordered (name, shape) entries of a flat buffer."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def size(self) -> int:
        return sum(prod(shape) for _, shape in self.entries)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.entries)

    def views(self, flat) -> dict:
        """Name -> view of ``flat`` reshaped to that entry's shape (no copies)."""
        if flat.ndim != 1 or flat.shape[0] != self.size:
            raise ValueError(f"flat buffer has shape {flat.shape}, layout needs ({self.size},)")
        out, offset = {}, 0
        for name, shape in self.entries:
            n = prod(shape)
            out[name] = flat[offset : offset + n].reshape(shape)
            offset += n
        return out

    def describe(self) -> str:
        return ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in self.entries)


INITS = ("pytorch", "glorot")


def init_params(layout: Layout, linears: list[str], init: str, seed: int, dtype=np.float32) -> np.ndarray:
    """Initialise on the host (so NumPy and CuPy start from identical weights).

    ``linears`` names the layers; each has ``<name>.W`` (in, out) and ``<name>.b``.
    - ``glorot``: W ~ U(+-sqrt(6 / (in + out))), b = 0 (the chapter's choice);
    - ``pytorch``: W, b ~ U(+-1/sqrt(in)) (torch.nn.Linear's default).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    rng = np.random.default_rng(seed)
    flat = np.zeros(layout.size, dtype=dtype)
    views = layout.views(flat)
    for name in linears:
        W, b = views[f"{name}.W"], views[f"{name}.b"]
        fan_in, fan_out = W.shape
        if init == "glorot":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, W.shape)
            b[...] = 0.0
        else:
            limit = 1.0 / np.sqrt(fan_in)
            W[...] = rng.uniform(-limit, limit, W.shape)
            b[...] = rng.uniform(-limit, limit, b.shape)
    return flat
