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

import ctypes
import weakref
from types import SimpleNamespace

import numpy as np

from . import build

GUARD = 256
_GUARD_BYTE, _POISON = 0xA5, 0xFF


class CUDARuntimeError(RuntimeError):
    pass


class CUDADriverError(RuntimeError):
    pass


class CompileException(Exception):
    pass


class CaptureError(CUDARuntimeError):
    pass


# ---- runtime state --------------------------------------------------------------------------------------------
class _Runtime:
    def __init__(self, cache, variant, cublas_lib, mode):
        self.cache, self.variant, self.cublas, self.mode = cache, variant, cublas_lib, mode
        self.runtime = ctypes.CDLL(str(build.build_runtime(cache)))
        self.runtime.cuvae_emu_set_mode(_MODES[mode])
        self.runtime.cuvae_emu_set_ftz(int(build.VARIANTS[variant][1]))
        self.stack = []
        self.null_queue = []  # (seq, fn)
        self.seq = 0
        self.capturing = None  # the stream under capture
        self.allocs = weakref.WeakSet()
        self.counters = {"get_function": {}, "launches": {}, "compiles": 0, "captures": 0, "graph_launches": 0}


_rt: _Runtime | None = None


def _current():
    return _rt.stack[-1] if _rt.stack else Stream.null


def _flush_null(upto=None):
    q = _rt.null_queue
    while q and (upto is None or q[0][0] <= upto):
        _, fn = q.pop(0)
        fn()
    check_guards()


def _submit(stream, fn, what):
    """Run device work ``fn`` on ``stream`` with the stream semantics described in the module doc."""
    if _rt.capturing is not None and stream is _rt.capturing:
        raise CaptureError(f"cudaErrorStreamCaptureUnsupported: {what} on a stream under capture")
    if stream.ptr == 0:
        _rt.seq += 1
        _rt.null_queue.append((_rt.seq, fn))
        return
    if not stream.non_blocking:  # a blocking stream waits for the legacy default stream
        _flush_null()
    fn()


def _host_sync(what):
    """A host read of device memory on the current stream (ndarray.get, cupy.asnumpy, a NumPy ufunc)."""
    s = _current()
    if _rt.capturing is not None and s is _rt.capturing:
        raise CaptureError(f"cudaErrorStreamCaptureUnsupported: {what} on a stream under capture")
    if s.ptr == 0 or not s.non_blocking:
        _flush_null()


def check_guards():
    for a in list(_rt.allocs):
        a.check()


# ---- memory ---------------------------------------------------------------------------------------------------------
class _Alloc:
    def __init__(self, nbytes):
        self.raw = np.full(nbytes + 2 * GUARD, _POISON, np.uint8)
        self.raw[:GUARD] = _GUARD_BYTE
        self.raw[GUARD + nbytes:] = _GUARD_BYTE
        self.nbytes = nbytes

    def check(self):
        lo, hi = self.raw[:GUARD], self.raw[GUARD + self.nbytes:]
        if (lo != _GUARD_BYTE).any() or (hi != _GUARD_BYTE).any():
            side = "before" if (lo != _GUARD_BYTE).any() else "past the end of"
            lo[...] = _GUARD_BYTE
            hi[...] = _GUARD_BYTE
            raise CUDADriverError(f"CUDA_ERROR_ILLEGAL_ADDRESS (emulated memcheck): a write {side} an allocation of "
                                  f"{self.nbytes} bytes")


class MemoryPointer:
    def __init__(self, ptr):
        self.ptr = ptr


class ndarray(np.ndarray):
    """A device array: NumPy memory inside a guarded allocation."""

    def __array_finalize__(self, obj):
        self._alloc = getattr(obj, "_alloc", None)

    @property
    def data(self):
        return MemoryPointer(self.__array_interface__["data"][0])

    def get(self, stream=None):
        _host_sync("ndarray.get")
        return np.array(self.view(np.ndarray), copy=True)

    def __setitem__(self, key, value):
        value = value.view(np.ndarray) if isinstance(value, ndarray) else np.array(value)  # host values: copied now
        base = self.view(np.ndarray)
        _submit(_current(), lambda: base.__setitem__(key, value), "an array assignment")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _host_sync(f"numpy.{ufunc.__name__}")
        conv = [x.view(np.ndarray) if isinstance(x, ndarray) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(x.view(np.ndarray) if isinstance(x, ndarray) else x for x in kwargs["out"])
        res = getattr(ufunc, method)(*conv, **kwargs)
        return _wrap(res) if isinstance(res, np.ndarray) and not isinstance(res, ndarray) else res

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} on a device array (use cupy.asnumpy first)")

    def astype(self, dtype, copy=True):
        return ascontiguousarray(self, dtype) if copy or np.dtype(dtype) != self.dtype else self

    def copy(self, order="C"):
        out = empty(self.shape, self.dtype)
        src, dst = self.view(np.ndarray), out.view(np.ndarray)
        _submit(_current(), lambda: np.copyto(dst, src), "a device copy")
        return out


def _wrap(host: np.ndarray) -> ndarray:
    """A fresh device allocation holding a copy of ``host`` (a host-side helper; no stream semantics)."""
    out = empty(host.shape, host.dtype)
    np.copyto(out.view(np.ndarray), host)
    return out


def empty(shape, dtype=np.float64, order="C"):
    if _rt.capturing is not None:
        raise CaptureError("cudaErrorStreamCaptureUnsupported: memory allocation while a stream is captured")
    shape = (shape,) if np.isscalar(shape) else tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    alloc = _Alloc(nbytes)
    arr = np.ndarray.__new__(ndarray, shape, dtype, buffer=alloc.raw, offset=GUARD)
    arr._alloc = alloc
    _rt.allocs.add(alloc)
    return arr


def _filled(shape, dtype, value):
    out = empty(shape, dtype)
    base = out.view(np.ndarray)
    _submit(_current(), lambda: base.fill(value), "a memset")
    return out


def zeros(shape, dtype=np.float64):
    return _filled(shape, dtype, 0)


def ones(shape, dtype=np.float64):
    return _filled(shape, dtype, 1)


def zeros_like(a, dtype=None):
    return zeros(a.shape, dtype or a.dtype)


def empty_like(a, dtype=None):
    return empty(a.shape, dtype or a.dtype)


def asarray(a, dtype=None):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else ascontiguousarray(a, dtype)
    host = np.array(a, dtype=dtype, copy=True, order="C")  # the host buffer the async copy reads from
    s = _current()
    if _rt.capturing is not None and s is _rt.capturing:
        raise CaptureError("cudaErrorStreamCaptureUnsupported: a host-to-device copy on a stream under capture")
    out = empty(host.shape, host.dtype)
    dst = out.view(np.ndarray)
    _submit(s, lambda: np.copyto(dst, host), "a host-to-device copy")
    return out


def ascontiguousarray(a, dtype=None):
    a = asarray(a)
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    dtype = dtype or a.dtype
    out = empty(a.shape, dtype)
    src, dst = a.view(np.ndarray), out.view(np.ndarray)
    _submit(_current(), lambda: np.copyto(dst, src, casting="unsafe"), "a device copy")
    return out


def asnumpy(a, stream=None):
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def argsort(a, axis=-1):
    out = empty(a.shape, np.int64)
    src, dst = a.view(np.ndarray), out.view(np.ndarray)
    _submit(_current(), lambda: np.copyto(dst, np.argsort(src, axis=axis, kind="stable")), "argsort")
    return out


def _as_strided(x, shape=None, strides=None):
    v = np.lib.stride_tricks.as_strided(x.view(np.ndarray), shape=shape, strides=strides).view(ndarray)
    v._alloc = x._alloc
    return v


def is_available():
    return True


class ElementwiseKernel:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("the emulated device runs step.cu's kernels only, not CuPy elementwise kernels")


# ---- streams, events, graphs ------------------------------------------------------------------------------------
_live_streams: "weakref.WeakSet[Stream]" = weakref.WeakSet()


class Stream:
    _next_ptr = 0x1000
    null: "Stream"

    def __init__(self, null=False, non_blocking=False, ptr=None):
        if null:
            self.ptr = 0
        else:
            Stream._next_ptr += 0x10
            self.ptr = Stream._next_ptr
        self.non_blocking = bool(non_blocking)
        self._graph = None
        _live_streams.add(self)

    def __enter__(self):
        _rt.stack.append(self)
        return self

    def __exit__(self, *exc):
        _rt.stack.pop()

    def synchronize(self):
        if _rt.capturing is self:
            raise CaptureError("cudaErrorStreamCaptureUnsupported: synchronising a stream under capture")
        if self.ptr == 0 or not self.non_blocking:
            _flush_null()
        check_guards()

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event):
        if event.seq is not None:
            _flush_null(event.seq)

    def begin_capture(self, mode=None):
        if self.ptr == 0:
            raise CUDARuntimeError("cudaErrorStreamCaptureUnsupported: the legacy default stream cannot be captured")
        if _rt.capturing is not None:
            raise CUDARuntimeError("cudaErrorIllegalState: a capture is already open")
        _rt.capturing, self._graph = self, Graph()
        _rt.counters["captures"] += 1

    def end_capture(self):
        if _rt.capturing is not self:
            raise CUDARuntimeError("cudaErrorIllegalState: this stream is not capturing")
        graph, self._graph, _rt.capturing = self._graph, None, None
        return graph

    def is_capturing(self):
        return _rt.capturing is self


Stream.null = Stream(null=True)


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.seq = None

    def record(self, stream=None):
        stream = stream or _current()
        # on the default stream the event completes when the work queued so far has run
        self.seq = _rt.seq if stream.ptr == 0 else None

    def synchronize(self):
        if self.seq is not None:
            _flush_null(self.seq)


class Graph:
    def __init__(self):
        self.nodes = []  # (what, fn)

    def launch(self, stream=None):
        stream = stream or _current()
        _rt.counters["graph_launches"] += 1
        nodes = list(self.nodes)

        def run():
            for _, fn in nodes:
                fn()
        _submit(stream, run, "a graph launch")


def get_current_stream():
    return _current()


class Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        if _rt.capturing is not None:
            raise CaptureError("cudaErrorStreamCaptureUnsupported: device synchronisation during a capture")
        _flush_null()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


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
        self._error = _rt.runtime.cuvae_emu_last_error
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
            _rt.counters["launches"][k.name] = _rt.counters["launches"].get(k.name, 0) + 1
            if self._launch(gdim, bdim, ptrs) != 0:
                raise CUDADriverError(f"CUDA_ERROR_LAUNCH_FAILED in {k.name} (emulated): "
                                      f"{self._error().decode(errors='replace')}")
            check_guards()

        s = stream or _current()
        if _rt.capturing is not None and s is _rt.capturing:
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
            if _rt.capturing is not None:
                raise CaptureError("cudaErrorStreamCaptureUnsupported: module load during a capture")
            try:
                path, self._kernels = build.build_kernels(self.code, _rt.cache, _rt.variant)
            except build.BuildError as err:
                raise CompileException(str(err)) from None
            _rt.counters["compiles"] += 1
            self._lib = ctypes.CDLL(str(path))
            for name in self.name_expressions or ():
                if name not in self._kernels:
                    raise CompileException(f"name expression {name!r} is not a kernel of the module")

    def get_function(self, name):
        self._compile()
        c = _rt.counters["get_function"]
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
        run = lambda: _rt.cublas.cuvae_emu_gemm_run(ctypes.byref(copy))  # noqa: E731
        if stream is not None and _rt.capturing is stream:
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


# ---- the module's namespaces --------------------------------------------------------------------------------------
float32, float64, int32, int64, uint32, uint64, uint8, bool_ = (np.float32, np.float64, np.int32, np.int64, np.uint32,
                                                                np.uint64, np.uint8, np.bool_)
lib = SimpleNamespace(stride_tricks=SimpleNamespace(as_strided=_as_strided))
cuda = SimpleNamespace(
    Stream=Stream, Event=Event, Device=Device, get_current_stream=get_current_stream, is_available=is_available,
    runtime=SimpleNamespace(CUDARuntimeError=CUDARuntimeError, getDeviceCount=lambda: 1),
    driver=SimpleNamespace(CUDADriverError=CUDADriverError),
    compiler=SimpleNamespace(CompileException=CompileException),
    device=SimpleNamespace(get_cublas_handle=lambda: None),
)


_MODES = {"fibers": 0, "threads": 1}


def start(cache, variant, cublas_lib, mode="fibers"):
    """(Re)start the emulated device: fresh memory registry, queues and counters.

    ``mode``: how a kernel with barriers runs its block's threads (see cuda_emu.h): "fibers"
    (deterministic turns) or "threads" (one std::thread each, all at once, std::barrier).
    """
    global _rt
    _rt = _Runtime(cache, variant, cublas_lib, mode)
    cublas_lib.cuvae_emu_set_recorder(_recorder_c)
    return _rt


def counters():
    return _rt.counters
