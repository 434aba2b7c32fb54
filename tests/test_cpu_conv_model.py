"""The conv VAE on the fused CPU engine (NumbaOps) against the reference model (NumpyOps): same losses,
same gradients for every parameter, in float64 and float32, on the training and the evaluation paths."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from cuvae.backends.cpu_logistic import LogisticBuffers, logistic_nll_and_grad  # noqa: E402
from cuvae.backends.cpu_conv_model import NumbaConvOps as NumbaOps  # noqa: E402
from cuvae.nn.conv_model import ConvArch, ConvVAE, logistic_nll, logistic_nll_grad  # noqa: E402
from cuvae.nn.ops import NumpyOps  # noqa: E402

rng = np.random.default_rng(3)

ARCHS = [
    dict(image_shape=(3, 16, 16), channels=(4, 6, 8), latent=3, likelihood="logistic"),  # the CIFAR shape, small
    dict(image_shape=(1, 7, 7), channels=(2, 3), latent=2, likelihood="bernoulli"),  # 7 -> 3 -> 1 -> 3 -> 7
    dict(image_shape=(3, 6, 5), channels=(2,), latent=2, likelihood="gaussian"),
    dict(image_shape=(2, 9, 8), channels=(3, 4), latent=2, likelihood="logistic", kind="ae"),
    dict(image_shape=(1, 10, 10), channels=(3, 5), latent=2, likelihood="bernoulli", kernel=3, stride=1, padding=0),
]


def grid_pixels(n, d):
    u = rng.integers(0, 256, size=(n, d))
    u[0, :3], u[1, :3] = 0, 255  # both end levels
    return u / 255.0


def step(model, flat, x, eps, beta=0.7):
    grads = np.full_like(flat, np.nan)
    P, G = model.layout.views(flat), model.layout.views(grads)
    loss, recon, kl = model.loss_and_grad(P, G, x, eps, beta)
    return float(loss), float(recon), float(kl), grads


@pytest.mark.parametrize("kw", ARCHS, ids=lambda kw: f"{kw['image_shape']}-{kw['likelihood']}-{kw.get('kind', 'vae')}")
def test_engine_matches_reference_float64(kw):
    arch = ConvArch(**kw)
    ref, fast = ConvVAE(arch, NumpyOps(), np.float64), ConvVAE(arch, NumbaOps(), np.float64)
    assert ref.engine is None and fast.engine is not None
    flat = ref.initial_params("pytorch", 1)
    if "out.logscale" in ref.layout.shapes:
        ref.layout.views(flat)["out.logscale"][...] = [-1.5, -2.5, -3.0][: arch.image_shape[0]]
    B = 5
    x, eps = grid_pixels(B, arch.in_dim), rng.normal(size=(B, arch.latent))
    want, got = step(ref, flat, x, eps), step(fast, flat, x, eps)
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-11)
    assert np.isfinite(got[3]).all(), "every gradient entry must be written"
    Gr, Gf = ref.layout.views(want[3]), fast.layout.views(got[3])
    for name, _ in ref.layout.entries:
        np.testing.assert_allclose(Gf[name], Gr[name], rtol=1e-9, atol=1e-12, err_msg=name)
    # the evaluation path (encode, decode, per-example likelihood) in chunks and whole
    P = ref.layout.views(flat)
    chunked = ConvVAE(arch, NumbaOps(), np.float64, chunk=2)
    for m in (fast, chunked):
        r1, k1 = ref.losses(P, x, eps)
        r2, k2 = m.losses(P, x, eps)
        np.testing.assert_allclose(r2, r1, rtol=1e-11)
        np.testing.assert_allclose(k2, k1, rtol=1e-11)


def test_engine_float32_is_close_to_float64_reference():
    arch = ConvArch(**ARCHS[0])
    ref, fast = ConvVAE(arch, NumpyOps(), np.float64), ConvVAE(arch, NumbaOps(), np.float32)
    flat = ref.initial_params("pytorch", 2)
    B = 8
    x, eps = grid_pixels(B, arch.in_dim), rng.normal(size=(B, arch.latent))
    want = step(ref, flat, x, eps)
    got = step(fast, flat.astype(np.float32), x.astype(np.float32), eps.astype(np.float32))
    np.testing.assert_allclose(got[:3], want[:3], rtol=2e-5)
    scale = np.abs(want[3]).max()
    np.testing.assert_allclose(got[3], want[3], rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-4)])
def test_fused_logistic_matches_reference(dtype, tol):
    B, C, D = 6, 3, 40
    logits = (rng.normal(size=(B, C * D)) * 3).astype(dtype)
    logits[0, :2] = [40.0, -40.0]  # far from the data: stays finite
    x = grid_pixels(B, C * D).astype(dtype)
    logscale = np.array([-1.0, -4.0, 0.3], dtype)
    want = logistic_nll(np, logits.astype(np.float64), x.astype(np.float64), logscale.astype(np.float64))
    dl, ds = np.empty((B, C * D)), np.empty(C)
    logistic_nll_grad(np, logits.astype(np.float64), x.astype(np.float64), logscale.astype(np.float64), 0.25, dl, ds)
    buf = LogisticBuffers(B, C, dtype)
    gdl, gds, gdb = np.empty_like(logits), np.empty(C, dtype), np.empty(C, dtype)
    nll = logistic_nll_and_grad(logits, x, logscale, 0.25, gdl, buf, gds, gdb)
    np.testing.assert_allclose(nll, want, rtol=tol)
    np.testing.assert_allclose(gdl, dl, rtol=tol * 10, atol=tol * 1e-2)
    np.testing.assert_allclose(gds, ds, rtol=tol * 10)
    np.testing.assert_allclose(gdb, dl.reshape(B, C, D).sum(axis=(0, 2)), rtol=tol * 10, atol=tol)


def test_parallel_twin_is_not_the_cached_serial_one(tmp_path):
    """numba's disk cache ignores ``parallel``: a twin compiled serial first must not be loaded as the
    parallel one (it was, before the twins got their own names)."""
    code = ("import numpy as np, numba\n"
            "from cuvae.backends import cpu_ops as O\n"
            "h = np.ones(64, np.float32)\n"
            "O._RELU[0](h); O._RELU[1](h)\n"
            "print(numba.threading_layer())\n")
    env = {"NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    # in one fresh process: the serial twin compiles and is cached, then the parallel one must compile
    # its own (before the fix it loaded the serial one, and the threading layer never started)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
