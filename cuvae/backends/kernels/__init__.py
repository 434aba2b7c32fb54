"""CUDA sources of cuvae's fused kernels (``step.cu``; the conv model's in ``conv.cu``) and their NumPy
twins (:mod:`.twins`, :mod:`.conv_twins`).

Nothing here imports CuPy: :mod:`cuvae.backends.cuda_ops` compiles the source (``DeviceStep``
does so when it is built). ``OPTIONS`` are the NVRTC options of that compile, which
``tests/test_kernel_compile.py`` uses too; :func:`constants` reads the block sizes ``step.cu``
defines, so a launch and the kernel it launches share one number.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

KERNELS = ("normal_philox", "philox_keys", "gather_rows", "bias_act", "relu_back_bias_grad", "col_reduce", "recon_fwd_grad", "reparam",
           "latent_backward", "finish_step", "advance", "adam_flat")

CONV_KERNELS = ("im2col_nhwc", "col2im_nhwc", "gather_index", "pixel_nll_grad", "pixel_finish")  # conv.cu

OPTIONS = ("-std=c++17",)  # NVRTC options (CuPy adds the architecture of the device)


@lru_cache(maxsize=None)
def source(name: str = "step.cu") -> str:
    return (Path(__file__).with_name(name)).read_text()


def constants(code: str | None = None) -> dict[str, int]:
    """The integer ``#define`` s of the kernel source (block sizes, state slots): name -> value."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define\s+(\w+)\s+(\d+)\b", source() if code is None else code, re.M)}
