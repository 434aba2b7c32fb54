"""An emulated CUDA device for the test suite: step.cu (and conv.cu) compiled by g++ behind ``cuda_emu.h``, a
reference cuBLAS in C (``cublas_ref.c``) and a NumPy-backed CuPy stand-in (``cupy_shim.py``), so cuvae's
own ``CudaKernels``, ``CublasGemm`` and ``DeviceStep`` run unchanged on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import sys

from . import build, cupy_shim


def install(monkeypatch, cache, variant="ieee", mode="fibers", reverse=False):
    """Make ``import cupy`` give the stand-in and import cuvae's CUDA modules afresh against it.

    Returns ``(shim, cuda_ops)``; monkeypatch undoes everything at the end of the test.
    """
    cublas_path = build.build_cublas(cache)
    cublas = ctypes.CDLL(str(cublas_path))
    cupy_shim.start(cache, variant, cublas, mode, reverse)
    monkeypatch.setitem(sys.modules, "cupy", cupy_shim)
    monkeypatch.delitem(sys.modules, "cuvae.backends.cuda_ops", raising=False)
    import cuvae.backends.cuda_ops as cuda_ops

    monkeypatch.setitem(sys.modules, "cuvae.backends.cuda_ops", cuda_ops)
    monkeypatch.delitem(sys.modules, "cuvae.backends.cuda_conv_ops", raising=False)  # built on cuda_ops: afresh too
    import cuvae.backends.cuda_conv_ops as cuda_conv_ops

    monkeypatch.setitem(sys.modules, "cuvae.backends.cuda_conv_ops", cuda_conv_ops)
    # CublasGemm's own search would also find a real libcublas a GPU test loaded earlier: use ours
    monkeypatch.setattr(cuda_ops, "find_cublas", lambda: [str(cublas_path)])
    return cupy_shim, cuda_ops


def start(monkeypatch, cache, variant="ieee", mode="fibers", code=None, conv_code=None, reverse=False):
    """:func:`install`, with step.cu (``code``) or conv.cu (``conv_code``) replaced by the given source
    (negative controls, compile failures); returns the shim."""
    shim, cuda_ops = install(monkeypatch, cache, variant, mode, reverse)
    if code is not None:
        monkeypatch.setattr(cuda_ops, "source", lambda: code)
    if conv_code is not None:
        import cuvae.backends.cuda_conv_ops as cuda_conv_ops

        monkeypatch.setattr(cuda_conv_ops, "conv_source", lambda: conv_code)
    return shim
