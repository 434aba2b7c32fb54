"""The NumPy twins of kernels/conv.cu against the CPU conv kernels (same contract), in NHWC and NCHW strides,
and the likelihood twins against cuvae.nn.conv_model and NumpyOps."""

import numpy as np
import pytest

pytest.importorskip("numba")

from cuvae.backends import cpu_conv as F  # noqa: E402
from cuvae.backends.kernels import conv_twins as T  # noqa: E402
from cuvae.backends.kernels import source  # noqa: E402

rng = np.random.default_rng(11)

CASES = [  # (N, C, H, W, k, s, p, Ho, Wo): conv grids, and a transposed conv's backward grid (output padding)
    (2, 3, 9, 8, 4, 2, 1, 4, 4),
    (2, 4, 7, 6, 3, 1, 2, 9, 8),
    (1, 2, 5, 5, 1, 2, 0, 3, 3),
    (2, 3, 7, 7, 4, 2, 1, 3, 3),   # 3 -> 7 with output padding 1: rows the windows never reach
]


def elem_strides(a):
    return [st // a.itemsize for st in a.strides]


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("N,C,H,W,k,s,p,Ho,Wo", CASES)
def test_im2col_twin_matches_cpu_kernel(N, C, H, W, k, s, p, Ho, Wo, layout):
    if layout == "nhwc":
        base = rng.normal(size=(N, H, W, C)).astype(np.float32)
        x4 = base
    else:
        base = rng.normal(size=(N, C, H, W)).astype(np.float32)
        x4 = base.transpose(0, 2, 3, 1)
    want = F.im2col(x4, k, s, p, Ho, Wo, np.full((N * Ho * Wo, k * k * C), np.nan, np.float32))
    got = np.full_like(want, np.nan)
    T.im2col_nhwc(base.reshape(-1), *elem_strides(x4), N, H, W, C, k, s, p, Ho, Wo, got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("N,C,H,W,k,s,p,Ho,Wo", CASES)
def test_col2im_twin_matches_cpu_kernel(N, C, H, W, k, s, p, Ho, Wo, mode):
    cols = rng.normal(size=(N * Ho * Wo, k * k * C)).astype(np.float32)
    bias = rng.normal(size=C).astype(np.float32)
    mask = rng.normal(size=(N, H, W, C)).astype(np.float32)
    want = np.full((N, H, W, C), np.nan, np.float32)
    kw = {0: {}, 1: dict(bias=bias), 2: dict(bias=bias, relu=True),
          3: dict(mask4=mask, partial=np.empty((N * H, C), np.float32))}[mode]
    F.col2im(cols, k, s, p, Ho, Wo, want, **kw)
    out = np.full((N, C, H, W), np.nan, np.float32)  # written through NCHW strides, as the last layer does
    o4 = out.transpose(0, 2, 3, 1)
    mask_nchw = np.ascontiguousarray(mask.transpose(0, 3, 1, 2))
    T.col2im_nhwc(cols, N, H, W, C, k, s, p, Ho, Wo, bias, mode, mask_nchw.reshape(-1), out.reshape(-1),
                  *elem_strides(o4))
    np.testing.assert_allclose(o4, want, rtol=1e-5, atol=1e-5)


def test_conv_source_declares_the_twinned_kernels():
    from cuvae.backends.kernels import CONV_KERNELS

    src = source("conv.cu")
    assert src.count('extern "C" __global__ void') == len(CONV_KERNELS)
    for name in CONV_KERNELS:
        assert f'extern "C" __global__ void {name}(' in src and callable(getattr(T, name))


# ---- the likelihood twins against the specification (cuvae.nn.conv_model, NumpyOps) ----------------------------------
def _pixels(B, C, D, seed=3):
    r = np.random.default_rng(seed)
    logits = r.normal(scale=3, size=(B, C * D)).astype(np.float32)
    x = (r.integers(0, 256, size=(B, C * D)) / 255).astype(np.float32)
    x[0, :3], x[-1, -3:] = 0.0, 1.0  # both open end bins
    return logits, x


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "logistic"])
def test_pixel_likelihood_twins_match_the_model(likelihood):
    from cuvae.nn.conv_model import logistic_nll, logistic_nll_grad
    from cuvae.nn.ops import NumpyOps

    B, C, D, scale = 5, 3, 40, 1 / 5
    logits, x = _pixels(B, C, D)
    logscale = np.array([-2.0, -1.0, -3.5], np.float32)
    ops, tmp = NumpyOps(), np.empty_like(logits)
    want_d, want_ls = np.empty_like(logits), np.zeros(C, np.float32)
    if likelihood == "bernoulli":
        want_nll = ops.bernoulli_nll(logits, x, tmp)
        ops.bernoulli_nll_grad(logits, x, scale, want_d)
    elif likelihood == "gaussian":
        want_nll = ops.sse(logits, x, tmp)
        ops.sse_grad(logits, x, scale, want_d)
    else:
        want_nll = logistic_nll(np, logits, x, logscale)
        logistic_nll_grad(np, logits, x, logscale, scale, want_d, want_ls)
    code = {"bernoulli": 0, "gaussian": 1, "logistic": 2}[likelihood]
    d, part = np.full_like(logits, np.nan), np.full(B * C * 3, np.nan, np.float32)
    T.pixel_nll_grad(logits, x, logscale, d, part, C, D, code, scale)
    rowloss, dls, db = np.full(B, np.nan, np.float32), np.zeros(C, np.float32), np.full(C, np.nan, np.float32)
    T.pixel_finish(part, rowloss, dls, db, B, C)
    np.testing.assert_allclose(d, want_d, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(rowloss, want_nll, rtol=1e-5)
    np.testing.assert_allclose(dls, want_ls, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(db, want_d.reshape(B, C, D).sum(axis=(0, 2)), rtol=1e-4, atol=1e-6)


def test_gather_index_twin_is_a_gather():
    src, idx = rng.normal(size=20).astype(np.float32), rng.permutation(20)
    dst = np.zeros(20, np.float32)
    T.gather_index(src, idx, dst, 20)
    np.testing.assert_array_equal(dst, src[idx])
