"""Choose the array backend once, at the edge, and pass it in.

``get_backend("cpu"|"gpu"|"auto")`` returns a :class:`Backend` holding the
array module (NumPy or CuPy) and the matching :class:`~cuvae.nn.ops.Ops`. Nothing
else in cuvae imports CuPy, so the NumPy path works where CUDA is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cuvae.errors import BackendError

DEVICES = ("cpu", "gpu", "auto")

_INSTALL_HINT = (
    "pip install 'cuvae[cuda12]' (NVIDIA driver for CUDA 12) or 'cuvae[cuda13]' (CUDA 13): each brings CuPy "
    "with the NVRTC, CUDA headers and cuBLAS it compiles and runs cuvae's kernels with (cupy-cuda12x[ctk])"
)


@dataclass(frozen=True)
class Backend:
    """An array module plus its ops; ``name`` is "cpu" or "gpu"."""

    name: str
    xp: Any
    ops: Any
    device_name: str

    def to_device(self, array: np.ndarray):
        return self.xp.asarray(array)

    def to_host(self, array) -> np.ndarray:
        if self.name == "gpu":
            return self.xp.asnumpy(array)
        return np.array(array)  # a copy, as from the GPU: callers may keep it while training goes on

    def synchronize(self) -> None:
        if self.name == "gpu":
            self.xp.cuda.Device().synchronize()


def set_cpu_threads(n: int) -> None:
    """Use ``n`` threads for BLAS (through threadpoolctl) and for the numba kernels."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise BackendError("--threads needs threadpoolctl to set the BLAS threads: pip install threadpoolctl, "
                           "or set OMP_NUM_THREADS before starting") from None
    threadpool_limits(limits=n, user_api="blas")
    try:
        from cuvae.backends import cpu_ops
    except ImportError:
        return
    if n > cpu_ops.numba.config.NUMBA_NUM_THREADS:
        raise BackendError(f"--threads {n}: numba was started with at most {cpu_ops.numba.config.NUMBA_NUM_THREADS} "
                           f"threads (the CPU count or NUMBA_NUM_THREADS); pass --threads "
                           f"{cpu_ops.numba.config.NUMBA_NUM_THREADS} or less")
    cpu_ops.set_threads(n)


def blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    return max(counts) if counts else None


def _cpu_backend(threads: int | None = None, log: Callable[[str], None] | None = None) -> Backend:
    import platform

    if threads is not None:
        set_cpu_threads(threads)
    try:
        from cuvae.backends.cpu_conv_model import NumbaConvOps as NumbaOps  # NumbaOps + the fused conv VAE
    except ImportError:  # numba is a core dependency; this is the fallback, not the plan
        from cuvae.nn.ops import NumpyOps

        ops, engine = NumpyOps(), "NumPy"
        if log:
            log("numba is not installed: using plain NumPy ops (about 2x slower a step); pip install numba")
    else:
        ops, engine = NumbaOps(), "NumPy + numba kernels"
    n = blas_threads()
    where = platform.processor() or platform.machine()
    blas = f", {n} BLAS thread{'s' if n > 1 else ''}" if n else ""
    return Backend("cpu", np, ops, f"CPU ({where}, {engine}{blas})")


def _gpu_backend() -> Backend:
    try:
        import cupy
    except ImportError:
        raise BackendError(f"--device gpu: CuPy is not installed; {_INSTALL_HINT}; or use --device cpu") from None
    from cuvae.backends import cuda_env

    if not cupy.is_available():
        info = cuda_env.probe(full=False)
        also = cuda_env.compile_missing(info)
        raise BackendError(
            "--device gpu: CuPy is installed but no CUDA device is visible (no NVIDIA GPU or driver, "
            "or CUDA_VISIBLE_DEVICES hides it); check nvidia-smi, or use --device cpu"
            + (f"; missing as well: {' and '.join(also)}: pip install '{cuda_env.extra_for(info)}'" if also else "")
        )
    info = cuda_env.probe(full=False)
    lacking = cuda_env.compile_missing(info)
    if lacking:
        raise BackendError(f"--device gpu: CuPy {cupy.__version__} cannot compile cuvae's kernels without "
                           f"{' and '.join(lacking)}; pip install '{cuda_env.extra_for(info)}' (cupy-cuda"
                           f"{info.get('cupy_major_cuda') or 12}x[ctk] brings them), or use --device cpu")
    from cuvae.backends.cuda_ops import CupyOps

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Backend("gpu", cupy, CupyOps(), f"GPU {cupy.cuda.Device().id} ({name}, CuPy {cupy.__version__})")


def get_backend(device: str = "auto", log: Callable[[str], None] | None = None,
                threads: int | None = None) -> Backend:
    """Resolve ``cpu``, ``gpu`` or ``auto``; ``auto`` says in one line what it picked.

    ``threads`` sets the CPU backend's BLAS and kernel threads (ignored on the GPU).
    """
    if device not in DEVICES:
        raise BackendError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return _cpu_backend(threads, log)
    if device == "gpu":
        return _gpu_backend()
    try:
        backend = _gpu_backend()
    except BackendError:
        backend = _cpu_backend(threads, log)
        if log:
            log(f"device: {backend.device_name} (no usable GPU found; --device gpu says why)")
        return backend
    if log:
        log(f"device: {backend.device_name}")
    return backend
