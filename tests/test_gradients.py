"""Every gradient against central finite differences in float64, eps held fixed."""

import numpy as np
import pytest

from cuvae.nn.gradcheck import assert_grad_close, numerical_grad
from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps
from cuvae.nn.params import init_params

ops = NumpyOps()
rng = np.random.default_rng(0)


def pick(n, k=12):
    return rng.choice(n, size=min(n, k), replace=False)


def check(f, x, analytic, name, k=12):
    idx = pick(x.size, k)
    assert_grad_close(analytic.reshape(-1)[idx], numerical_grad(f, x, idx), name)


def test_linear_forward_backward():
    x, W, b = rng.normal(size=(5, 7)), rng.normal(size=(7, 3)), rng.normal(size=3)
    dy = rng.normal(size=(5, 3))

    def f():
        return (ops.linear(x, W, b, np.empty((5, 3))) * dy).sum()

    dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)
    ops.linear_backward(dy, x, W, dW, db, dx)
    check(f, W, dW, "linear W")
    check(f, b, db, "linear b")
    check(f, x, dx, "linear x")


def test_relu_backward():
    pre = rng.normal(size=(6, 4))
    pre[np.abs(pre) < 1e-3] = 0.5  # keep away from the kink
    dy = rng.normal(size=(6, 4))

    def f():
        return (ops.relu(pre.copy()) * dy).sum()

    h = ops.relu(pre.copy())
    check(f, pre, ops.relu_backward(dy.copy(), h), "relu")


def test_tanh_backward():
    pre = rng.normal(scale=2, size=(6, 4))
    dy = rng.normal(size=(6, 4))

    def f():
        return (ops.tanh(pre.copy()) * dy).sum()

    h = ops.tanh(pre.copy())
    check(f, pre, ops.tanh_backward(dy.copy(), h), "tanh", k=24)


@pytest.mark.parametrize("kind", ["bernoulli", "sse"])
def test_likelihood_grads(kind):
    logits = rng.normal(scale=3, size=(4, 9))
    x = rng.uniform(size=(4, 9))
    tmp = np.empty_like(logits)
    fwd = ops.bernoulli_nll if kind == "bernoulli" else ops.sse
    grad = ops.bernoulli_nll_grad if kind == "bernoulli" else ops.sse_grad

    def f():
        return 0.25 * fwd(logits, x, tmp).sum()

    check(f, logits, grad(logits, x, 0.25, np.empty_like(logits)), kind, k=36)


def test_bernoulli_stable_for_extreme_logits():
    logits = np.array([[-800.0, 800.0, 0.0]])
    x = np.array([[1.0, 0.0, 0.5]])
    nll = ops.bernoulli_nll(logits, x, np.empty_like(logits))
    assert np.isfinite(nll).all()
    assert nll[0] == pytest.approx(800 + 800 + np.log(2))


def test_reparameterize_and_kl_grads():
    mean, logvar, eps = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    dz = rng.normal(size=(3, 4))

    def f():
        z = ops.reparameterize(mean, logvar, eps, np.empty_like(mean))
        return (z * dz).sum() + 0.7 * ops.kl(mean, logvar).sum()

    dmean, dlogvar = np.empty_like(mean), np.empty_like(logvar)
    ops.reparameterize_backward(dz, logvar, eps, dmean, dlogvar)
    ops.kl_grad_add(mean, logvar, 0.7, dmean, dlogvar)
    check(f, mean, dmean, "mean")
    check(f, logvar, dlogvar, "logvar")


def test_logvar_convention_variance_of_z():
    """Gradient checks cannot see a convention slip; the variance of z can."""
    n = 200_000
    mean = np.full((n, 1), 1.5)
    logvar = np.full((n, 1), np.log(0.25))  # sigma^2 = 0.25, sigma = 0.5
    z = ops.reparameterize(mean, logvar, np.random.default_rng(1).standard_normal((n, 1)), np.empty((n, 1)))
    assert z.mean() == pytest.approx(1.5, abs=0.01)
    assert z.var() == pytest.approx(0.25, rel=0.02)
    kl = ops.kl(np.zeros((1, 1)), np.log(np.full((1, 1), 0.25)))
    assert kl[0] == pytest.approx(0.5 * (0.25 - 1 - np.log(0.25)))


@pytest.mark.parametrize(
    "likelihood,kind,hidden,activation",
    [("bernoulli", "vae", (6, 5), "relu"), ("gaussian", "vae", (6, 5), "relu"), ("bernoulli", "ae", (7,), "relu"),
     ("gaussian", "vae", (), "relu"), ("bernoulli", "vae", (6, 5), "tanh"), ("gaussian", "ae", (7,), "tanh")],
)
def test_whole_model_every_parameter(likelihood, kind, hidden, activation):
    arch = Arch(in_dim=10, hidden=hidden, latent=3, likelihood=likelihood, kind=kind, activation=activation)
    model = VAE(arch, ops, dtype=np.float64)
    flat = init_params(model.layout, model.linear_names, "pytorch", seed=3, dtype=np.float64)
    flat *= 3.0  # larger weights: fewer dead ReLUs, stronger signal
    grads = np.zeros_like(flat)
    P, G = model.layout.views(flat), model.layout.views(grads)
    x = rng.uniform(size=(4, 10))
    eps = rng.standard_normal((4, 3))
    beta = 0.8

    loss, recon, kl = model.loss_and_grad(P, G, x, eps, beta)
    r, k = model.losses(P, x, eps)
    assert float(loss) == pytest.approx(float(r.mean() + beta * k.mean()), rel=1e-12)

    def f():
        r, k = model.losses(P, x, eps)
        return r.mean() + beta * k.mean()

    for name in P:
        check(f, P[name], G[name], name, k=8)
