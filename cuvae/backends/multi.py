"""Train k models of one architecture at once (e.g. the seeds of a sweep) in one device step.

At batch 100 one model leaves the GPU nearly idle; k models share every kernel launch and run
their GEMMs batched (cuBLAS strided-batched), so k models cost far less than k runs. All k see
the same batches (the data order of ``seed``); they differ in initialisation (``seeds``) and in
their noise. Parameters and Adam moments are one flat buffer of k * P values, model i at i * P.

    multi = MultiModel(arch, seeds=[0, 1, 2, 3], data=train_x, batch=100)
    for epoch in range(1, 11):
        sums = multi.train_epoch(epoch)      # (k, 3): mean loss, recon, kl of each model
    params_of_2 = multi.params(2)            # host copy, a cuvae.nn.model.VAE's flat layout

``engine="twin"`` runs the same step on the CPU with the kernels' NumPy twins (slow; for tests).
"""

from __future__ import annotations

import math

import numpy as np

from cuvae.backends.gpu_step import DeviceStep
from cuvae.nn.model import Arch
from cuvae.nn.params import init_params


class MultiModel:
    def __init__(self, arch: Arch, seeds, data: np.ndarray, *, batch: int = 100, lr: float = 1e-3, init: str = "glorot",
                 seed: int | None = None, engine: str = "cuda", graph: bool = True, tf32: bool = False,
                 binarize: bool = False, log=None):
        self.arch, self.seeds, self.batch = arch, list(seeds), int(batch)
        self.k = len(self.seeds)
        if self.k < 1:
            raise ValueError("MultiModel needs at least one seed")
        if engine == "cuda":
            import cupy as xp
        else:
            xp = np
        self.xp = xp
        layout = arch.layout()
        names = [name for name, _, _ in arch.linears]
        host = np.concatenate([init_params(layout, names, init, s, np.float32) for s in self.seeds])
        self.flat = xp.asarray(host)
        self.grads, self.m, self.v = xp.zeros_like(self.flat), xp.zeros_like(self.flat), xp.zeros_like(self.flat)
        self.data = xp.ascontiguousarray(xp.asarray(data), dtype=np.float32)  # host or device input
        self.P = layout.size
        self.step = DeviceStep(arch, self.flat, self.grads, self.m, self.v, self.data, k=self.k,
                               seed=self.seeds[0] if seed is None else seed, lr=lr, binarize=binarize, engine=engine,
                               graph=graph, tf32=tf32, log=log)
        self.adam_steps = 0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.shape[0] / self.batch)

    def train_epoch(self, epoch: int, betas=None) -> np.ndarray:
        """One epoch (shuffle included); returns each model's mean (loss, recon, kl), shape (k, 3)."""
        n, B = self.data.shape[0], self.batch
        steps = self.steps_per_epoch
        self.step.start_epoch(epoch, np.ones(steps, np.float32) if betas is None else betas, self.adam_steps)
        for s in range(0, n, B):
            self.step.step(min(B, n - s))
        self.adam_steps += steps
        return self.step.read_sums() / n

    def params(self, i: int) -> np.ndarray:
        """Model i's flat parameters on the host (a cuvae.nn.model.VAE's layout)."""
        p = self.flat[i * self.P:(i + 1) * self.P]
        return p.get() if hasattr(p, "get") else p.copy()

    def close(self) -> None:
        self.step.close()
