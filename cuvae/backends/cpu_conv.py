"""Fused CPU conv layers (numba + BLAS) in NHWC: the fast twins of :mod:`cuvae.nn.conv`.

:mod:`cuvae.nn.conv` (NCHW, NumPy) stays the specification; ``tests/test_cpu_conv.py``
checks every function here against it, forward and backward.

Why this layout: an activation is kept as NHWC *rows*, a (N*H*W, C) matrix, which
is exactly what a convolution's matrix product reads and writes, so no layer
transposes anything. The profile of the NumPy ops (see ``scripts/profile_conv.py``)
put 55-75% of a layer's time outside the products, in ``col2im``'s k*k strided adds,
the 6-D ``as_strided`` copy and the NCHW <-> rows transposes; here those are one
pass each, parallel over output rows:

- ``im2col`` gathers each k x k window into a row whose columns run (u, v, c), so
  every window position is a contiguous run of C values (padding is a zero run,
  never a padded copy of the input);
- ``col2im`` is written as a *gather* (each output pixel sums the <= ceil(k/s)^2
  rows that touch it) rather than a scatter, so threads never write the same
  pixel, nothing needs zeroing first, and the bias, the ReLU or the ReLU mask of
  the layer below (and that layer's bias gradient) ride along in the same pass;
- weights are repacked to the (u, v, c) column order once per step (at most
  131k values a layer), so the products take them as plain 2-D operands.

Every buffer is passed in (the model's workspace owns them); nothing here allocates
per call except the repacking views.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit, prange

from cuvae.backends import cpu_ops
from cuvae.backends.cpu_ops import _JIT

SUM_BLOCKS = 16  # row blocks for column sums: partial sums per block, then one small add
# products and the im2col/col2im feeding or reading them go a few images at a time, so each slice of
# the column matrix is still in cache for its second pass: 1 MiB slices in float32 took 16% (conv
# backward) and 18% (transposed conv forward) less CPU time than whole-batch passes (batch 100)
CHUNK_FLOATS = 1 << 18


# numba-serial kernels, like NumbaOps' below its PARALLEL_MIN: numba's OpenMP pool spins after each
# loop, and on two cores it and OpenBLAS's threads then fight for them. Measured on the 2-core machine,
# batch 100, 2 threads (scripts/bench_conv.py conditions, same run): a conv-VAE step took 1450-4550 ms
# with these kernels parallel and 560-890 ms with them serial. im2col and col2im, the large ones, are
# spread over the cores by _split below instead.
PARALLEL = False


def _kernel(fn):
    # one variant per kernel: the trainer's warm-up step (two examples) compiles exactly what the real
    # batches then run
    return njit(parallel=PARALLEL, **_JIT)(fn)


# ---- im2col and col2im on every core, without numba's thread pool -------------------------------
# They are about a quarter of a conv step, and ran on one core while the other waited. numba's parallel
# loops would use it, but its OpenMP threads spin after each loop, into the next product (measured: a
# col2im then a product took longer parallel than serial). So these two kernels take a range [t0, t1)
# of their outer tasks, and :func:`_split` hands the other threads' shares to plain threads that sleep
# between calls (the kernels release the GIL). OpenBLAS's workers sleep between products too: cuvae sets
# OPENBLAS_THREAD_TIMEOUT (see cuvae/__init__.py), or they would spin on the same cores.
SPLIT_MIN = 1 << 15  # values a call writes; below this a hand-off (~20 us) costs more than it saves
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (the process it belongs to, its threads, the pool)


def _split(kernel, tasks: int, work: int, *args) -> None:
    """kernel(t0, t1, *args) over [0, tasks), in as many parts as the CPU backend has threads."""
    global _pool
    n = min(cpu_ops.threads(), tasks) if work >= SPLIT_MIN else 1
    if n <= 1:
        kernel(0, tasks, *args)
        return
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < n - 1:  # a forked child makes its own
        _pool = (os.getpid(), n - 1, ThreadPoolExecutor(n - 1, thread_name_prefix="cuvae-conv"))
    bounds = [tasks * i // n for i in range(n + 1)]
    parts = [_pool[2].submit(kernel, bounds[i], bounds[i + 1], *args) for i in range(1, n)]
    kernel(bounds[0], bounds[1], *args)
    for part in parts:
        part.result()


# ---- im2col: windows of an (N, H, W, C) view -> rows (n, i, j), columns (u, v, c) ----------------
def _im2col(t0, t1, x, k, s, p, Ho, Wo, cols, zero):
    N, H, W, C = x.shape
    for t in range(t0, t1):  # t = n * Ho + i
        n = t // Ho
        i = t - n * Ho
        for j in range(Wo):
            r = t * Wo + j
            for u in range(k):
                h = i * s - p + u
                for v in range(k):
                    w = j * s - p + v
                    q = (u * k + v) * C
                    if h >= 0 and h < H and w >= 0 and w < W:
                        for c in range(C):
                            cols[r, q + c] = x[n, h, w, c]
                    else:
                        for c in range(C):
                            cols[r, q + c] = zero


# ---- col2im, one output row (n, h) per task, with the layer's epilogue fused ------------------------
# Each task owns its output row, so threads never write the same pixel; within the row it adds, for
# each of the <= ceil(k/s) kernel rows u that reach h and each kernel column v, the contiguous
# C-runs of a whole row of windows (the j loop), so the hot loop has no index arithmetic.
# mode 0: out = sum; 1: sum + bias; 2: relu(sum + bias); 3: out = sum * (mask > 0), and the masked
# values' column sums per (n, h) row go to partial (the bias gradient of the layer below).
# Arguments a mode does not use are dummies of the right type.
def _col2im(t0, t1, cols, k, s, p, Ho, Wo, bias, mode, mask, out, partial, zero):
    N, H, W, C = out.shape
    for t in range(t0, t1):  # t = n * H + h
        n = t // H
        h = t - n * H
        for w in range(W):
            for c in range(C):
                out[n, h, w, c] = bias[c] if mode == 1 or mode == 2 else zero
        for u in range((h + p) % s, k, s):
            i = (h + p - u) // s
            if i < 0 or i >= Ho:
                continue
            r0 = (n * Ho + i) * Wo
            for v in range(k):
                # windows j with 0 <= w = j*s - p + v < W
                j0 = max(0, (p - v + s - 1) // s)
                j1 = min(Wo, (W - 1 + p - v) // s + 1)
                q = (u * k + v) * C
                for j in range(j0, j1):
                    w = j * s - p + v
                    for c in range(C):
                        out[n, h, w, c] += cols[r0 + j, q + c]
        if mode == 2:
            for w in range(W):
                for c in range(C):
                    out[n, h, w, c] = max(out[n, h, w, c], zero)
        elif mode == 3:
            for c in range(C):
                partial[t, c] = zero
            for w in range(W):
                for c in range(C):
                    g = out[n, h, w, c] if mask[n, h, w, c] > 0 else zero
                    out[n, h, w, c] = g
                    partial[t, c] += g


# ---- row epilogues: bias (+ ReLU) after a product; ReLU mask + column sums before one ------------
def _bias_act(rows, b, relu, zero):
    for r in prange(rows.shape[0]):
        for c in range(rows.shape[1]):
            y = rows[r, c] + b[c]
            rows[r, c] = max(y, zero) if relu else y


def _mask_colsum(d, act, use_mask, partial, zero):
    """d *= (act > 0) when use_mask; partial[t] = column sums of row block t of d."""
    M, C = d.shape
    T = partial.shape[0]
    for t in prange(T):
        for c in range(C):
            partial[t, c] = zero
        for r in range(t * M // T, (t + 1) * M // T):
            for c in range(C):
                g = d[r, c]
                if use_mask:
                    g = g if act[r, c] > 0 else zero
                    d[r, c] = g
                partial[t, c] += g


_IM2COL, _COL2IM = _kernel(_im2col), _kernel(_col2im)
_BIAS_ACT, _MASK_COLSUM = _kernel(_bias_act), _kernel(_mask_colsum)


# ---- weight repacking: (A, B, k, k) torch layout <-> (A, k*k*B) with columns (u, v, b) -------------
def pack_weight(W, out):
    """Conv2D's (F, C, k, k) -> (F, k*k*C); ConvTranspose2D's (Cin, Cout, k, k) -> (Cin, k*k*Cout)."""
    A, B, k, _ = W.shape
    out.reshape(A, k, k, B)[...] = W.transpose(0, 2, 3, 1)
    return out


def unpack_weight(Wm, out):
    """Inverse of :func:`pack_weight`: (A, k*k*B) -> (A, B, k, k) into ``out``."""
    A, B, k, _ = out.shape
    out[...] = Wm.reshape(A, k, k, B).transpose(0, 3, 1, 2)
    return out


# ---- thin wrappers (shapes in, kernels chosen by size) -------------------------------------------
def im2col(x4, k, s, p, Ho, Wo, cols):
    """x4: (N, H, W, C), any strides (an NCHW array's ``transpose(0, 2, 3, 1)`` works)."""
    _split(_IM2COL, x4.shape[0] * Ho, cols.size, x4, k, s, p, Ho, Wo, cols, cols.dtype.type(0))
    return cols


def col2im(cols, k, s, p, Ho, Wo, out4, bias=None, relu=False, mask4=None, partial=None):
    """Adjoint of :func:`im2col` into ``out4`` (N, H, W, C), plus bias and ReLU, or times the
    ReLU mask ``mask4 > 0`` with its column sums per (n, h) row in ``partial`` (N*H, C)."""
    if mask4 is not None:
        mode = 3
    elif bias is not None:
        mode = 2 if relu else 1
    else:
        if relu:
            raise ValueError("col2im: relu needs a bias")
        mode = 0
    dummy_rows = cols[0]  # 1-D, the right dtype: stands in for an unused bias
    _split(_COL2IM, out4.shape[0] * out4.shape[1], out4.size, cols, k, s, p, Ho, Wo,
           dummy_rows if bias is None else bias, mode, out4 if mask4 is None else mask4, out4,
           cols if partial is None else partial, out4.dtype.type(0))
    return out4


def bias_act(rows, b, relu):
    _BIAS_ACT(rows, b, relu, rows.dtype.type(0))
    return rows


def mask_colsum(d, act, db, partial):
    """d *= (act > 0) (when act is not None), then db = column sums of d. partial: (SUM_BLOCKS, C)."""
    _MASK_COLSUM(d, d if act is None else act, act is not None, partial, d.dtype.type(0))
    np.sum(partial, axis=0, out=db)
    return d


def _chunks(N, per_image):
    """Image ranges whose column rows fill about CHUNK_FLOATS (at least one image each)."""
    step = max(1, CHUNK_FLOATS // max(per_image, 1))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


# ---- the layers, NHWC rows in and out ---------------------------------------------------------------
class ConvBuffers:
    """Per-layer scratch: packed weight, its gradient, the column matrix, column-sum partials."""

    def __init__(self, rows, cols_width, A, width, C_sum, dtype):
        self.Wm = np.empty((A, width), dtype)
        self.dWm = np.empty((A, width), dtype)
        self.cols = np.empty((rows, cols_width), dtype)
        self.partial = np.empty((SUM_BLOCKS, C_sum), dtype)


def conv2d_forward(x4, W, b, s, p, out_rows, buf, relu=False):
    """out_rows (N*Ho*Wo, F) = conv(x4, W) + b (then ReLU); x4 (N, H, W, C) any strides."""
    N, H, Wd, C = x4.shape
    F, _, k, _ = W.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    pack_weight(W, buf.Wm)
    for n0, n1 in _chunks(N, Ho * Wo * buf.cols.shape[1]):  # the columns stay whole: dW needs them
        cols, r = buf.cols[n0 * Ho * Wo : n1 * Ho * Wo], slice(n0 * Ho * Wo, n1 * Ho * Wo)
        im2col(x4[n0:n1], k, s, p, Ho, Wo, cols)
        np.matmul(cols, buf.Wm.T, out=out_rows[r])
    bias_act(out_rows, b, relu)
    return out_rows


def conv2d_backward(drows, W, dW, db, s, p, buf, dx4=None, mask4=None, dx_partial=None):
    """drows (N*Ho*Wo, F): d(out). Writes dW, and db unless it is None (a fused pass upstream
    made it); dx4 (N, H, W, C) when given, times (mask4 > 0) with the masked values' column sums
    per (n, h) row in dx_partial (N*H, C) when mask4 is given."""
    F, C, k, _ = W.shape
    if db is not None:
        mask_colsum(drows, None, db, buf.partial)
    np.matmul(drows.T, buf.cols, out=buf.dWm)
    unpack_weight(buf.dWm, dW)
    if dx4 is None:
        return None
    N, H, Wd, _ = dx4.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    # dcols overwrite the forward's columns (no longer needed), a few images at a time so that each
    # slice is still in cache when col2im reads it back
    for n0, n1 in _chunks(N, Ho * Wo * buf.cols.shape[1]):
        dcols = buf.cols[n0 * Ho * Wo : n1 * Ho * Wo]
        np.matmul(drows[n0 * Ho * Wo : n1 * Ho * Wo], buf.Wm, out=dcols)
        col2im(dcols, k, s, p, Ho, Wo, dx4[n0:n1], mask4=None if mask4 is None else mask4[n0:n1],
               partial=None if dx_partial is None else dx_partial[n0 * H : n1 * H])
    return dx4


def conv_transpose2d_forward(xrows, x_hw, W, b, s, p, out4, buf, relu=False):
    """out4 (N, Ho, Wo, Cout) = conv_transpose(x, W) + b (then ReLU); xrows (N*H*W, Cin), x_hw (H, W)."""
    Cin, Cout, k, _ = W.shape
    H, Wd = x_hw
    pack_weight(W, buf.Wm)
    N = out4.shape[0]
    for n0, n1 in _chunks(N, H * Wd * buf.cols.shape[1]):  # product then col2im while the slice is in cache
        cols = buf.cols[n0 * H * Wd : n1 * H * Wd]
        np.matmul(xrows[n0 * H * Wd : n1 * H * Wd], buf.Wm, out=cols)
        col2im(cols, k, s, p, H, Wd, out4[n0:n1], bias=b, relu=relu)
    return out4


def conv_transpose2d_backward(dout4, xrows, x_hw, W, dW, db, s, p, buf, dx_rows=None, db_done=False):
    """dout4 (N, Ho, Wo, Cout) any strides. Writes dW, db (unless db_done) and dx_rows (N*H*W, Cin)."""
    Cin, Cout, k, _ = W.shape
    H, Wd = x_hw
    if not db_done:
        if dout4.flags.c_contiguous:
            mask_colsum(dout4.reshape(-1, Cout), None, db, buf.partial)
        else:
            np.sum(dout4, axis=(0, 1, 2), out=db)
    N = dout4.shape[0]
    for n0, n1 in _chunks(N, H * Wd * buf.cols.shape[1]):
        r = slice(n0 * H * Wd, n1 * H * Wd)
        im2col(dout4[n0:n1], k, s, p, H, Wd, buf.cols[r])
        if dx_rows is not None:
            np.matmul(buf.cols[r], buf.Wm.T, out=dx_rows[r])
    np.matmul(xrows.T, buf.cols, out=buf.dWm)
    unpack_weight(buf.dWm, dW)
    return dx_rows
