"""The discretised logistic likelihood and its gradient as one fused pass (numba).

The twin of :func:`cuvae.nn.conv_model.logistic_nll` and :func:`~cuvae.nn.conv_model.logistic_nll_grad`
(NumPy, the specification): those make about twenty full-size temporaries per call; this makes
none. Per subpixel it needs three exponentials and two log1p, sharing exp(-|a|) between
softplus(a) and sigmoid(a) (and likewise for -b); the end bins are masks, not branches, so the
loop vectorises. It also returns what the conv model wants next: per-channel sums of d/dlogits,
the last transposed convolution's bias gradient.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cuvae.backends.cpu_conv import PARALLEL
from cuvae.backends.cpu_ops import _JIT, _exp_neg, _log1p_unit

HALF_BIN = 0.5 / 255.0  # as in cuvae.nn.conv_model


def _logistic(logits, x, inv_s, width, log_mass, d_over_expm1, scale, nll, dlogits, part_ls, part_b,
              zero, one, half_bin):
    """nll[i] = -log P(x_i); dlogits = scale * d/dl; part_ls[i, c], part_b[i, c]: example i's
    contributions to d/dlogscale[c] and to sum_pixels dlogits[i, c, :]."""
    B = logits.shape[0]
    C = inv_s.shape[0]
    D = logits.shape[1] // C
    top = one - half_bin
    for i in prange(B):
        tot = 0.0
        for c in range(C):
            isc = inv_s[c]
            dc = width[c]
            lm = log_mass[c]
            inner = d_over_expm1[c]
            acc_ls = 0.0
            acc_b = 0.0
            for q in range(c * D, (c + 1) * D):
                l = logits[i, q]
                xx = x[i, q]
                el = _exp_neg(abs(l))
                rl = one / (one + el)
                mu = rl if l >= zero else el * rl
                a = (xx - half_bin - mu) * isc
                nb = -(a + dc)  # -b
                ea = _exp_neg(abs(a))
                eb = _exp_neg(abs(nb))
                ra = one / (one + ea)
                rb = one / (one + eb)
                sa = ra if a >= zero else ea * ra  # sigmoid(a)
                snb = rb if nb >= zero else eb * rb  # sigmoid(-b)
                lo = one if xx > half_bin else zero  # the bin has a lower edge
                hi = one if xx < top else zero  # ... and an upper one
                sp_a = max(a, zero) + _log1p_unit(ea)
                sp_nb = max(nb, zero) + _log1p_unit(eb)
                tot += lo * sp_a + hi * sp_nb - (lo * hi) * lm
                sa *= lo
                snb *= hi
                g = scale * ((snb - sa) * isc) * (mu * (one - mu))
                dlogits[i, q] = g
                acc_b += g
                acc_ls += -nb * snb - a * sa + (lo * hi) * inner
            part_ls[i, c] = scale * acc_ls
            part_b[i, c] = acc_b
        nll[i] = tot


_LOGISTIC = njit(parallel=PARALLEL, **_JIT)(_logistic)  # one variant (why: cuvae.backends.cpu_conv)


class LogisticBuffers:
    def __init__(self, batch, channels, dtype):
        self.nll = np.empty(batch, dtype)
        self.part_ls = np.empty((batch, channels), dtype)
        self.part_b = np.empty((batch, channels), dtype)
        self.consts = np.empty((4, channels), dtype)


def logistic_nll_and_grad(logits, x, logscale, scale, dlogits, buf, dlogscale=None, db=None):
    """Per-example nll (a view of buf.nll); dlogits = scale * d/dl; dlogscale and db (per-channel
    sums of dlogits) when given. logits and x: (B, C*H*W) C-contiguous, one dtype."""
    t = logits.dtype.type
    k = buf.consts  # per channel: 1/s, d = bin width / s, log(1 - e^-d), d / expm1(d)
    np.negative(logscale, out=k[0])
    np.exp(k[0], out=k[0])
    np.multiply(k[0], 2 * HALF_BIN, out=k[1])
    np.negative(k[1], out=k[2])
    np.expm1(k[2], out=k[2])
    np.negative(k[2], out=k[2])
    np.log(k[2], out=k[2])
    np.expm1(k[1], out=k[3])
    np.divide(k[1], k[3], out=k[3])
    B = logits.shape[0]
    _LOGISTIC(logits, x, k[0], k[1], k[2], k[3], t(scale), buf.nll[:B], dlogits, buf.part_ls[:B], buf.part_b[:B],
              t(0), t(1), t(HALF_BIN))
    if dlogscale is not None:
        np.sum(buf.part_ls[:B], axis=0, out=dlogscale)
    if db is not None:
        np.sum(buf.part_b[:B], axis=0, out=db)
    return buf.nll[:B]
