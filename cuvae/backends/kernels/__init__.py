"""CUDA sources of cuvae's fused kernels (``step.cu``) and their NumPy twins (:mod:`.twins`).

Nothing here imports CuPy: :mod:`cuvae.backends.cuda_ops` compiles the source lazily, on first use.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

KERNELS = ("normal_philox", "philox_keys", "gather_rows", "bias_act", "relu_back_bias_grad", "col_reduce", "recon_fwd_grad", "reparam",
           "latent_backward", "finish_step", "advance", "adam_flat")


@lru_cache(maxsize=None)
def source(name: str = "step.cu") -> str:
    return (Path(__file__).with_name(name)).read_text()
