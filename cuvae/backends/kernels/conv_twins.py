"""NumPy twins of the CUDA kernels in ``conv.cu``: same names, same arguments, same meaning.

``x``, ``out`` and ``mask`` are flat float32 buffers read and written through the element strides
the kernels take; ``cols`` is the (N*Ho*Wo, k*k*C) column matrix. ``tests/test_conv_twins.py``
checks im2col/col2im against the CPU kernels of :mod:`cuvae.backends.cpu_conv` (themselves tested
against the reference ops of :mod:`cuvae.nn.conv`) and the likelihood twins against
:mod:`cuvae.nn.conv_model` and NumpyOps; ``tests/test_emulated_conv.py`` checks each kernel against
its twin on the emulated device, closing the chain reference -> twin -> kernel.
"""

from __future__ import annotations

import numpy as np

_strided = np.lib.stride_tricks.as_strided


def _view(flat, shape, strides):
    return _strided(flat, shape=shape, strides=tuple(int(s) * flat.itemsize for s in strides))


def _padded_extent(n, k, s, p, windows):
    return max(n + 2 * p, (windows - 1) * s + k)


def im2col_nhwc(x, sN, sH, sW, sC, N, H, W, C, k, s, p, Ho, Wo, cols):
    x4 = _view(x, (N, H, W, C), (sN, sH, sW, sC))
    Hp, Wp = _padded_extent(H, k, s, p, Ho), _padded_extent(W, k, s, p, Wo)
    full = np.zeros((N, Hp, Wp, C), np.float32)
    full[:, p : p + H, p : p + W] = x4
    c6 = cols.reshape(N, Ho, Wo, k, k, C)
    for u in range(k):
        for v in range(k):
            c6[:, :, :, u, v] = full[:, u : u + s * (Ho - 1) + 1 : s, v : v + s * (Wo - 1) + 1 : s]


def col2im_nhwc(cols, N, H, W, C, k, s, p, Ho, Wo, bias, mode, mask, out, oN, oH, oW, oC):
    Hp, Wp = _padded_extent(H, k, s, p, Ho), _padded_extent(W, k, s, p, Wo)
    full = np.zeros((N, Hp, Wp, C), np.float32)
    c6 = cols.reshape(N, Ho, Wo, k, k, C)
    for u in range(k):
        for v in range(k):
            full[:, u : u + s * (Ho - 1) + 1 : s, v : v + s * (Wo - 1) + 1 : s] += c6[:, :, :, u, v]
    acc = full[:, p : p + H, p : p + W]
    if mode in (1, 2):
        acc = acc + bias.reshape(1, 1, 1, C)
    if mode == 2:
        acc = np.maximum(acc, np.float32(0))
    o4 = _view(out, (N, H, W, C), (oN, oH, oW, oC))
    if mode == 3:
        acc = np.where(_view(mask, (N, H, W, C), (oN, oH, oW, oC)) > 0, acc, np.float32(0))
    o4[...] = acc


def gather_index(src, idx, dst, n):
    dst.reshape(-1)[:n] = src.reshape(-1)[idx[:n]]


HALF_BIN = np.float32(0.5) / np.float32(255)  # the kernels' single-precision half bin


def _sigmoid(a):
    return np.float32(0.5) * np.tanh(np.float32(0.5) * a) + np.float32(0.5)


def _softplus(a):
    return np.maximum(a, np.float32(0)) + np.log1p(np.exp(-np.abs(a)))


def pixel_nll_grad(logits, x, logscale, dlogits, part, C, D, likelihood, scale):
    f = np.float32
    l, xv = logits.reshape(-1, C, D), x.reshape(-1, C, D)
    rows = l.shape[0]
    scale = f(scale)
    y = _sigmoid(l)
    s_ls = np.zeros((rows, C), np.float32)
    if likelihood == 0:
        nll = _softplus(l) - xv * l
        g = scale * (y - xv)
    elif likelihood == 1:
        e = y - xv
        nll = e * e
        g = (f(2) * scale) * (e * (f(1) - y) * y)
    else:
        inv_s = np.exp(-logscale.reshape(-1)[:C]).reshape(1, C, 1)
        d = (f(2) * HALF_BIN) * inv_s
        log_mass, inner = np.log(-np.expm1(-d)), d / np.expm1(d)
        a = (xv - HALF_BIN - y) * inv_s
        b = a + d
        lo, hi = (xv > HALF_BIN).astype(f), (xv < f(1) - HALF_BIN).astype(f)
        nll = lo * _softplus(a) + hi * _softplus(-b) - (lo * hi) * log_mass
        sa, snb = _sigmoid(a) * lo, _sigmoid(-b) * hi
        g = scale * ((snb - sa) * inv_s) * (y * (f(1) - y))
        s_ls = scale * (b * snb - a * sa + (lo * hi) * inner).sum(-1)
    dlogits.reshape(l.shape)[...] = g
    p = part.reshape(-1)[: rows * C * 3].reshape(rows, C, 3)
    p[..., 0], p[..., 1], p[..., 2] = nll.sum(-1), s_ls, g.sum(-1)


def pixel_finish(part, rowloss, dlogscale, db, rows, C):
    p = part.reshape(-1)[: rows * C * 3].reshape(rows, C, 3)
    rowloss.reshape(-1)[:rows] = p[..., 0].sum(1)
    if dlogscale is not None:
        dlogscale.reshape(-1)[:C] = p[..., 1].sum(0)
    db.reshape(-1)[:C] = p[..., 2].sum(0)
