"""NumPy twins of the CUDA kernels in ``step.cu``: same names, same arguments, same meaning.

The twins are the specification of the kernels: ``tests/test_gpu.py`` runs each CUDA kernel
and its twin on the same inputs, and ``tests/test_cpu_ops.py``-style CPU tests check the twins
against :class:`cuvae.nn.ops.NumpyOps` (so the chain NumpyOps -> twin -> kernel is closed).
Arrays are NumPy; ``state`` is the int64 vector [step in epoch, batch offset, Adam step, _];
``key`` is the epoch's Philox key, two uint32 (in device memory on the GPU).
"""

from __future__ import annotations

import numpy as np

STEP_IN_EPOCH, BATCH_OFFSET, ADAM_STEP = 0, 1, 2
M0, M1, W0, W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def philox4x32_10(c, k):
    """Philox4x32-10 on arrays: ``c`` (4, N) uint32 counters, ``k`` (2,) key -> (4, N) uint32."""
    c = [np.asarray(x, np.uint64) for x in c]
    k0, k1 = np.uint64(k[0]), np.uint64(k[1])
    for _ in range(10):
        p0, p1 = np.uint64(M0) * c[0], np.uint64(M1) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & np.uint64(_MASK)
        hi1, lo1 = p1 >> np.uint64(32), p1 & np.uint64(_MASK)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0, k1 = (k0 + np.uint64(W0)) & np.uint64(_MASK), (k1 + np.uint64(W1)) & np.uint64(_MASK)
    return np.stack(c).astype(np.uint32)


def u01(u):
    """uint32 -> float32 uniform in (0, 1]."""
    return (u.astype(np.float32) + np.float32(1.0)) * np.float32(2.3283064365386963e-10)


def normal_philox(out, n, counter, key, stream):
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    ctr = int(counter[0])
    c = np.stack([blocks, np.full_like(blocks, stream), np.full_like(blocks, ctr & _MASK),
                  np.full_like(blocks, (ctr >> 32) & _MASK)])
    r = philox4x32_10(c, (int(key[0]), int(key[1])))
    r0, r1 = np.sqrt(np.float32(-2) * np.log(u01(r[0]))), np.sqrt(np.float32(-2) * np.log(u01(r[2])))
    # sincospif(x): sin and cos of pi x, x = 2u in float32
    x0, x1 = [np.pi * (np.float32(2) * u01(r[j])).astype(np.float64) for j in (1, 3)]
    c0, s0, c1, s1 = (f(x).astype(np.float32) for x in (x0, x1) for f in (np.cos, np.sin))
    v = np.stack([r0 * c0, r0 * s0, r1 * c1, r1 * s1], axis=1).reshape(-1)
    out.reshape(-1)[:n] = v[:n]


def philox_keys(out, n, key0, key1, stream):
    i = np.arange(n, dtype=np.uint64)
    c = np.stack([i & np.uint64(_MASK), np.full_like(i, stream), i >> np.uint64(32), np.zeros_like(i)])
    out[:n] = philox4x32_10(c, (key0, key1))[0]


def gather_rows(data, perm, state, x, rows, dim, binarize, key):
    src = perm[state[BATCH_OFFSET]: state[BATCH_OFFSET] + rows]
    p = data[src].reshape(rows, dim).astype(np.float32)
    if binarize:
        s = int(state[STEP_IN_EPOCH])
        idx = np.arange(rows * dim, dtype=np.uint64)
        c = np.stack([idx, np.full_like(idx, 0xB1A5), np.full_like(idx, s & _MASK), np.full_like(idx, s >> 32)])
        u = u01(philox4x32_10(c, (int(key[0]), int(key[1])))[0]) - np.float32(2.3283064365386963e-10)
        p = (u.reshape(rows, dim) < p).astype(np.float32)
    x.reshape(rows, dim)[...] = p


def bias_act(y, b, b_stride, k, rows, n, relu):
    yv = y.reshape(k, rows, n)
    for m in range(k):
        yv[m] += b.reshape(-1)[m * b_stride: m * b_stride + n]
    if relu:
        np.maximum(yv, 0, out=yv)


def relu_back_bias_grad(dy, h, db, db_stride, rows, n, k=1):
    dyv = dy.reshape(k, rows, n)
    if h is not None:
        dyv *= h.reshape(k, rows, n) > 0
    for m in range(k):
        db.reshape(-1)[m * db_stride: m * db_stride + n] = dyv[m].sum(0)


def col_reduce(partial, db, db_stride, k, S, n):
    p = partial.reshape(-1)[: k * S * n].reshape(k, S, n)
    for m in range(k):
        db.reshape(-1)[m * db_stride: m * db_stride + n] = p[m].sum(0)


def recon_fwd_grad(logits, x, dlogits, rowloss, rows, n, likelihood):
    l = logits.reshape(-1, rows, n)
    xv = x.reshape(1, rows, n)
    y = np.float32(0.5) * np.tanh(np.float32(0.5) * l) + np.float32(0.5)
    scale = np.float32(1.0 / rows)
    if likelihood == 0:
        loss = np.maximum(l, 0) + np.log1p(np.exp(-np.abs(l))) - xv * l
        d = scale * (y - xv)
    else:
        e = y - xv
        loss = e * e
        d = (np.float32(2) * scale) * (e * (np.float32(1) - y) * y)
    dlogits.reshape(l.shape)[...] = d
    rowloss.reshape(-1)[...] = loss.sum(-1).reshape(-1)


def reparam(head, eps, z, krows, L):
    h = head.reshape(krows, 2 * L)
    z.reshape(krows, L)[...] = h[:, :L] + np.exp(np.float32(0.5) * h[:, L:]) * eps.reshape(krows, L)


def latent_backward(head, eps, dz, dhead, klrow, betas, state, krows, rows, L):
    h = head.reshape(krows, 2 * L)
    mean, logvar = h[:, :L], h[:, L:]
    g, e = dz.reshape(krows, L), eps.reshape(krows, L)
    bs = np.float32(betas[state[STEP_IN_EPOCH]] / np.float32(rows))
    ev = np.exp(logvar)
    d = dhead.reshape(krows, 2 * L)
    d[:, :L] = g + bs * mean
    d[:, L:] = np.float32(0.5) * (g * e * np.exp(np.float32(0.5) * logvar)) + (np.float32(0.5) * bs) * (ev - 1)
    klrow.reshape(-1)[...] = np.float32(0.5) * (mean * mean + ev - 1 - logvar).sum(1)


def finish_step(rowloss, klrow, betas, state, sums, loss, rows, k=1):
    r = rowloss.reshape(k, rows).astype(np.float64).sum(1)
    kk = klrow.reshape(k, rows).astype(np.float64).sum(1) if klrow is not None else np.zeros(k)
    beta = float(betas[state[STEP_IN_EPOCH]])
    s = sums.reshape(k, 3)
    s[:, 0] += r + beta * kk
    s[:, 1] += r
    s[:, 2] += kk
    loss.reshape(k, 3)[...] = np.stack([(r + beta * kk) / rows, r / rows, kk / rows], 1).astype(np.float32)


def advance(state, rng_counter, rows):
    state[STEP_IN_EPOCH] += 1
    state[BATCH_OFFSET] += rows
    state[ADAM_STEP] += 1
    rng_counter[0] += 1


def adam_flat(p, g, m, v, n, state, lr, beta1, beta2, eps):
    t = float(state[ADAM_STEP] + 1)
    f = np.float32
    inv_sqrt_bc2 = f(1.0 / np.sqrt(1.0 - beta2**t))
    step_size = f(lr / (1.0 - beta1**t))
    b1, b2 = f(beta1), f(beta2)
    m[:n] = b1 * m[:n] + (f(1) - b1) * g[:n]
    v[:n] = b2 * v[:n] + (f(1) - b2) * (g[:n] * g[:n])
    p[:n] -= step_size * (m[:n] / (np.sqrt(v[:n]) * inv_sqrt_bc2 + f(eps)))
