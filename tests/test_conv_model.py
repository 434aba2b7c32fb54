"""The convolutional VAE: whole-model gradients in float64, the likelihood, and the shared interface."""

import numpy as np
import pytest

from cuvae.measure import evaluation
from cuvae.nn.conv_model import ConvArch, ConvVAE, logistic_nll, logistic_nll_grad
from cuvae.nn.gradcheck import assert_grad_close, numerical_grad
from cuvae.nn.ops import NumpyOps

ops = NumpyOps()
rng = np.random.default_rng(1)


def grid_pixels(n, d):
    """Pixels on the 256-level grid, with both end levels present."""
    u = rng.integers(0, 256, size=(n, d))
    u[0, :3] = 0
    u[1, :3] = 255
    return u / 255.0


ARCHS = [
    dict(image_shape=(2, 8, 8), channels=(2, 3), latent=3, likelihood="logistic"),
    dict(image_shape=(1, 7, 7), channels=(2, 3), latent=2, likelihood="bernoulli"),  # 7 -> 3 -> 1 -> 3 -> 7
    dict(image_shape=(3, 6, 5), channels=(2,), latent=2, likelihood="gaussian", kind="vae"),
    dict(image_shape=(1, 8, 8), channels=(2, 2), latent=2, likelihood="logistic", kind="ae"),
]


@pytest.mark.parametrize("kw", ARCHS, ids=lambda kw: f"{kw['image_shape']}-{kw['likelihood']}-{kw.get('kind', 'vae')}")
def test_whole_model_gradient_every_parameter(kw):
    arch = ConvArch(**kw)
    model = ConvVAE(arch, ops, np.float64)
    flat = model.initial_params("pytorch", 0)
    if "out.logscale" in model.layout.shapes:
        model.layout.views(flat)["out.logscale"][...] = [-1.5, -2.5][: arch.image_shape[0]]
    grads = np.full_like(flat, np.nan)
    P, G = model.layout.views(flat), model.layout.views(grads)
    B = 3
    x = grid_pixels(B, arch.in_dim)
    eps = rng.normal(size=(B, arch.latent))
    beta = 0.7
    loss, recon, kl = model.loss_and_grad(P, G, x, eps, beta)
    assert np.isfinite(grads).all(), "every gradient entry must be written"

    def f():
        r, k = model.losses(P, x, eps)
        return (r + beta * k).mean()

    assert np.isclose(float(loss), f(), rtol=1e-12)
    for name, shape in model.layout.entries:
        idx = rng.choice(int(np.prod(shape)), size=min(int(np.prod(shape)), 10), replace=False)
        # h = 1e-5: the loss is a sum over pixels (~100), so a smaller step drowns in rounding
        assert_grad_close(G[name].reshape(-1)[idx], numerical_grad(f, P[name], idx, h=1e-5), name, rtol=1e-5, atol=1e-8)


def test_mirror_uses_output_padding_for_28x28():
    arch = ConvArch(image_shape=(1, 28, 28))
    assert arch.sizes == [(28, 28), (14, 14), (7, 7), (3, 3)]
    assert [op for *_, op in arch.dec_layers] == [(1, 1), (0, 0), (0, 0)]
    assert ConvArch(image_shape=(3, 32, 32)).sizes[-1] == (4, 4)
    model = ConvVAE(arch, ops)
    P = model.layout.views(model.initial_params("pytorch", 0))
    out = model.decode(P, np.zeros((2, 8), np.float32), model.workspace(2))
    assert out.shape == (2, 784)


def test_too_many_layers_is_a_clear_error():
    with pytest.raises(ValueError, match="shrink"):
        ConvArch(image_shape=(1, 8, 8), channels=(2, 2, 2, 2, 2))


def test_logistic_is_a_distribution_over_the_256_levels():
    levels = np.arange(256) / 255.0
    for loc_logit, logscale in [(0.3, -2.0), (-4.0, -4.0), (5.0, 0.5), (0.0, -7.0)]:
        logits = np.full((256, 1), loc_logit)
        nll = logistic_nll(np, logits, levels[:, None], np.array([logscale]))
        assert np.isclose(np.exp(-nll).sum(), 1.0, rtol=1e-9), (loc_logit, logscale)


def test_logistic_gradient_finite_differences():
    B, C, D = 4, 3, 5
    logits = rng.normal(size=(B, C * D)) * 2
    x = grid_pixels(B, C * D)
    logscale = np.array([-1.0, -3.0, 0.2])
    dl, ds = np.empty_like(logits), np.empty(C)
    logistic_nll_grad(np, logits, x, logscale, 0.5, dl, ds)

    def f():
        return 0.5 * logistic_nll(np, logits, x, logscale).sum()

    idx = np.arange(logits.size)
    assert_grad_close(dl.reshape(-1), numerical_grad(f, logits, idx), "logits")
    assert_grad_close(ds, numerical_grad(f, logscale, np.arange(C)), "logscale")


def test_logistic_is_finite_far_from_the_data():
    logits = np.array([[40.0, -40.0, 0.0]])
    x = np.array([[0.0, 1.0, 0.5]])
    nll = logistic_nll(np, logits, x, np.array([-6.0]))
    dl, ds = np.empty_like(logits), np.empty(1)
    logistic_nll_grad(np, logits, x, np.array([-6.0]), 1.0, dl, ds)
    assert np.isfinite(nll).all() and np.isfinite(dl).all() and np.isfinite(ds).all()


def test_chunked_forward_matches_one_pass():
    arch = ConvArch(image_shape=(3, 8, 8), channels=(4, 4), latent=3, likelihood="logistic")
    whole = ConvVAE(arch, ops, np.float64, chunk=64)
    chunked = ConvVAE(arch, ops, np.float64, chunk=4)
    P = whole.layout.views(whole.initial_params("pytorch", 3))
    x = grid_pixels(10, arch.in_dim)
    eps = rng.normal(size=(10, 3))
    r1, k1 = whole.losses(P, x, eps)
    r2, k2 = chunked.losses(P, x, eps)
    np.testing.assert_allclose(r1, r2, rtol=1e-12)
    np.testing.assert_allclose(k1, k2, rtol=1e-12)


def test_evaluation_functions_accept_the_conv_model():
    arch = ConvArch(image_shape=(3, 8, 8), channels=(4, 4), latent=3, likelihood="logistic")
    model = ConvVAE(arch, ops, np.float32, chunk=8)
    P = model.layout.views(model.initial_params("pytorch", 0))
    x = grid_pixels(12, arch.in_dim).astype(np.float32)
    terms = evaluation.elbo(model, P, x, batch=5)
    assert np.isfinite(terms["test_loss"]) and terms["test_loss"] > 0
    nll = evaluation.iwae_nll(model, P, x, k=6, max_rows=20)
    assert np.isfinite(nll) and nll <= terms["test_loss"] + 50
    pics = evaluation.reconstruct(model, P, x[:4], (3, 8, 8))
    assert pics.shape == (4, 3, 8, 8) and 0 <= pics.min() and pics.max() <= 1


def test_float32_training_step_lowers_the_loss():
    from cuvae.nn.optim import Adam

    arch = ConvArch(image_shape=(1, 8, 8), channels=(4, 8), latent=2, likelihood="bernoulli")
    model = ConvVAE(arch, ops, np.float32)
    params = model.initial_params("pytorch", 0)
    grads = np.zeros_like(params)
    P, G = model.layout.views(params), model.layout.views(grads)
    adam = Adam(ops, model.layout.size, np.float32, lr=1e-2)
    x = (rng.random((16, 64)) < 0.3).astype(np.float32)
    eps = np.zeros((16, 2), np.float32)
    first = float(model.loss_and_grad(P, G, x, eps)[0])
    for _ in range(60):
        model.loss_and_grad(P, G, x, eps)
        adam.step(params, grads)
    assert float(model.loss_and_grad(P, G, x, eps)[0]) < first - 5
