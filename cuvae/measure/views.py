"""The pictures a user wants from a trained model, as arrays (the CLI and the TUI draw them).

Every function is pure: a model, its parameter views ``P`` and backend arrays in;
host NumPy float32 images in [0, 1] out (decoder means, sigmoid of the logits),
``shape`` being the dataset's image shape. Randomness comes from seeds.

The functions run the model's forward pass in its cached workspaces, so do not call
them on the same :class:`~cuvae.nn.model.VAE` instance a training thread is stepping:
build a second model from the config (``config.build_model(ops)``) for the views.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from cuvae.measure.evaluation import _host, decode_images, encode_means, prior_samples, reconstruct

INTERPOLATION_MODES = ("linear", "slerp")


def _rows(model, x):
    """x as a 2-D (N, in_dim) backend array of the model's dtype."""
    xp = model.xp
    x = xp.asarray(x, dtype=model.dtype)
    return x.reshape(-1, model.arch.in_dim)


def _single(model, x, what: str):
    x = _rows(model, x)
    if x.shape[0] != 1:
        raise ValueError(f"{what} must be one example, got {x.shape[0]}")
    return x


# ---- samples and reconstructions ---------------------------------------------------------
def samples(model, P, n: int = 16, *, seed: int = 0, temperature: float = 1.0, shape=(28, 28)) -> np.ndarray:
    """``n`` decoded draws z ~ N(0, temperature^2 I) from the prior: (n, H, W)."""
    return prior_samples(model, P, n, seed=seed, temperature=temperature, shape=shape)


def reconstructions(model, P, x, *, shape=(28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """(originals, reconstructions), each (N, H, W): each row of x decoded from its encoder mean."""
    x = _rows(model, x)
    originals = _host(model.xp, x).reshape((-1, *shape)).astype(np.float32)
    return originals, reconstruct(model, P, x, shape)


# ---- the latent map --------------------------------------------------------------------------
def quantile_grid(n: int) -> np.ndarray:
    """``n`` values of a standard normal at the evenly spaced quantiles (i + 1/2) / n, ascending."""
    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / n) for i in range(n)], dtype=np.float64)


def most_active_dims(model, P, x, k: int = 2) -> list[int]:
    """The ``k`` latent dimensions whose encoder means vary most over x (most active first)."""
    means = encode_means(model, P, _rows(model, x)).astype(np.float64)
    var = means.var(axis=0)
    return [int(i) for i in np.argsort(-var, kind="stable")[:k]]


def manifold_dims(model, P, x=None) -> tuple[int, int]:
    """The two dimensions :func:`manifold` sweeps: (0, 1) for a 2-D latent or without x."""
    if model.arch.latent < 2:
        raise ValueError(f"a manifold needs at least 2 latent dimensions, the model has {model.arch.latent}")
    if model.arch.latent == 2 or x is None:
        return 0, 1
    a, b = most_active_dims(model, P, x, 2)
    return a, b


def manifold_codes(model, P, n: int = 15, *, x=None) -> np.ndarray:
    """The (n, n, latent) codes :func:`manifold` decodes.

    Row r, column c holds z[dim_a] = q[c] and z[dim_b] = q[n - 1 - r] (so up is
    positive, as on a plot), with q = :func:`quantile_grid` (n) and the other
    dimensions at 0, the prior's mean.
    """
    dim_a, dim_b = manifold_dims(model, P, x)
    q = quantile_grid(n)
    z = np.zeros((n, n, model.arch.latent), np.float64)
    z[:, :, dim_a] = q[None, :]
    z[:, :, dim_b] = q[::-1, None]
    return z


def manifold(model, P, n: int = 15, *, x=None, shape=(28, 28)) -> np.ndarray:
    """The decoded latent map, (n, n, H, W).

    For a 2-D latent: the chapter's picture, a grid over the Gaussian quantiles of both
    dimensions. For a larger latent: the same grid over the two most active dimensions
    (largest variance of the encoder means over ``x``; dimensions 0 and 1 when x is None),
    the others held at 0. See :func:`manifold_codes` for the layout.
    """
    z = manifold_codes(model, P, n, x=x)
    return decode_images(model, P, z.reshape(n * n, -1), shape).reshape((n, n, *shape))


# ---- interpolation and traversal ---------------------------------------------------------------
def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation, the usual latent-space formula sin((1-t)w)/sin(w) a + sin(t w)/sin(w) b,
    w being the angle between a and b; t=0 gives a, t=1 gives b. Falls back to linear interpolation
    for a zero or (anti)parallel vector, where the arc is undefined."""
    a, b, t = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(t, np.float64)[:, None]
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return (1 - t) * a + t * b
    cos = np.clip(np.dot(a / na, b / nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def interpolation_codes(model, P, x_a, x_b, steps: int = 10, *, mode: str = "linear") -> np.ndarray:
    """(steps, latent) codes from the encoder mean of x_a (first) to that of x_b (last)."""
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    if steps < 2:
        raise ValueError(f"interpolation needs at least 2 steps, got {steps}")
    za = encode_means(model, P, _single(model, x_a, "x_a"))[0].astype(np.float64)
    zb = encode_means(model, P, _single(model, x_b, "x_b"))[0].astype(np.float64)
    t = np.linspace(0.0, 1.0, steps)
    if mode == "linear":
        z = (1 - t)[:, None] * za + t[:, None] * zb
    else:
        z = slerp(za, zb, t)
    z[0], z[-1] = za, zb  # exact endpoints whatever the rounding
    return z


def interpolate(model, P, x_a, x_b, steps: int = 10, *, mode: str = "linear", shape=(28, 28)) -> np.ndarray:
    """(steps, H, W): decoded codes between the encoder means of two single examples."""
    return decode_images(model, P, interpolation_codes(model, P, x_a, x_b, steps, mode=mode), shape)


def traverse(model, P, x, *, steps: int = 7, span: float = 3.0, dims=None, shape=(28, 28)) -> np.ndarray:
    """(len(dims), steps, H, W): row i sweeps latent dimension dims[i] over linspace(-span, span, steps),
    the other dimensions held at x's encoder mean (x: one example). ``dims`` defaults to all."""
    L = model.arch.latent
    dims = list(range(L)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < L]
    if bad:
        raise ValueError(f"latent dimensions {bad} out of range: the model has {L} (0..{L - 1})")
    if not dims:
        raise ValueError("traverse needs at least one latent dimension")
    base = encode_means(model, P, _single(model, x, "x"))[0].astype(np.float64)
    values = np.linspace(-span, span, steps)
    z = np.repeat(base[None, None, :], len(dims), 0).repeat(steps, 1)  # (dims, steps, L)
    for i, d in enumerate(dims):
        z[i, :, d] = values
    return decode_images(model, P, z.reshape(-1, L), shape).reshape((len(dims), steps, *shape))


# ---- the encoder's view of a data set -----------------------------------------------------------
def pca_2d(points: np.ndarray) -> np.ndarray:
    """Project (N, D) points onto their first two principal components (centred; signs fixed so the
    largest loading of each component is positive, so the picture does not flip between runs)."""
    p = np.asarray(points, np.float64)
    centred = p - p.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(comps.shape[0]), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    out = centred @ comps.T
    if out.shape[1] < 2:
        out = np.concatenate([out, np.zeros((out.shape[0], 2 - out.shape[1]))], axis=1)
    return out


def latent_scatter(model, P, x) -> np.ndarray:
    """(N, 2) float32: encoder means of x; the two dimensions themselves for a 2-D latent, their first
    two principal components otherwise (a 1-D latent gets a zero second column)."""
    means = encode_means(model, P, _rows(model, x))
    if means.shape[1] == 2:
        return means.astype(np.float32)
    if means.shape[1] == 1:
        return np.concatenate([means, np.zeros_like(means)], axis=1).astype(np.float32)
    return pca_2d(means).astype(np.float32)
