"""NumbaOps (the CPU fast path) against NumpyOps (the specification), method by method."""

import numpy as np
import pytest

numba = pytest.importorskip("numba", reason="numba is not installed: the fused CPU kernels (cuvae.backends.cpu_ops) are untested")

from cuvae.backends import cpu_ops  # noqa: E402
from cuvae.backends.cpu_ops import NumbaOps  # noqa: E402
from cuvae.nn.model import VAE, Arch  # noqa: E402
from cuvae.nn.ops import NumpyOps  # noqa: E402
from cuvae.nn.optim import Adam  # noqa: E402

ref, fast = NumpyOps(), NumbaOps()
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def close(a, b, dt, **kw):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), **{**TOL[dt], **kw})


def data(dt, *shape, scale=1.0, seed=0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(dt)


@pytest.fixture(params=[False, True], ids=["serial", "parallel"])
def parallel(request, monkeypatch):
    """Run each test with the serial kernels and again with the multi-threaded ones."""
    monkeypatch.setattr(cpu_ops, "PARALLEL_MIN", 0 if request.param else 1 << 62)
    return request.param


@pytest.mark.parametrize("dt", DTYPES)
def test_linear_and_backward(dt, parallel):
    x, W, b, dy = data(dt, 7, 5), data(dt, 5, 3, seed=1), data(dt, 3, seed=2), data(dt, 7, 3, seed=3)
    close(fast.linear(x, W, b, np.empty((7, 3), dt)), ref.linear(x, W, b, np.empty((7, 3), dt)), dt)
    got = [np.empty_like(W), np.full_like(b, 99), np.empty_like(x)]
    want = [np.empty_like(W), np.empty_like(b), np.empty_like(x)]
    fast.linear_backward(dy, x, W, *got)
    ref.linear_backward(dy, x, W, *want)
    for g, w in zip(got, want):
        close(g, w, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_relu_and_backward(dt, parallel):
    h = data(dt, 9, 11)
    h[0, :3] = [0.0, -0.0, 1e-30]
    a, b = fast.relu(h.copy()), ref.relu(h.copy())
    np.testing.assert_array_equal(a, b)
    dh = data(dt, 9, 11, seed=4)
    np.testing.assert_array_equal(fast.relu_backward(dh.copy(), a), ref.relu_backward(dh.copy(), b))


@pytest.mark.parametrize("dt", DTYPES)
def test_tanh_and_backward(dt, parallel):
    h = data(dt, 9, 11, scale=3.0)
    a, b = fast.tanh(h.copy()), ref.tanh(h.copy())
    close(a, b, dt)
    dh = data(dt, 9, 11, seed=4)
    close(fast.tanh_backward(dh.copy(), a), ref.tanh_backward(dh.copy(), b), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "bernoulli_nll", "sse", "bernoulli_nll_grad", "sse_grad"])
def test_pixel_ops(dt, name, parallel):
    logits = data(dt, 6, 50, scale=8.0)
    logits[0, :6] = [-800.0, 800.0, 0.0, -88.5, 87.9, -1e-8]  # saturation, the clamp and the origin
    x = np.random.default_rng(5).uniform(size=(6, 50)).astype(dt)
    out = {}
    for key, ops in (("fast", fast), ("ref", ref)):
        if name == "sigmoid":
            out[key] = ops.sigmoid(logits, np.empty_like(logits))
        elif name.endswith("_grad"):
            out[key] = getattr(ops, name)(logits, x, 0.37, np.empty_like(logits))
        else:
            out[key] = getattr(ops, name)(logits, x, np.empty_like(logits))
    assert out["fast"].shape == out["ref"].shape
    assert np.isfinite(out["fast"]).all()
    # float32: the kernels' exp is a few ulp, NumPy's tanh route another few: compare at 1e-6 of the scale
    atol = 1e-6 * max(1.0, float(np.abs(out["ref"]).max())) if dt == np.float32 else 1e-12
    close(out["fast"], out["ref"], dt, atol=atol)


@pytest.mark.parametrize("dt", DTYPES)
def test_latent_ops(dt):
    head = data(dt, 5, 8, scale=2.0)  # mean | logvar as strided views, as the model has them
    mean, logvar = head[:, :4], head[:, 4:]
    eps, dz = data(dt, 5, 4, seed=6), data(dt, 5, 4, seed=7)
    close(fast.reparameterize(mean, logvar, eps, np.empty((5, 4), dt)),
          ref.reparameterize(mean, logvar, eps, np.empty((5, 4), dt)), dt)
    close(fast.kl(mean, logvar), ref.kl(mean, logvar), dt)
    res = {}
    for key, ops in (("fast", fast), ("ref", ref)):
        dhead = np.empty_like(head)
        dmean, dlogvar = dhead[:, :4], dhead[:, 4:]
        ops.reparameterize_backward(dz, logvar, eps, dmean, dlogvar)
        ops.kl_grad_add(mean, logvar, 0.3, dmean, dlogvar)
        res[key] = dhead
    close(res["fast"], res["ref"], dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_adam(dt, parallel):
    n = 1001
    bufs = {}
    for key, ops in (("fast", fast), ("ref", ref)):
        p, m, v = data(dt, n), np.zeros(n, dt), np.zeros(n, dt)
        for step in range(1, 4):
            ops.adam(p, data(dt, n, seed=step), m, v, np.empty(n, dt), 1e-2, 0.9, 0.999, 1e-8, step)
        bufs[key] = (p, m, v)
    for a, b in zip(bufs["fast"], bufs["ref"]):
        close(a, b, dt, rtol=TOL[dt]["rtol"] * 10)


def test_fallbacks_keep_numpy_meaning():
    """Inputs the kernels do not cover (mixed dtypes, non-contiguous) still give NumpyOps' result."""
    a = data(np.float64, 8, 6)[:, ::2]  # non-contiguous
    x = np.random.default_rng(1).uniform(size=(8, 3)).astype(np.float32)  # other dtype
    np.testing.assert_allclose(fast.sse_grad(a, x, 0.5, np.empty_like(a)), ref.sse_grad(a, x, 0.5, np.empty_like(a)))
    np.testing.assert_array_equal(fast.relu(a.copy()), ref.relu(a.copy()))


@pytest.mark.parametrize("likelihood,kind", [("gaussian", "vae"), ("bernoulli", "vae"), ("bernoulli", "ae")])
def test_whole_step_matches_numpy(likelihood, kind):
    """A few Adam steps of the whole model: NumbaOps and NumpyOps stay together in float64."""
    arch = Arch(in_dim=20, hidden=(12, 7), latent=3, likelihood=likelihood, kind=kind)
    rng = np.random.default_rng(0)
    xs = rng.uniform(size=(4, 10, 20))
    epss = rng.standard_normal((4, 10, 3))
    params = {}
    for key, ops in (("fast", fast), ("ref", ref)):
        model = VAE(arch, ops, np.float64)
        p = model.initial_params("pytorch", 1)
        g = np.zeros_like(p)
        P, G = model.layout.views(p), model.layout.views(g)
        adam = Adam(ops, p.size, np.float64, lr=1e-2)
        losses = []
        for x, eps in zip(xs, epss):
            losses.append(float(model.loss_and_grad(P, G, x, eps, 0.9)[0]))
            adam.step(p, g)
        params[key] = (p, losses)
    np.testing.assert_allclose(params["fast"][1], params["ref"][1], rtol=1e-10)
    np.testing.assert_allclose(params["fast"][0], params["ref"][0], rtol=1e-8, atol=1e-10)


def test_threads_roundtrip():
    before = cpu_ops.threads()
    cpu_ops.set_threads(1)
    assert cpu_ops.threads() == 1
    cpu_ops.set_threads(before)
