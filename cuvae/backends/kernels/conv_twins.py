"""NumPy twins of the CUDA kernels in ``conv.cu``: same names, same arguments, same meaning.

``x``, ``out`` and ``mask`` are flat float32 buffers read and written through the element strides
the kernels take; ``cols`` is the (N*Ho*Wo, k*k*C) column matrix. ``tests/test_conv_twins.py``
checks these against the CPU kernels of :mod:`cuvae.backends.cpu_conv` (themselves tested against
the reference ops of :mod:`cuvae.nn.conv`), closing the chain reference -> CPU -> twin -> kernel
once the kernels run on a device.
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
