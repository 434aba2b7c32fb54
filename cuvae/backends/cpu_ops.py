"""Fused CPU kernels (numba) for the training step: :class:`NumbaOps`.

:class:`~cuvae.nn.ops.NumpyOps` stays the specification and the fallback; every
method here has the same signature and meaning as its NumPy twin, and
``tests/test_cpu_ops.py`` compares each pair in float32 and float64.

Why: at batch 100 the step's matrix products take about 1.6 ms, and plain
NumPy spends as long again on the rest: Adam over ~470k parameters is eight
separate single-threaded passes, the likelihood five. Each kernel below is one
pass, allocates nothing (apart from the small per-example result vectors the
signatures return) and, above :data:`PARALLEL_MIN` elements, uses all threads.

Compiled lazily on first use per dtype and cached on disk (``cache=True``).
This module imports numba; :mod:`cuvae.backends.backend` imports it only when asked for
a CPU backend, so ``import cuvae`` stays light.
"""

from __future__ import annotations

import math
import types as types_mod

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic, overload

from cuvae.nn.ops import NumpyOps

PARALLEL_MIN = 1 << 21  # elements; below this a thread launch (and waking threads that BLAS keeps spinning) costs more than it saves

_JIT = dict(fastmath=True, cache=True, nogil=True, error_model="numpy")  # numpy: no zero-division checks (they block vectorisation)


def _twin(fn):
    """Compile ``fn`` twice: serial (small arrays) and parallel (large ones); prange is range when serial.

    The parallel copy gets its own qualified name: numba's disk cache is keyed by the function's
    name and signature, not by ``parallel``, so with one name whichever variant compiled first
    was loaded for both (the parallel kernels silently ran serial)."""
    par = types_mod.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_parallel", fn.__defaults__,
                                 fn.__closure__)
    par.__qualname__ = fn.__qualname__ + "_parallel"
    return njit(parallel=False, **_JIT)(fn), njit(parallel=True, **_JIT)(par)


def _pick(pair, n):
    return pair[1] if n >= PARALLEL_MIN else pair[0]


# ---- linear: bias add; column sums for the bias gradient ------------------------------------
def _bias_add(out, b):
    for i in prange(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += b[j]


def _col_sum(dy, db):
    for j in range(db.shape[0]):
        db[j] = 0
    for i in range(dy.shape[0]):
        for j in range(dy.shape[1]):
            db[j] += dy[i, j]


# ---- ReLU -----------------------------------------------------------------------------------
def _relu(h):
    for k in prange(h.size):
        h[k] = max(h[k], 0)


def _relu_backward(dh, h):
    for k in prange(dh.size):
        dh[k] = dh[k] if h[k] > 0 else 0


# ---- tanh's backward (the forward stays NumPy's SIMD tanh: libm's tanh does not vectorise here) ----
def _tanh_backward(dh, h):
    for k in prange(dh.size):
        dh[k] -= dh[k] * h[k] * h[k]


# ---- scalar math that vectorises: exp and log1p without libm calls ---------------------------
# LLVM cannot vectorise calls to libm's exp/tanh here (no SVML), which makes a pixel pass ~10x slower
# than NumPy's SIMD loops. In float32 we use a Cody-Waite exp (degree-7 polynomial, 2^n built from
# its bits) and log1p(e) = 2 atanh(e / (2 + e)) for e in [0, 1]: a few ulp, branch-free, vectorisable.
# float64 (the test and reference dtype) keeps libm.
@intrinsic
def _bits_to_f32(typingctx, i):
    def codegen(context, builder, signature, args):
        v = args[0]
        if v.type.width != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(i), codegen


def _exp_neg(a):
    """exp(-a) for a >= 0."""


def _log1p_unit(e):
    """log1p(e) for e in [0, 1]."""


@overload(_exp_neg, jit_options=dict(fastmath=True, error_model="numpy"))
def _ol_exp_neg(a):
    if a == types.float32:
        F = np.float32
        lo, log2e, hi_ln2, lo_ln2 = F(-87.0), F(1.4426950408889634), F(0.693145751953125), F(1.428606765330187e-06)
        c2, c3, c4, c5, c6, c7 = F(1 / 2), F(1 / 6), F(1 / 24), F(1 / 120), F(1 / 720), F(1 / 5040)
        one, half = F(1.0), F(0.5)

        def impl(a):
            x = max(-a, lo)
            n = np.floor(x * log2e + half)
            r = (x - n * hi_ln2) - n * lo_ln2
            p = one + r * (one + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
            return p * _bits_to_f32((np.int32(n) + np.int32(127)) << np.int32(23))

        return impl
    return lambda a: math.exp(-a)


@overload(_log1p_unit, jit_options=dict(fastmath=True, error_model="numpy"))
def _ol_log1p_unit(e):
    if e == types.float32:
        F = np.float32
        two = F(2.0)
        k3, k5, k7, k9, k11, k13 = F(1 / 3), F(1 / 5), F(1 / 7), F(1 / 9), F(1 / 11), F(1 / 13)

        def impl(e):
            s = e / (two + e)  # in [0, 1/3]
            s2 = s * s
            return two * s * (F(1.0) + s2 * (k3 + s2 * (k5 + s2 * (k7 + s2 * (k9 + s2 * (k11 + s2 * k13))))))

        return impl
    return lambda e: math.log1p(e)


@njit(inline="always", fastmath=True, error_model="numpy")
def _sig(l, one):
    """sigmoid(l) without overflow: e = exp(-|l|); 1/(1+e) for l >= 0, e/(1+e) below."""
    e = _exp_neg(abs(l))
    d = one / (one + e)
    return d if l >= 0 else e * d


@njit(inline="always", fastmath=True, error_model="numpy")
def _softplus(l, zero):
    """max(l, 0) + log1p(exp(-|l|))."""
    return max(l, zero) + _log1p_unit(_exp_neg(abs(l)))


# ---- sigmoid and the likelihoods (each one pass over the pixels) -------------------------
def _sigmoid(logits, out, one):
    for k in prange(logits.size):
        out[k] = _sig(logits[k], one)


def _bernoulli_nll(logits, x, out, zero):
    for i in prange(logits.shape[0]):
        s = 0.0  # float64 accumulator
        for j in range(logits.shape[1]):
            l = logits[i, j]
            s += _softplus(l, zero) - x[i, j] * l
        out[i] = s


def _bernoulli_nll_grad(logits, x, scale, dlogits, one):
    for k in prange(logits.size):
        dlogits[k] = scale * (_sig(logits[k], one) - x[k])


def _sse(logits, x, out, one):
    for i in prange(logits.shape[0]):
        s = 0.0
        for j in range(logits.shape[1]):
            d = _sig(logits[i, j], one) - x[i, j]
            s += d * d
        out[i] = s


def _sse_grad(logits, x, scale2, dlogits, one):
    for k in prange(logits.size):
        y = _sig(logits[k], one)
        dlogits[k] = scale2 * ((y - x[k]) * (one - y) * y)


# ---- reparameterisation and KL (B x latent: always serial) ---------------------------------
@njit(**_JIT)
def _reparameterize(mean, logvar, eps, out):
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            out[i, j] = mean[i, j] + math.exp(0.5 * logvar[i, j]) * eps[i, j]


@njit(**_JIT)
def _reparameterize_backward(dz, logvar, eps, dmean, dlogvar):
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            g = dz[i, j]
            dmean[i, j] = g
            dlogvar[i, j] = 0.5 * (g * eps[i, j] * math.exp(0.5 * logvar[i, j]))


@njit(**_JIT)
def _kl(mean, logvar, out):
    for i in range(mean.shape[0]):
        s = 0.0
        for j in range(mean.shape[1]):
            m, lv = mean[i, j], logvar[i, j]
            s += m * m + math.exp(lv) - 1.0 - lv
        out[i] = 0.5 * s


@njit(**_JIT)
def _kl_grad_add(mean, logvar, scale, half_scale, dmean, dlogvar):
    for i in range(mean.shape[0]):
        for j in range(mean.shape[1]):
            dmean[i, j] += scale * mean[i, j]
            dlogvar[i, j] += half_scale * (math.exp(logvar[i, j]) - 1)


# ---- Adam over the flat buffer: one pass ----------------------------------------------------
def _adam(p, g, m, v, b1, one_b1, b2, one_b2, inv_sqrt_bc2, eps, step_size):
    for i in prange(p.shape[0]):
        gi = g[i]
        mi = b1 * m[i] + one_b1 * gi
        vi = b2 * v[i] + one_b2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * (mi / (math.sqrt(vi) * inv_sqrt_bc2 + eps))


_BIAS_ADD, _COL_SUM = _twin(_bias_add), _twin(_col_sum)
_RELU, _RELU_BACKWARD = _twin(_relu), _twin(_relu_backward)
_TANH_BACKWARD = _twin(_tanh_backward)
_SIGMOID, _BERNOULLI_NLL, _BERNOULLI_NLL_GRAD = _twin(_sigmoid), _twin(_bernoulli_nll), _twin(_bernoulli_nll_grad)
_SSE, _SSE_GRAD = _twin(_sse), _twin(_sse_grad)
_ADAM = _twin(_adam)


def _flat(*arrays):
    """1-D views of C-contiguous arrays of one shape, or None (then the NumPy twin runs)."""
    shape = arrays[0].shape
    if all(a.shape == shape and a.flags.c_contiguous for a in arrays):
        return [a.reshape(-1) for a in arrays]
    return None


def _same_dtype(*arrays):
    return all(a.dtype == arrays[0].dtype for a in arrays) and arrays[0].dtype in (np.float32, np.float64)


class NumbaOps(NumpyOps):
    """NumPy arrays, numba kernels: the CPU fast path. Matrix products stay with NumPy's BLAS.

    Inputs a kernel does not cover (mixed dtypes, non-contiguous elementwise operands,
    broadcasting) go to the NumPy twin, so every call has NumpyOps' meaning.
    """

    xp = np

    # ---- linear --------------------------------------------------------------------------
    def linear(self, x, W, b, out):
        np.matmul(x, W, out=out)
        if out.ndim == 2 and b.ndim == 1 and _same_dtype(out, b):
            _pick(_BIAS_ADD, out.size)(out, b)
        else:
            out += b
        return out

    def linear_backward(self, dy, x, W, dW, db, dx=None):
        np.matmul(x.T, dy, out=dW)
        if dy.ndim == 2 and _same_dtype(dy, db):
            _COL_SUM[0](dy, db)  # serial: a few microseconds at the batch sizes we train with
        else:
            np.sum(dy, axis=0, out=db)
        if dx is not None:
            np.matmul(dy, W.T, out=dx)

    # ---- ReLU ----------------------------------------------------------------------------
    def relu(self, h):
        f = _flat(h)
        if f is None or not _same_dtype(h):
            return super().relu(h)
        _pick(_RELU, h.size)(*f)
        return h

    def relu_backward(self, dh, h):
        f = _flat(dh, h)
        if f is None or not _same_dtype(dh, h):
            return super().relu_backward(dh, h)
        _pick(_RELU_BACKWARD, dh.size)(*f)
        return dh

    def tanh_backward(self, dh, h):
        f = _flat(dh, h)
        if f is None or not _same_dtype(dh, h):
            return super().tanh_backward(dh, h)
        _pick(_TANH_BACKWARD, dh.size)(*f)
        return dh

    # ---- sigmoid and likelihoods -------------------------------------------------------------
    def sigmoid(self, logits, out):
        f = _flat(logits, out)
        if f is None or not _same_dtype(logits, out):
            return super().sigmoid(logits, out)
        _pick(_SIGMOID, logits.size)(*f, out.dtype.type(1))
        return out

    def bernoulli_nll(self, logits, x, tmp):
        if logits.ndim != 2 or logits.shape != x.shape or not _same_dtype(logits, x):
            return super().bernoulli_nll(logits, x, tmp)
        out = np.empty(logits.shape[0], logits.dtype)
        _pick(_BERNOULLI_NLL, logits.size)(logits, x, out, out.dtype.type(0))
        return out

    def bernoulli_nll_grad(self, logits, x, scale, dlogits):
        f = _flat(logits, x, dlogits)
        if f is None or not _same_dtype(logits, x, dlogits):
            return super().bernoulli_nll_grad(logits, x, scale, dlogits)
        t = dlogits.dtype.type
        _pick(_BERNOULLI_NLL_GRAD, logits.size)(f[0], f[1], t(scale), f[2], t(1))
        return dlogits

    def sse(self, logits, x, tmp):
        if logits.ndim != 2 or logits.shape != x.shape or not _same_dtype(logits, x):
            return super().sse(logits, x, tmp)
        out = np.empty(logits.shape[0], logits.dtype)
        _pick(_SSE, logits.size)(logits, x, out, out.dtype.type(1))
        return out

    def sse_grad(self, logits, x, scale, dlogits):
        f = _flat(logits, x, dlogits)
        if f is None or not _same_dtype(logits, x, dlogits):
            return super().sse_grad(logits, x, scale, dlogits)
        t = dlogits.dtype.type
        _pick(_SSE_GRAD, logits.size)(f[0], f[1], t(2.0 * scale), f[2], t(1))
        return dlogits

    # ---- reparameterisation and KL (B x latent, strided views of the head: always 2-D, serial) ----
    def reparameterize(self, mean, logvar, eps, out):
        if not _same_dtype(mean, logvar, eps, out) or mean.ndim != 2:
            return super().reparameterize(mean, logvar, eps, out)
        _reparameterize(mean, logvar, eps, out)
        return out

    def reparameterize_backward(self, dz, logvar, eps, dmean, dlogvar):
        if not _same_dtype(dz, logvar, eps, dmean, dlogvar) or dz.ndim != 2:
            return super().reparameterize_backward(dz, logvar, eps, dmean, dlogvar)
        _reparameterize_backward(dz, logvar, eps, dmean, dlogvar)

    def kl(self, mean, logvar):
        if not _same_dtype(mean, logvar) or mean.ndim != 2:
            return super().kl(mean, logvar)
        out = np.empty(mean.shape[0], mean.dtype)
        _kl(mean, logvar, out)
        return out

    def kl_grad_add(self, mean, logvar, scale, dmean, dlogvar):
        if not _same_dtype(mean, logvar, dmean, dlogvar) or mean.ndim != 2:
            return super().kl_grad_add(mean, logvar, scale, dmean, dlogvar)
        t = dmean.dtype.type
        _kl_grad_add(mean, logvar, t(scale), t(0.5 * scale), dmean, dlogvar)

    # ---- Adam ------------------------------------------------------------------------------------
    def adam(self, p, g, m, v, tmp, lr, beta1, beta2, eps, step):
        f = _flat(p, g, m, v)
        if f is None or not _same_dtype(p, g, m, v):
            return super().adam(p, g, m, v, tmp, lr, beta1, beta2, eps, step)
        t = p.dtype.type
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        _pick(_ADAM, p.size)(*f, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
                             t(1.0 / math.sqrt(bc2)), t(eps), t(lr / bc1))


def set_threads(n: int) -> None:
    """Threads for the parallel kernels (BLAS threads are set in :mod:`cuvae.backends.backend`)."""
    numba.set_num_threads(n)


def threads() -> int:
    return numba.get_num_threads()
