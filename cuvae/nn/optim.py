"""Adam over flat buffers, with optional gradient-norm clipping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Adam:
    """Adam with bias correction; ``m`` and ``v`` are flat like the parameters."""

    ops: object
    size: int
    dtype: object
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip_norm: float | None = None
    step_count: int = 0

    def __post_init__(self):
        xp = self.ops.xp
        self.m = xp.zeros(self.size, self.dtype)
        self.v = xp.zeros(self.size, self.dtype)
        self._tmp = xp.empty(self.size, self.dtype)

    def step(self, params, grads) -> None:
        if self.clip_norm is not None:
            xp = self.ops.xp
            norm = xp.sqrt(xp.dot(grads, grads))
            # scale = min(1, clip / norm) without reading the norm on the host
            grads *= xp.minimum(1.0, self.clip_norm / (norm + 1e-6)).astype(self.dtype)
        self.step_count += 1
        self.ops.adam(params, grads, self.m, self.v, self._tmp, self.lr, self.beta1, self.beta2, self.eps, self.step_count)
