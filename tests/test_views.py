"""cuvae.measure.views: shapes, value ranges and the geometry of each view, on a tiny random model."""

import numpy as np
import pytest

from cuvae.measure import views
from cuvae.measure.evaluation import decode_images, encode_means
from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps

SHAPE = (4, 4)


def make(latent=2, kind="vae", seed=0):
    model = VAE(Arch(in_dim=16, hidden=(8,), latent=latent, kind=kind), NumpyOps())
    params = model.initial_params("pytorch", seed)
    return model, model.layout.views(params)


@pytest.fixture
def x():
    return np.random.default_rng(1).random((12, 16)).astype(np.float32)


def in_unit(a):
    return a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0


def test_samples_shape_range_and_seed():
    model, P = make(latent=3)
    a = views.samples(model, P, 5, seed=3, shape=SHAPE)
    assert a.shape == (5, 4, 4) and in_unit(a)
    assert np.array_equal(a, views.samples(model, P, 5, seed=3, shape=SHAPE))
    assert not np.array_equal(a, views.samples(model, P, 5, seed=4, shape=SHAPE))
    # temperature 0 decodes z = 0 for every sample
    cold = views.samples(model, P, 3, temperature=0.0, shape=SHAPE)
    assert np.allclose(cold, decode_images(model, P, np.zeros((1, 3)), SHAPE)[0])


def test_reconstructions(x):
    model, P = make(latent=3)
    orig, rec = views.reconstructions(model, P, x[:5], shape=SHAPE)
    assert orig.shape == rec.shape == (5, 4, 4) and in_unit(orig) and in_unit(rec)
    assert np.allclose(orig.reshape(5, 16), x[:5])
    assert np.allclose(rec, decode_images(model, P, encode_means(model, P, x[:5]), SHAPE))


def test_quantile_grid():
    q = views.quantile_grid(4)
    # Phi^-1 of 1/8, 3/8, 5/8, 7/8
    assert np.allclose(q, [-1.1503494, -0.3186394, 0.3186394, 1.1503494], atol=1e-6)
    assert np.allclose(views.quantile_grid(5)[2], 0.0)


def test_manifold_2d_is_the_quantile_grid():
    model, P = make(latent=2)
    n = 5
    m = views.manifold(model, P, n, shape=SHAPE)
    assert m.shape == (n, n, 4, 4) and in_unit(m)
    q = views.quantile_grid(n)
    # top-left cell: dim0 at its lowest quantile, dim1 at its highest (up is positive)
    assert np.allclose(m[0, 0], decode_images(model, P, np.array([[q[0], q[-1]]]), SHAPE)[0], atol=1e-6)
    assert np.allclose(m[n - 1, 2], decode_images(model, P, np.array([[q[2], q[0]]]), SHAPE)[0], atol=1e-6)


def test_manifold_larger_latent_uses_most_active_dims(x):
    model, P = make(latent=4)
    means = encode_means(model, P, x)
    expected = list(np.argsort(-means.var(0))[:2])
    assert views.most_active_dims(model, P, x) == expected
    z = views.manifold_codes(model, P, 3, x=x)
    a, b = expected
    others = [d for d in range(4) if d not in expected]
    assert np.all(z[..., others] == 0)
    assert np.allclose(z[1, :, a], views.quantile_grid(3)) and np.allclose(z[:, 1, b], views.quantile_grid(3)[::-1])
    m = views.manifold(model, P, 3, x=x, shape=SHAPE)
    assert m.shape == (3, 3, 4, 4) and in_unit(m)
    # without x: dims 0 and 1
    assert views.manifold_dims(model, P) == (0, 1)
    with pytest.raises(ValueError, match="at least 2"):
        views.manifold(*make(latent=1), 3, shape=SHAPE)


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_endpoints_are_the_encodings(x, mode):
    model, P = make(latent=3)
    z = views.interpolation_codes(model, P, x[0], x[1], 6, mode=mode)
    za, zb = encode_means(model, P, x[:2])
    assert z.shape == (6, 3)
    assert np.allclose(z[0], za, atol=1e-6) and np.allclose(z[-1], zb, atol=1e-6)
    img = views.interpolate(model, P, x[0], x[1], 6, mode=mode, shape=SHAPE)
    assert img.shape == (6, 4, 4) and in_unit(img)
    ends = decode_images(model, P, np.stack([za, zb]), SHAPE)
    assert np.allclose(img[0], ends[0], atol=1e-6) and np.allclose(img[-1], ends[1], atol=1e-6)


def test_slerp_geometry():
    a, b = np.array([1.0, 0.0]), np.array([0.0, 2.0])
    mid = views.slerp(a, b, np.array([0.5]))[0]
    # equal weights sin(pi/4)/sin(pi/2) on both: direction 45 degrees
    assert np.allclose(mid, np.sqrt(0.5) * (a + b))
    lin = views.slerp(a, 3 * a, np.array([0.0, 0.5, 1.0]))  # parallel: linear fallback
    assert np.allclose(lin[:, 0], [1.0, 2.0, 3.0])
    # slerp of unit vectors stays on the unit circle, linear does not
    t = np.linspace(0, 1, 7)
    assert np.allclose(np.linalg.norm(views.slerp(np.array([1.0, 0]), np.array([0, 1.0]), t), axis=1), 1.0)


def test_interpolate_errors(x):
    model, P = make()
    with pytest.raises(ValueError, match="mode"):
        views.interpolate(model, P, x[0], x[1], mode="cubic")
    with pytest.raises(ValueError, match="one example"):
        views.interpolate(model, P, x[:2], x[1])


def test_traverse(x):
    model, P = make(latent=3)
    t = views.traverse(model, P, x[0], steps=5, span=2.0, shape=SHAPE)
    assert t.shape == (3, 5, 4, 4) and in_unit(t)
    base = encode_means(model, P, x[:1])[0]
    z = np.array([base[0], base[1], 2.0])  # dim 2 at +span, others at x's mean
    assert np.allclose(t[2, -1], decode_images(model, P, z[None], SHAPE)[0], atol=1e-6)
    assert views.traverse(model, P, x[0], steps=4, dims=[1], shape=SHAPE).shape == (1, 4, 4, 4)
    with pytest.raises(ValueError, match="out of range"):
        views.traverse(model, P, x[0], dims=[3], shape=SHAPE)


def test_latent_scatter(x):
    model, P = make(latent=2)
    s = views.latent_scatter(model, P, x)
    assert s.shape == (12, 2) and np.allclose(s, encode_means(model, P, x))
    model, P = make(latent=5)
    s = views.latent_scatter(model, P, x)
    assert s.shape == (12, 2) and np.isfinite(s).all()
    means = encode_means(model, P, x).astype(np.float64)
    # PCA: centred, first component carries the most variance, and the two are uncorrelated
    assert np.allclose(s.mean(0), 0, atol=1e-5)
    assert s[:, 0].var() >= s[:, 1].var()
    assert abs(np.cov(s.T)[0, 1]) < 1e-5
    total = ((means - means.mean(0)) ** 2).sum(1).mean()
    assert (s.astype(np.float64) ** 2).sum(1).mean() <= total + 1e-6


def test_views_work_for_the_plain_autoencoder(x):
    model, P = make(latent=3, kind="ae")
    assert views.manifold(model, P, 3, x=x, shape=SHAPE).shape == (3, 3, 4, 4)
    assert views.interpolate(model, P, x[0], x[1], 4, mode="slerp", shape=SHAPE).shape == (4, 4, 4)
    assert views.latent_scatter(model, P, x).shape == (12, 2)
