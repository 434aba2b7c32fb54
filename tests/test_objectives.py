"""The K-sample objectives (average ELBO, IWAE) against float64 finite differences, eps held fixed."""

import numpy as np
import pytest

from cuvae.nn import objectives
from cuvae.nn.gradcheck import assert_grad_close, numerical_grad
from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps
from cuvae.nn.params import init_params

ops = NumpyOps()


def setup(likelihood="bernoulli", activation="tanh", B=3, K=2, seed=0):
    rng = np.random.default_rng(seed)
    arch = Arch(in_dim=9, hidden=(6, 5), latent=3, likelihood=likelihood, activation=activation)
    model = VAE(arch, ops, dtype=np.float64)
    flat = init_params(model.layout, model.linear_names, "pytorch", seed=seed + 3, dtype=np.float64) * 2.0
    x = (rng.uniform(size=(B, 9)) < 0.5).astype(np.float64)
    eps = rng.standard_normal((B * K, 3))
    return model, flat, x, eps


def iwae_reference(model, P, x, eps, K, beta):
    """The bound straight from its definition, one sample at a time (no shared code path with the gradient)."""
    B = x.shape[0]
    logw = np.empty((B, K))
    for k in range(K):
        e = eps.reshape(B, K, -1)[:, k]
        ws = model.workspace(B)
        mean, logvar = model.encode(P, x, ws)
        mean, logvar = mean.copy(), logvar.copy()
        z = mean + np.exp(0.5 * logvar) * e
        recon = model.recon_per_example(model.decode(P, z, ws), x, ws)
        log_q = (-0.5 * e**2 - 0.5 * logvar - 0.5 * np.log(2 * np.pi)).sum(1)
        log_p = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(1)
        logw[:, k] = -recon - beta * (log_q - log_p)
    top = logw.max(1)
    return -(top + np.log(np.exp(logw - top[:, None]).mean(1))).mean()


@pytest.mark.parametrize("objective,K,likelihood", [("iwae", 1, "bernoulli"), ("iwae", 2, "bernoulli"),
                                                    ("iwae", 5, "bernoulli"), ("iwae", 5, "gaussian"),
                                                    ("elbo", 1, "bernoulli"), ("elbo", 5, "bernoulli")])
def test_gradient_matches_finite_differences(objective, K, likelihood):
    model, flat, x, eps = setup(likelihood, K=K)
    grads = np.zeros_like(flat)
    P, G = model.layout.views(flat), model.layout.views(grads)
    beta = 0.9
    loss, _, _ = objectives.loss_and_grad(model, P, G, x, eps, beta, samples=K, objective=objective)

    def f():
        return objectives.loss_and_grad(model, P, model.layout.views(np.zeros_like(flat)), x, eps, beta,
                                        samples=K, objective=objective)[0]

    if objective == "iwae":
        assert float(loss) == pytest.approx(iwae_reference(model, P, x, eps, K, beta), rel=1e-12)
    rng = np.random.default_rng(1)
    for name in P:
        idx = rng.choice(P[name].size, size=min(P[name].size, 6), replace=False)
        assert_grad_close(G[name].reshape(-1)[idx], numerical_grad(f, P[name], idx), f"{objective} K={K} {name}")


def test_k1_elbo_is_the_plain_elbo():
    model, flat, x, eps = setup(K=1)
    g1, g2 = np.zeros_like(flat), np.zeros_like(flat)
    P = model.layout.views(flat)
    a = model.loss_and_grad(P, model.layout.views(g1), x, eps, 0.7)
    b = objectives.loss_and_grad(model, P, model.layout.views(g2), x, eps, 0.7, samples=1, objective="elbo")
    np.testing.assert_allclose([float(v) for v in a], [float(v) for v in b], rtol=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-14)


def test_k1_iwae_is_the_single_sample_elbo():
    """IWAE with one sample is the ELBO with the KL estimated from that sample (log q - log p): the same
    value up to that swap, and the same decoder gradients (the KL term does not reach the decoder)."""
    model, flat, x, eps = setup(B=3, K=1)
    P = model.layout.views(flat)
    g_iwae, g_elbo = np.zeros_like(flat), np.zeros_like(flat)
    loss, recon, kl_mc = objectives.loss_and_grad(model, P, model.layout.views(g_iwae), x, eps, 1.0, samples=1,
                                                  objective="iwae")
    elbo, recon2, kl = model.loss_and_grad(P, model.layout.views(g_elbo), x, eps, 1.0)
    assert float(loss) == pytest.approx(float(recon + kl_mc), rel=1e-12)
    assert float(recon) == pytest.approx(float(recon2), rel=1e-12)
    assert float(loss) - float(elbo) == pytest.approx(float(kl_mc) - float(kl), abs=1e-9)
    Gi, Ge = model.layout.views(g_iwae), model.layout.views(g_elbo)
    for name in P:
        if name.startswith(("dec", "out")):
            np.testing.assert_allclose(Gi[name], Ge[name], rtol=1e-10, atol=1e-13, err_msg=name)
    assert not np.allclose(Gi["head.W"], Ge["head.W"])  # the encoder sees the sampled KL's gradient instead


def test_iwae_bound_is_tighter_and_stable():
    model, flat, x, _ = setup(B=4, K=50)
    P = model.layout.views(flat)
    eps = np.random.default_rng(2).standard_normal((4 * 50, 3))
    G = model.layout.views(np.zeros_like(flat))
    iwae = float(objectives.loss_and_grad(model, P, G, x, eps, samples=50, objective="iwae")[0])
    elbo = float(objectives.loss_and_grad(model, P, G, x, eps, samples=50, objective="elbo")[0])
    assert iwae < elbo  # the IWAE bound on -log p(x) is below the ELBO's (same model, 50 samples)
    # huge log weights: the log-sum-exp must not overflow
    big = np.array([[-1e4, -1e4 - 1.0], [800.0, 0.0]])
    value, w = objectives.log_mean_exp_weights(np, big)
    assert np.isfinite(value).all() and np.allclose(w.sum(1), 1.0)
    assert value[0] == pytest.approx(-1e4 + np.log((1 + np.exp(-1.0)) / 2))
