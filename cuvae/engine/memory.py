"""How much memory a training run needs, checked before anything large is allocated.

A rough lower bound: parameters, gradients and Adam's two moments, the data as floats
and one batch of activations. An absurd size (``--hidden 100000 100000``) is refused in
one line with the figure, instead of a MemoryError deep inside NumPy, or the kernel's
OOM killer, minutes later.
"""

from __future__ import annotations

import os

from cuvae.errors import CuvaeError


def needed_bytes(config, n_examples: int) -> int:
    import numpy as np

    item = np.dtype(config.dtype).itemsize
    arch = config.arch
    n_params = arch.layout().size
    in_dim = int(np.prod(config.image_shape))
    widths = in_dim * 3 + 2 * sum(getattr(arch, "hidden", ()) or ()) + 3 * config.latent
    return item * (4 * n_params + n_examples * in_dim + 3 * config.batch_size * widths)


def available_bytes(backend) -> tuple[int | None, str]:
    """(bytes free for the run, where), or (None, ...) when it cannot be told."""
    if getattr(backend, "name", "cpu") == "gpu":
        try:
            free, _total = backend.xp.cuda.runtime.memGetInfo()
            return int(free), "free on the GPU"
        except Exception:  # noqa: BLE001 - no figure: do not guess
            return None, ""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on this machine"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "in this machine"
    except (ValueError, OSError, AttributeError):
        return None, ""


def _gb(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**28 else f"{n / 2**20:,.0f} MiB"


def check_fits(config, backend, n_examples: int) -> None:
    need = needed_bytes(config, n_examples)
    have, where = available_bytes(backend)
    if have is not None and need > have:
        n_params = config.arch.layout().size
        raise CuvaeError(f"{config.arch.describe()} has {n_params:,} parameters and would need at least {_gb(need)} "
                         f"of memory, but {_gb(have)} is {where}; choose smaller --hidden/--channels/--latent "
                         f"or --batch-size, or a smaller --train-size")
