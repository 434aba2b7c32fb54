"""CuPy backend: :class:`CupyOps`, the fused kernels of ``kernels/step.cu``, and cuBLAS through ctypes.

- :class:`CupyOps` runs :class:`~cuvae.nn.ops.NumpyOps`' code on CuPy and overrides hot ops with
  elementwise kernels (each one's twin is the NumpyOps method it overrides).
- :class:`CudaKernels` launches the kernels of ``step.cu`` with the signatures of their NumPy
  twins in :mod:`cuvae.backends.kernels.twins` (grid and block are chosen here, with the block sizes
  ``step.cu`` defines); :meth:`CudaKernels.compile` compiles them all at once.
- :class:`CublasGemm` calls ``cublasSgemm_v2`` / ``cublasSgemmStridedBatched`` through ctypes,
  which (unlike ``cupy.matmul``) can be captured in a CUDA graph; :class:`cuvae.backends.gpu_step.ArrayGemm`
  is the same interface on ``xp.matmul``.

Importing this module imports CuPy; :mod:`cuvae.backends.backend` does so only for ``--device gpu``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
from functools import cached_property

import cupy
import numpy as np

from cuvae.backends.kernels import KERNELS, OPTIONS, constants, source
from cuvae.nn.ops import NumpyOps


# ---- CupyOps: the generic (uncaptured) path ------------------------------------------------------------
class CupyOps(NumpyOps):
    """The same ops on CuPy; float32/float64 elementwise kernels where NumPy would make temporaries."""

    xp = cupy

    def __init__(self):
        self.xp = cupy

    @cached_property
    def _k(self):
        ek = cupy.ElementwiseKernel
        return {
            "relu_backward": ek("T h", "T dh", "dh = h > 0 ? dh : (T)0", "cuvae_relu_backward"),
            "sse_grad": ek("T l, T x, T s2", "T d",
                           "T y = (T)0.5 * tanh((T)0.5 * l) + (T)0.5; d = s2 * ((y - x) * ((T)1 - y) * y)",
                           "cuvae_sse_grad"),
            "bernoulli_nll_grad": ek("T l, T x, T s", "T d", "d = s * ((T)0.5 * tanh((T)0.5 * l) + (T)0.5 - x)",
                                     "cuvae_bernoulli_nll_grad"),
            "adam": ek("T g, T b1, T b2, T inv_sqrt_bc2, T eps, T step_size", "T p, T m, T v",
                       "T mi = b1 * m + ((T)1 - b1) * g; T vi = b2 * v + ((T)1 - b2) * (g * g); m = mi; v = vi; "
                       "p -= step_size * (mi / (sqrt(vi) * inv_sqrt_bc2 + eps))", "cuvae_adam"),
        }

    def relu_backward(self, dh, h):
        self._k["relu_backward"](h, dh)
        return dh

    def sse_grad(self, logits, x, scale, dlogits):
        self._k["sse_grad"](logits, x, dlogits.dtype.type(2.0 * scale), dlogits)
        return dlogits

    def bernoulli_nll_grad(self, logits, x, scale, dlogits):
        self._k["bernoulli_nll_grad"](logits, x, dlogits.dtype.type(scale), dlogits)
        return dlogits

    def adam(self, p, g, m, v, tmp, lr, beta1, beta2, eps, step):
        t = p.dtype.type
        bc1, bc2 = 1.0 - beta1**step, 1.0 - beta2**step
        self._k["adam"](g, t(beta1), t(beta2), t(1.0 / np.sqrt(bc2)), t(eps), t(lr / bc1), p, m, v)


# ---- the fused step kernels --------------------------------------------------------------------------------
def _blocks(n, threads=256):
    return (int((n + threads - 1) // threads),), (threads,)


_NULL = np.uint64(0)


class CudaKernels:
    """``step.cu``'s kernels behind their twins' signatures (cuvae.backends.kernels.twins); float32 arrays.

    ``code``: the CUDA source (default ``step.cu``); its ``#define`` d block sizes set the launches.
    """

    xp = cupy

    def __init__(self, code: str | None = None):
        self.code = source() if code is None else code
        c = constants(self.code)
        self.recon_threads, self.finish_threads = c["RECON_THREADS"], c["FINISH_THREADS"]
        self.bias_block = (c["BIAS_COLS"], c["BIAS_ROWS"])
        self._module = None
        self._fns = {}
        self._partial = cupy.empty(self.PARTIAL, cupy.float32)

    def compile(self) -> None:
        """Compile and load every kernel now (CuPy would on first use: inside an epoch, or a graph capture)."""
        for name in KERNELS:
            self._fn(name)

    def _fn(self, name):
        fn = self._fns.get(name)
        if fn is None:
            if self._module is None:
                self._module = cupy.RawModule(code=self.code, options=OPTIONS)
            fn = self._fns[name] = self._module.get_function(name)
        return fn

    def normal_philox(self, out, n, counter, key, stream):
        self._fn("normal_philox")(*_blocks((n + 3) // 4), (out, np.int64(n), counter, key, np.uint32(stream)))

    def philox_keys(self, out, n, key0, key1, stream):
        self._fn("philox_keys")(*_blocks(n), (out, np.int64(n), np.uint32(key0), np.uint32(key1), np.uint32(stream)))

    def gather_rows(self, data, perm, state, x, rows, dim, binarize, key):
        self._fn("gather_rows")(*_blocks(rows * dim), (data, perm, state, x, np.int32(rows), np.int32(dim),
                                                       np.int32(bool(binarize)), key))

    def bias_act(self, y, b, b_stride, k, rows, n, relu):
        self._fn("bias_act")(*_blocks(k * rows * n), (y, b, np.int64(b_stride), np.int32(k), np.int32(rows),
                                                      np.int32(n), np.int32(bool(relu))))

    PARTIAL = 4 << 20  # floats of scratch for split column sums (16 MB), allocated before any capture

    def relu_back_bias_grad(self, dy, h, db, db_stride, rows, n, k=1):
        # split the rows over S blocks when there are many (batch 10000: 25 blocks would idle the GPU)
        S = max(1, min(64, rows // 256, self.PARTIAL // max(1, k * n)))
        chunk = -(-rows // S)
        S = -(-rows // chunk)
        cols, _ = self.bias_block
        self._fn("relu_back_bias_grad")(((n + cols - 1) // cols, k, S), self.bias_block,
                                        (dy, _NULL if h is None else h, db, np.int64(db_stride), np.int32(rows),
                                         np.int32(n), self._partial, np.int32(chunk)))
        if S > 1:
            self.col_reduce(self._partial, db, db_stride, k, S, n)

    def col_reduce(self, partial, db, db_stride, k, S, n):
        self._fn("col_reduce")(*_blocks(k * n), (partial, db, np.int64(db_stride), np.int32(k), np.int32(S), np.int32(n)))

    def recon_fwd_grad(self, logits, x, dlogits, rowloss, rows, n, likelihood):
        krows = logits.size // n
        self._fn("recon_fwd_grad")((krows,), (self.recon_threads,),
                                   (logits, x, dlogits, rowloss, np.int32(rows), np.int32(n), np.int32(likelihood)))

    def reparam(self, head, eps, z, krows, L):
        self._fn("reparam")(*_blocks(krows * L), (head, eps, z, np.int32(krows), np.int32(L)))

    def latent_backward(self, head, eps, dz, dhead, klrow, betas, state, krows, rows, L):
        self._fn("latent_backward")(*_blocks(krows, 128), (head, eps, dz, dhead, klrow, betas, state, np.int32(krows),
                                                           np.int32(rows), np.int32(L)))

    def finish_step(self, rowloss, klrow, betas, state, sums, loss, rows, k=1):
        self._fn("finish_step")((k,), (self.finish_threads,),
                                (rowloss, _NULL if klrow is None else klrow, betas, state, sums, loss, np.int32(rows)))

    def advance(self, state, rng_counter, rows):
        self._fn("advance")((1,), (1,), (state, rng_counter, np.int32(rows)))

    def adam_flat(self, p, g, m, v, n, state, lr, beta1, beta2, eps):
        self._fn("adam_flat")(*_blocks(n), (p, g, m, v, np.int64(n), state, np.float32(lr), np.float64(beta1),
                                            np.float64(beta2), np.float32(eps)))


# ---- cuBLAS through ctypes ----------------------------------------------------------------------------------
class CublasUnavailable(RuntimeError):
    pass


def _loaded_cublas_paths():
    """libcublas.so files already mapped into this process (CuPy loads its own)."""
    try:
        with open("/proc/self/maps") as f:
            found = re.findall(r"(/\S*libcublas\.so[.\d]*)$", f.read(), re.M)
    except OSError:
        return []
    return list(dict.fromkeys(found))


def find_cublas() -> list[str]:
    """Candidate libcublas paths, most likely first: the one CuPy loaded, pip wheels, a system CUDA."""
    cands = []
    try:  # make CuPy load the library it was built against
        cupy.cuda.device.get_cublas_handle()
    except Exception:  # noqa: BLE001 - no device: still look on disk
        pass
    cands += _loaded_cublas_paths()
    try:
        from cuda import pathfinder

        cands.append(pathfinder.load_nvidia_dynamic_lib("cublas").abs_path)
    except Exception:  # noqa: BLE001 - optional helper, any failure means "not this way"
        pass
    import site

    for base in [*site.getsitepackages(), site.getusersitepackages()]:
        cands += sorted(glob.glob(os.path.join(base, "nvidia", "cublas", "lib", "libcublas.so*")), reverse=True)
        cands += sorted(glob.glob(os.path.join(base, "nvidia", "cu1*", "lib", "libcublas.so*")), reverse=True)
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            cands += sorted(glob.glob(os.path.join(os.environ[env], "lib64", "libcublas.so*")), reverse=True)
    cands += sorted(glob.glob("/usr/local/cuda*/lib64/libcublas.so*"), reverse=True)
    name = ctypes.util.find_library("cublas")
    if name:
        cands.append(name)
    return [c for c in dict.fromkeys(cands) if "cublasLt" not in c]


_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float


class CublasGemm:
    """Row-major batched GEMMs on one stream through cuBLAS's C API (capturable in a CUDA graph).

    ``mm(A, B, C, ta, tb)``: C[i] = op(A[i]) @ op(B[i]) for 3-D float32 views (k, rows, cols) whose
    last axis is contiguous; a batch stride of 0 shares one operand across the k models.
    """

    WORKSPACE = 32 << 20

    def __init__(self, stream, tf32: bool = False):
        errors = []
        for path in find_cublas():
            try:
                lib = ctypes.CDLL(path)
                lib.cublasSgemm_v2, lib.cublasSgemmStridedBatched  # noqa: B018 - both must exist
                break
            except (OSError, AttributeError) as err:
                errors.append(f"{path}: {err}")
        else:
            raise CublasUnavailable("no usable libcublas found" + (f" ({'; '.join(errors)})" if errors else
                                                                   " (looked where CuPy, pip wheels and CUDA_PATH put it)"))
        self.lib, self.path = lib, path
        lib.cublasCreate_v2.argtypes = [ctypes.POINTER(_P)]
        lib.cublasSetStream_v2.argtypes = [_P, _P]
        lib.cublasSetMathMode.argtypes = [_P, _I]
        lib.cublasSgemm_v2.argtypes = [_P, _I, _I, _I, _I, _I, ctypes.POINTER(_F), _P, _I, _P, _I,
                                       ctypes.POINTER(_F), _P, _I]
        lib.cublasSgemmStridedBatched.argtypes = [_P, _I, _I, _I, _I, _I, ctypes.POINTER(_F), _P, _I, ctypes.c_longlong,
                                                  _P, _I, ctypes.c_longlong, ctypes.POINTER(_F), _P, _I,
                                                  ctypes.c_longlong, _I]
        self.handle = _P()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        self._check(lib.cublasSetStream_v2(self.handle, _P(stream.ptr)), "cublasSetStream_v2")
        self.workspace = cupy.empty(self.WORKSPACE, cupy.uint8)  # no allocation inside a captured graph
        if hasattr(lib, "cublasSetWorkspace_v2"):
            lib.cublasSetWorkspace_v2.argtypes = [_P, _P, ctypes.c_size_t]
            self._check(lib.cublasSetWorkspace_v2(self.handle, _P(self.workspace.data.ptr), self.WORKSPACE),
                        "cublasSetWorkspace_v2")
        self._check(lib.cublasSetMathMode(self.handle, 3 if tf32 else 0), "cublasSetMathMode")  # 3: TF32 tensor op
        self._one, self._zero = _F(1.0), _F(0.0)

    @staticmethod
    def _check(status, what):
        if status != 0:
            raise CublasUnavailable(f"{what} returned cuBLAS status {status}")

    def mm(self, A, B, C, ta=False, tb=False):
        k, rows, cols = C.shape
        inner = A.shape[1] if ta else A.shape[2]
        args = (int(tb), int(ta), cols, rows, inner, ctypes.byref(self._one))
        lda, ldb = B.strides[1] // 4, A.strides[1] // 4
        if k == 1:
            st = self.lib.cublasSgemm_v2(self.handle, *args, _P(B.data.ptr), lda, _P(A.data.ptr), ldb,
                                         ctypes.byref(self._zero), _P(C.data.ptr), C.strides[1] // 4)
        else:
            st = self.lib.cublasSgemmStridedBatched(self.handle, *args, _P(B.data.ptr), lda, B.strides[0] // 4,
                                                    _P(A.data.ptr), ldb, A.strides[0] // 4, ctypes.byref(self._zero),
                                                    _P(C.data.ptr), C.strides[1] // 4, C.strides[0] // 4, k)
        if st != 0:
            raise RuntimeError(f"cuBLAS GEMM ({rows}x{cols}, inner {inner}, batch {k}) failed with status {st}")

    def close(self):
        if self.handle:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = _P()
