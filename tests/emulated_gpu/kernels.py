"""Kernels and GEMMs on the emulated device: CuPy's RawModule / Function with CuPy's argument
marshalling checked against each kernel's C parameters, and the reference cuBLAS's capture hook."""

from __future__ import annotations

import ctypes

import numpy as np

from . import build, device
from .device import (CaptureError, CompileException, CUDADriverError, Stream, _current, _flush_null, _live_streams,
                     _submit, check_guards, ndarray)

# ---- kernels --------------------------------------------------------------------------------------------------------
_INT_KINDS = {"int32": "i", "int64": "i", "uint32": "u", "uint64": "u", "float32": "f", "float64": "f"}
_CT = {"float32": ctypes.c_float, "float64": ctypes.c_double, "int32": ctypes.c_int32, "int64": ctypes.c_int64,
       "uint32": ctypes.c_uint32, "uint64": ctypes.c_uint64}


def _marshal(x):
    """What CuPy's kernel launcher turns an argument into: ('ptr', array|0) or ('val', numpy scalar)."""
    if x is None:
        return "ptr", None
    if isinstance(x, ndarray):
        return "ptr", x
    if isinstance(x, np.ndarray):
        if x.size == 1:
            return "val", x.reshape(()).dtype.type(x.reshape(())[()])
        raise TypeError(f"You are trying to pass a numpy.ndarray of shape {x.shape} as a kernel parameter. Only "
                        "numpy.ndarrays of size one can be passed by value. If you meant to pass a pointer to __global__ "
                        "memory, you need to pass a cupy.ndarray instead.")
    if isinstance(x, np.generic):
        return "val", x
    if isinstance(x, int):  # bool included, as in CuPy (int is tested first)
        return "val", np.int64(x)
    if isinstance(x, float):
        return "val", np.float64(x)
    raise TypeError(f"Unsupported type {type(x)}")


class KernelArgumentError(TypeError):
    pass


class Function:
    """One kernel of a RawModule; ``f(grid, block, args)`` as CuPy's RawKernel / Function."""

    def __init__(self, lib, kernel):
        self.kernel = kernel
        self._launch = getattr(lib, f"cuvae_emu_launch_{kernel.name}")
        self._launch.restype = ctypes.c_int
        self._launch.argtypes = [ctypes.POINTER(ctypes.c_uint)] * 2 + [ctypes.POINTER(ctypes.c_void_p)]
        self._error = device._rt.runtime.cuvae_emu_last_error
        self._error.restype = ctypes.c_char_p

    def _dims(self, dims, what, limits):
        if isinstance(dims, int):
            dims = (dims,)
        dims = tuple(dims)
        if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
            raise ValueError(f"{self.kernel.name}: {what} must be 1 to 3 integers, got {dims!r}")
        dims = tuple(int(d) for d in dims) + (1,) * (3 - len(dims))
        for d, lim in zip(dims, limits):
            if not 1 <= d <= lim:
                raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {self.kernel.name} launched with {what} {dims}")
        return dims

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None):
        k = self.kernel
        g = self._dims(grid, "grid", (2**31 - 1, 65535, 65535))
        b = self._dims(block, "block", (1024, 1024, 64))
        if b[0] * b[1] * b[2] > 1024:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: {k.name}: {b} is more than 1024 threads a block")
        args = tuple(args)
        if len(args) != len(k.params):
            raise KernelArgumentError(f"{k.name} takes {len(k.params)} arguments, got {len(args)}")
        values, keep = [], []
        for i, (p, a) in enumerate(zip(k.params, args)):
            kind, v = _marshal(a)
            where = f"{k.name} argument {i} ({p})"
            if p.pointer:
                if kind == "ptr" and v is None:
                    c = ctypes.c_void_p(0)
                elif kind == "ptr":
                    if v.dtype != np.dtype(p.dtype):
                        raise KernelArgumentError(f"{where}: got a {v.dtype} array")
                    if not v.flags.c_contiguous:
                        raise KernelArgumentError(f"{where}: got a non-contiguous array (strides {v.strides})")
                    c = ctypes.c_void_p(v.__array_interface__["data"][0])
                elif v.dtype.itemsize == 8 and v.dtype.kind in "iu" and int(v) == 0:
                    c = ctypes.c_void_p(0)  # an 8-byte zero, CuPy's NULL by value
                else:
                    raise KernelArgumentError(f"{where}: got {type(a).__name__} {a!r} (marshalled as {v.dtype})")
            else:
                if kind != "val":
                    raise KernelArgumentError(f"{where}: got {'an array' if v is not None else 'None'}")
                want = np.dtype(p.dtype)
                if v.dtype.itemsize != want.itemsize or _INT_KINDS.get(v.dtype.name, v.dtype.kind) != _INT_KINDS[want.name]:
                    raise KernelArgumentError(f"{where}: got {type(a).__name__} {a!r}, which CuPy passes as "
                                              f"{v.dtype.itemsize} bytes of {v.dtype}")
                c = _CT[want.name](v.item())
            values.append(c)
        ptrs = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(c), ctypes.c_void_p) for c in values])
        keep = (values, ptrs, args)
        gdim, bdim = (ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(*b)

        def run(keep=keep):
            device._rt.counters["launches"][k.name] = device._rt.counters["launches"].get(k.name, 0) + 1
            if self._launch(gdim, bdim, ptrs) != 0:
                raise CUDADriverError(f"CUDA_ERROR_LAUNCH_FAILED in {k.name} (emulated): "
                                      f"{self._error().decode(errors='replace')}")
            check_guards()

        s = stream or _current()
        if device._rt.capturing is not None and s is device._rt.capturing:
            s._graph.nodes.append((k.name, run))
        else:
            _submit(s, run, f"kernel {k.name}")


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: compiled on first ``get_function``, as CuPy does."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        if code is None:
            raise NotImplementedError("the emulated RawModule takes code=")
        self.code, self.options, self.name_expressions = code, tuple(options), name_expressions
        self._lib = self._kernels = None

    def _compile(self):
        if self._lib is None:
            if device._rt.capturing is not None:
                raise CaptureError("cudaErrorStreamCaptureUnsupported: module load during a capture")
            try:
                path, self._kernels = build.build_kernels(self.code, device._rt.cache, device._rt.variant)
            except build.BuildError as err:
                raise CompileException(str(err)) from None
            device._rt.counters["compiles"] += 1
            self._lib = ctypes.CDLL(str(path))
            for name in self.name_expressions or ():
                if name not in self._kernels:
                    raise CompileException(f"name expression {name!r} is not a kernel of the module")

    def get_function(self, name):
        self._compile()
        c = device._rt.counters["get_function"]
        c[name] = c.get(name, 0) + 1
        if name not in self._kernels:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name})")
        return Function(self._lib, self._kernels[name])


RawKernel = None  # cuvae uses RawModule only


# ---- cuBLAS capture hook --------------------------------------------------------------------------------------
class _Gemm(ctypes.Structure):
    _fields_ = [("ta", ctypes.c_int), ("tb", ctypes.c_int), ("m", ctypes.c_int), ("n", ctypes.c_int),
                ("k", ctypes.c_int), ("alpha", ctypes.c_float), ("beta", ctypes.c_float), ("A", ctypes.c_void_p),
                ("B", ctypes.c_void_p), ("C", ctypes.c_void_p), ("lda", ctypes.c_int), ("ldb", ctypes.c_int),
                ("ldc", ctypes.c_int), ("sa", ctypes.c_longlong), ("sb", ctypes.c_longlong), ("sc", ctypes.c_longlong),
                ("batch", ctypes.c_int)]


_RECORDER_T = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.POINTER(_Gemm))


def _recorder(stream_ptr, call):
    """Called by the reference cuBLAS before each GEMM: 1 = recorded or queued (not run now), 0 = run now."""
    try:
        if stream_ptr == 0:
            stream = Stream.null
        else:
            stream = next((s for s in _live_streams if s.ptr == stream_ptr), None)
        copy = _Gemm.from_buffer_copy(call.contents)
        run = lambda: device._rt.cublas.cuvae_emu_gemm_run(ctypes.byref(copy))  # noqa: E731
        if stream is not None and device._rt.capturing is stream:
            stream._graph.nodes.append(("gemm", run))
            return 1
        if stream_ptr == 0:
            _submit(Stream.null, run, "a GEMM")
            return 1
        if stream is not None and not stream.non_blocking:
            _flush_null()
        return 0
    except Exception as err:  # noqa: BLE001 - never raise through C
        print(f"emulated cuBLAS recorder failed: {err!r}")
        return 0


_recorder_c = _RECORDER_T(_recorder)
