"""The emulated device's memory, streams, events and graphs (see cupy_shim for what is modelled and why)."""

from __future__ import annotations

import ctypes
import weakref

import numpy as np

from . import build

_MODES = {"fibers": 0, "threads": 1}
GUARD = 256
_GUARD_BYTE = _POISON = 0xFF  # NaN as float32 and float64, -1 as an integer: a stray read shows too


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
    def __init__(self, cache, variant, cublas_lib, mode, reverse=False):
        self.cache, self.variant, self.cublas, self.mode = cache, variant, cublas_lib, mode
        self.runtime = ctypes.CDLL(str(build.build_runtime(cache)))
        self.runtime.cuvae_emu_set_mode(_MODES[mode])
        self.runtime.cuvae_emu_set_ftz(int(build.VARIANTS[variant][1]))
        self.runtime.cuvae_emu_set_reverse(int(reverse))
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
