"""Conv2D and ConvTranspose2D: forward against naive loops, backward against finite differences (float64)."""

import numpy as np
import pytest

from cuvae.nn.conv import conv2d, conv2d_backward, conv_out_size, conv_transpose2d, conv_transpose2d_backward, \
    conv_transpose_out_size
from cuvae.nn.gradcheck import assert_grad_close, numerical_grad

rng = np.random.default_rng(0)


def naive_conv(x, W, b, s, p):
    N, C, H, Wd = x.shape
    F, _, k, _ = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    Ho, Wo = (H + 2 * p - k) // s + 1, (Wd + 2 * p - k) // s + 1
    out = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, f, i, j] = (xp[n, :, i * s : i * s + k, j * s : j * s + k] * W[f]).sum() + b[f]
    return out


def naive_conv_transpose(x, W, b, s, p, op):
    """Scatter form, straight from the definition: out[o] += x[i] W[k] where o = i*s - p + k."""
    N, Cin, H, Wd = x.shape
    _, Cout, k, _ = W.shape
    Ho, Wo = (H - 1) * s - 2 * p + k + op, (Wd - 1) * s - 2 * p + k + op
    out = np.zeros((N, Cout, Ho, Wo)) + b.reshape(1, Cout, 1, 1)
    for n in range(N):
        for c in range(Cin):
            for i in range(H):
                for j in range(Wd):
                    for u in range(k):
                        for v in range(k):
                            oi, oj = i * s - p + u, j * s - p + v
                            if 0 <= oi < Ho and 0 <= oj < Wo:
                                out[n, :, oi, oj] += x[n, c, i, j] * W[c, :, u, v]
    return out


CONV_CASES = [  # (N, C, H, W, F, k, s, p)
    (2, 3, 5, 5, 4, 3, 1, 1),
    (2, 2, 7, 6, 3, 3, 2, 1),   # odd sizes, stride 2
    (1, 2, 8, 8, 3, 4, 2, 1),   # the model's layer shape
    (2, 1, 7, 7, 2, 4, 2, 2),   # padding 2
    (2, 3, 5, 4, 2, 1, 1, 0),   # 1x1 kernel
    (1, 2, 6, 5, 2, 1, 2, 0),   # 1x1, stride 2 (skips pixels)
    (2, 2, 6, 6, 3, 3, 2, 0),   # no padding
    (1, 1, 3, 3, 1, 3, 1, 2),   # padding larger than needed
]

TCONV_CASES = [  # (N, Cin, H, W, Cout, k, s, p, op)
    (2, 3, 3, 3, 2, 3, 1, 1, 0),
    (2, 2, 3, 4, 3, 4, 2, 1, 0),   # the model's layer shape
    (1, 2, 3, 3, 2, 4, 2, 1, 1),   # output padding (3 -> 7)
    (2, 2, 4, 3, 2, 3, 2, 1, 1),   # odd kernel, output padding
    (1, 2, 3, 3, 2, 3, 2, 0, 0),
    (2, 1, 5, 5, 2, 4, 2, 2, 0),   # padding 2
    (1, 3, 3, 2, 2, 1, 1, 0, 0),   # 1x1
    (1, 2, 2, 2, 1, 3, 2, 0, 1),   # output padding with no padding: bias-only rows
]


@pytest.mark.parametrize("N,C,H,W,F,k,s,p", CONV_CASES)
def test_conv2d_forward_matches_naive(N, C, H, W, F, k, s, p):
    x, Wt, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(F, C, k, k)), rng.normal(size=F)
    out, _ = conv2d(np, x, Wt, b, s, p)
    assert out.shape == (N, F, conv_out_size(H, k, s, p), conv_out_size(W, k, s, p))
    np.testing.assert_allclose(out, naive_conv(x, Wt, b, s, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,Cin,H,W,Cout,k,s,p,op", TCONV_CASES)
def test_conv_transpose2d_forward_matches_naive(N, Cin, H, W, Cout, k, s, p, op):
    x, Wt, b = rng.normal(size=(N, Cin, H, W)), rng.normal(size=(Cin, Cout, k, k)), rng.normal(size=Cout)
    out, _ = conv_transpose2d(np, x, Wt, b, s, p, op)
    assert out.shape == (N, Cout, conv_transpose_out_size(H, k, s, p, op), conv_transpose_out_size(W, k, s, p, op))
    np.testing.assert_allclose(out, naive_conv_transpose(x, Wt, b, s, p, op), rtol=1e-12, atol=1e-12)


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(x), y> == <x, conv_T(y)> with the same weights (no bias): the two layers agree."""
    x, W = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(4, 3, 4, 4))
    y = rng.normal(size=(2, 4, 4, 4))
    cx, _ = conv2d(np, x, W, np.zeros(4), 2, 1)
    ty, _ = conv_transpose2d(np, y, W, np.zeros(3), 2, 1, 0)
    assert np.isclose((cx * y).sum(), (x * ty).sum(), rtol=1e-12)


def _check(f, arr, analytic, name, k=15):
    idx = rng.choice(arr.size, size=min(arr.size, k), replace=False)
    assert_grad_close(analytic.reshape(-1)[idx], numerical_grad(f, arr, idx), name)


@pytest.mark.parametrize("N,C,H,W,F,k,s,p", CONV_CASES)
def test_conv2d_backward_finite_differences(N, C, H, W, F, k, s, p):
    x, Wt, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(F, C, k, k)), rng.normal(size=F)
    dout = rng.normal(size=(N, F, conv_out_size(H, k, s, p), conv_out_size(W, k, s, p)))

    def f():
        return (conv2d(np, x, Wt, b, s, p)[0] * dout).sum()

    _, cache = conv2d(np, x, Wt, b, s, p)
    dW, db, dx = np.full_like(Wt, np.nan), np.full_like(b, np.nan), np.full_like(x, np.nan)
    conv2d_backward(np, dout, cache, Wt, dW, db, dx)
    _check(f, Wt, dW, "conv W")
    _check(f, b, db, "conv b")
    _check(f, x, dx, "conv x", k=30)
    assert np.isfinite(dx).all()  # every entry written, including those no window touches


@pytest.mark.parametrize("N,Cin,H,W,Cout,k,s,p,op", TCONV_CASES)
def test_conv_transpose2d_backward_finite_differences(N, Cin, H, W, Cout, k, s, p, op):
    x, Wt, b = rng.normal(size=(N, Cin, H, W)), rng.normal(size=(Cin, Cout, k, k)), rng.normal(size=Cout)
    Ho, Wo = conv_transpose_out_size(H, k, s, p, op), conv_transpose_out_size(W, k, s, p, op)
    dout = rng.normal(size=(N, Cout, Ho, Wo))

    def f():
        return (conv_transpose2d(np, x, Wt, b, s, p, op)[0] * dout).sum()

    _, cache = conv_transpose2d(np, x, Wt, b, s, p, op)
    dW, db, dx = np.full_like(Wt, np.nan), np.full_like(b, np.nan), np.full_like(x, np.nan)
    conv_transpose2d_backward(np, dout, cache, Wt, dW, db, dx)
    _check(f, Wt, dW, "conv_transpose W")
    _check(f, b, db, "conv_transpose b")
    _check(f, x, dx, "conv_transpose x", k=30)


def test_preallocated_buffers_are_reused_and_match():
    x, W, b = rng.normal(size=(2, 3, 8, 8)), rng.normal(size=(4, 3, 4, 4)), rng.normal(size=4)
    out = np.empty((2, 4, 4, 4))
    cols = np.empty((2 * 4 * 4, 3 * 16))
    xpad = np.full((2, 3, 10, 10), 7.0)  # stale contents must not leak into the borders
    got, cache = conv2d(np, x, W, b, 2, 1, out=out, cols=cols, xpad=xpad)
    assert got is out and cache[0] is cols
    np.testing.assert_allclose(out, naive_conv(x, W, b, 2, 1), rtol=1e-12)


def test_bad_weight_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(np, np.zeros((1, 2, 4, 4)), np.zeros((3, 5, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="output_padding"):
        conv_transpose2d(np, np.zeros((1, 2, 4, 4)), np.zeros((2, 3, 3, 3)), np.zeros(3), 2, 1, 2)
