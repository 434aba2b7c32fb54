"""The fused NHWC conv layers of cuvae.backends.cpu_conv against the NCHW reference ops of cuvae.nn.conv."""

import os
import time

import numpy as np
import pytest

pytest.importorskip("numba")

from cuvae.backends import cpu_conv as F  # noqa: E402
from cuvae.nn import conv as R  # noqa: E402

rng = np.random.default_rng(5)


@pytest.fixture(params=["whole", "split"], autouse=True)
def split(request, monkeypatch):
    """Every case also with im2col/col2im cut into three parts run on the conv pool's threads."""
    if request.param == "split":
        from cuvae.backends import cpu_ops

        monkeypatch.setattr(F, "SPLIT_MIN", 0)
        monkeypatch.setattr(cpu_ops, "threads", lambda: 3)

CONV_CASES = [  # (N, C, H, W, F, k, s, p): strides 1-2, paddings 0-2, kernels 1/3/4, odd sizes
    (2, 3, 5, 5, 4, 3, 1, 1),
    (2, 2, 7, 6, 3, 3, 2, 1),
    (3, 3, 9, 8, 5, 4, 2, 1),   # the model's layer shape, odd size
    (2, 1, 7, 7, 2, 4, 2, 2),
    (2, 3, 5, 4, 2, 1, 1, 0),
    (1, 2, 6, 5, 2, 1, 2, 0),
    (2, 2, 6, 6, 3, 3, 2, 0),
    (1, 1, 3, 3, 1, 3, 1, 2),
    (2, 4, 6, 7, 3, 4, 1, 2),
]

TCONV_CASES = [  # (N, Cin, H, W, Cout, k, s, p, op)
    (2, 3, 3, 3, 2, 3, 1, 1, 0),
    (2, 2, 3, 4, 3, 4, 2, 1, 0),
    (1, 2, 3, 3, 2, 4, 2, 1, 1),
    (2, 2, 4, 3, 2, 3, 2, 1, 1),
    (1, 2, 3, 3, 2, 3, 2, 0, 0),
    (2, 1, 5, 5, 2, 4, 2, 2, 0),
    (1, 3, 3, 2, 2, 1, 1, 0, 0),
    (1, 2, 2, 2, 1, 3, 2, 0, 1),
    (2, 3, 5, 4, 4, 4, 2, 1, 1),
]


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def rows(a):
    return nhwc(a).reshape(-1, a.shape[1])


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("N,C,H,W,Fo,k,s,p", CONV_CASES)
def test_conv2d_matches_reference(N, C, H, W, Fo, k, s, p, dtype, tol):
    x, Wt, b = (rng.normal(size=sh).astype(dtype) for sh in [(N, C, H, W), (Fo, C, k, k), (Fo,)])
    ref, cache = R.conv2d(np, x, Wt, b, s, p)
    Ho, Wo = ref.shape[2:]
    buf = F.ConvBuffers(N * Ho * Wo, C * k * k, Fo, C * k * k, Fo, dtype)
    out = np.full((N * Ho * Wo, Fo), np.nan, dtype)
    F.conv2d_forward(x.transpose(0, 2, 3, 1), Wt, b, s, p, out, buf)  # NCHW input through a view
    np.testing.assert_allclose(out, rows(ref), rtol=tol, atol=tol)
    for relu in (True,):
        F.conv2d_forward(nhwc(x), Wt, b, s, p, out, buf, relu=relu)
        np.testing.assert_allclose(out, np.maximum(rows(ref), 0), rtol=tol, atol=tol)
    F.conv2d_forward(nhwc(x), Wt, b, s, p, out, buf)

    dout = rng.normal(size=ref.shape).astype(dtype)
    dW, db, dx = np.empty_like(Wt), np.empty_like(b), np.empty_like(x)
    R.conv2d_backward(np, dout, cache, Wt, dW, db, dx)
    fdW, fdb = np.full_like(Wt, np.nan), np.full_like(b, np.nan)
    fdx = np.full((N, H, W, C), np.nan, dtype)
    F.conv2d_backward(rows(dout), Wt, fdW, fdb, s, p, buf, dx4=fdx)
    np.testing.assert_allclose(fdW, dW, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(fdb, db, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(fdx, nhwc(dx), rtol=tol, atol=tol * 10)

    # the fused ReLU mask of the layer below and its bias gradient
    F.conv2d_forward(nhwc(x), Wt, b, s, p, out, buf)
    act = rng.normal(size=(N, H, W, C)).astype(dtype)
    partial = np.empty((N * H, C), dtype)
    F.conv2d_backward(rows(dout), Wt, fdW, fdb, s, p, buf, dx4=fdx, mask4=act, dx_partial=partial)
    masked = nhwc(dx) * (act > 0)
    np.testing.assert_allclose(fdx, masked, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(partial.sum(0), masked.sum(axis=(0, 1, 2)), rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("N,Cin,H,W,Cout,k,s,p,op", TCONV_CASES)
def test_conv_transpose2d_matches_reference(N, Cin, H, W, Cout, k, s, p, op, dtype, tol):
    x, Wt, b = (rng.normal(size=sh).astype(dtype) for sh in [(N, Cin, H, W), (Cin, Cout, k, k), (Cout,)])
    ref, cache = R.conv_transpose2d(np, x, Wt, b, s, p, op)
    Ho, Wo = ref.shape[2:]
    buf = F.ConvBuffers(N * H * W, Cout * k * k, Cin, Cout * k * k, Cout, dtype)
    out = np.full((N, Ho, Wo, Cout), np.nan, dtype)
    F.conv_transpose2d_forward(rows(x), (H, W), Wt, b, s, p, out, buf)
    np.testing.assert_allclose(out, nhwc(ref), rtol=tol, atol=tol)
    nchw = np.full(ref.shape, np.nan, dtype)  # an NCHW output through a view (the model's last layer)
    F.conv_transpose2d_forward(rows(x), (H, W), Wt, b, s, p, nchw.transpose(0, 2, 3, 1), buf, relu=True)
    np.testing.assert_allclose(nchw, np.maximum(ref, 0), rtol=tol, atol=tol)

    dout = rng.normal(size=ref.shape).astype(dtype)
    dW, db, dx = np.empty_like(Wt), np.empty_like(b), np.empty_like(x)
    R.conv_transpose2d_backward(np, dout, cache, Wt, dW, db, dx)
    fdW, fdb = np.full_like(Wt, np.nan), np.full_like(b, np.nan)
    fdx = np.full((N * H * W, Cin), np.nan, dtype)
    F.conv_transpose2d_backward(dout.transpose(0, 2, 3, 1), rows(x), (H, W), Wt, fdW, fdb, s, p, buf, fdx)
    np.testing.assert_allclose(fdW, dW, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(fdb, db, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(fdx, rows(dx), rtol=tol, atol=tol * 10)


def test_mask_colsum_and_weight_packing():
    d = rng.normal(size=(37, 5))
    act = rng.normal(size=(37, 5))
    db, partial = np.empty(5), np.empty((F.SUM_BLOCKS, 5))
    want = d * (act > 0)
    F.mask_colsum(d, act, db, partial)
    np.testing.assert_allclose(d, want, rtol=0, atol=0)
    np.testing.assert_allclose(db, want.sum(0), rtol=1e-12)
    W = rng.normal(size=(4, 3, 2, 2))
    Wm = F.pack_weight(W, np.empty((4, 12)))
    assert Wm[1, (1 * 2 + 0) * 3 + 2] == W[1, 2, 1, 0]
    np.testing.assert_array_equal(F.unpack_weight(Wm, np.empty_like(W)), W)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_split_pool_works_in_a_forked_child(split):
    """A forked child inherits the pool object but not its threads: it must make its own, not wait forever."""
    from cuvae.backends import cpu_ops

    if cpu_ops.threads() < 2:
        pytest.skip("one thread: nothing is split")
    x = rng.normal(size=(100, 16, 16, 32)).astype(np.float32)
    cols = np.empty((100 * 64, 512), np.float32)
    F.im2col(x, 4, 2, 1, 8, 8, cols)  # the parent's pool now exists (with SPLIT_MIN at its default: large work)
    want = cols.copy()
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if its split im2col finished and is right
        try:
            out = np.full_like(cols, np.nan)
            F.im2col(x, 4, 2, 1, 8, 8, out)
            os._exit(0 if np.array_equal(out, want) else 1)
        except BaseException:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's split im2col hung")
