"""A stand-in for the part of CuPy that cuvae's GPU path uses, backed by NumPy and the emulated kernels.

Installed as ``sys.modules["cupy"]`` by :func:`tests.emulated_gpu.install`, so cuvae's own
``CudaKernels``, ``CublasGemm`` and ``DeviceStep`` run unchanged. What it models, because the
GPU path depends on it:

- **Device memory**: every array lives in its own allocation with guard bytes on both sides,
  checked after every kernel launch and synchronisation (an out-of-bounds write is an error), and a
  new allocation is filled with NaN bytes (a read of memory nobody wrote shows).
- **Kernel arguments**: ``RawKernel`` calls take CuPy's route: a CuPy array is a pointer, ``None``
  a NULL pointer, a NumPy scalar its own bytes, a Python ``int``/``float`` an int64/float64, a NumPy
  array of more than one element a TypeError. Each marshalled value must then fit the kernel's C
  parameter (size and kind; a pointer's dtype must be the pointee's), which CUDA itself never checks.
  Launch configurations are checked against CUDA's limits.
- **Streams**: work on a non-blocking stream runs at once; work on the legacy default stream is
  queued and runs only when something orders it (a synchronisation, a host read on that stream, a
  blocking stream, or an event waited on), so a missing ``wait_event`` reads stale data here as it
  may on a GPU. Host reads and writes on a stream under capture, and any allocation while a capture
  is open, raise as CUDA does.
- **Graphs**: a capture records kernel launches and GEMMs with their arguments by value; a graph
  launch replays exactly those.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import device
from .device import (CaptureError, CompileException, CUDADriverError, CUDARuntimeError, Device, ElementwiseKernel,
                     Event, Graph, MemoryPointer, Stream, argsort, asarray, ascontiguousarray, asnumpy, check_guards,
                     empty, empty_like, get_current_stream, is_available, ndarray, ones, zeros, zeros_like)
from .kernels import Function, KernelArgumentError, RawModule, _recorder_c

__all__ = [  # what cuvae (and the tests) use as cupy.<name>
    "CaptureError", "CompileException", "CUDADriverError", "CUDARuntimeError", "Device", "ElementwiseKernel",
    "Event", "Graph", "MemoryPointer", "Stream", "argsort", "asarray", "ascontiguousarray", "asnumpy",
    "check_guards", "empty", "empty_like", "get_current_stream", "is_available", "ndarray", "ones", "zeros",
    "zeros_like", "Function", "KernelArgumentError", "RawModule", "float32", "float64", "int32", "int64", "uint32",
    "uint64", "uint8", "bool_", "lib", "cuda", "start", "counters"]

# ---- the module's namespaces --------------------------------------------------------------------------------------
float32, float64, int32, int64, uint32, uint64, uint8, bool_ = (np.float32, np.float64, np.int32, np.int64, np.uint32,
                                                                np.uint64, np.uint8, np.bool_)
lib = SimpleNamespace(stride_tricks=SimpleNamespace(as_strided=device._as_strided))
cuda = SimpleNamespace(
    Stream=Stream, Event=Event, Device=Device, get_current_stream=get_current_stream, is_available=is_available,
    runtime=SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=lambda: 1),
    driver=SimpleNamespace(CUDADriverError=CUDADriverError),
    compiler=SimpleNamespace(CompileException=CompileException),
    device=SimpleNamespace(get_cublas_handle=lambda: None),
)


def start(cache, variant, cublas_lib, mode="fibers", reverse=False):
    """(Re)start the emulated device: fresh memory registry, queues and counters.

    ``mode``: how a kernel with barriers runs its block's threads (see cuda_emu.h): "fibers"
    (deterministic turns; ``reverse``: in descending threadIdx order) or "threads" (one std::thread
    each, all at once, std::barrier).
    """
    device._rt = device._Runtime(cache, variant, cublas_lib, mode, reverse)
    cublas_lib.cuvae_emu_set_recorder(_recorder_c)
    return device._rt


def counters():
    return device._rt.counters
