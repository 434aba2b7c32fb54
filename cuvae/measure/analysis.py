"""Measuring the chapter's claims: a sharpness score for images and the ELBO-surgery split of the KL.

Sharpness
    The discrete Laplacian of an image, (up + down + left + right - 4 * centre) on the
    interior pixels, is large at edges and zero on flat or linear ramps. The *Laplacian
    energy* of a set of images is the mean of its square over pixels and images. A blurry
    picture has soft edges, so a low energy. The score reports it relative to real data:

        sharpness(images) = energy(images) / energy(test images)

    so 1.0 means "as sharp as the data", 0.5 half the edge energy. For reconstructions the
    reference is the very test digits being reconstructed; for samples it is the test set.
    (A noisy picture also scores high: read the score next to the NLL and the pictures.)

ELBO surgery (Hoffman & Johnson, 2016)
    With the test set {x_1..x_N} as a uniform distribution over indices n, the average KL
    term splits exactly into

        mean_n KL(q(z|x_n) || p(z)) = I_q(n; z) + KL(q(z) || p(z)),

    where q(z) = (1/N) sum_m q(z|x_m) is the aggregate posterior, I_q the index-code mutual
    information (at most log N) and the second term the marginal KL to the prior.
    :func:`elbo_surgery` estimates both by Monte Carlo: for each test example n it draws
    ``samples`` codes z ~ q(z|x_n) (seeded), evaluates log q(z) exactly as the log-mean-exp of
    all N Gaussian posteriors' densities at z (an N x N computation done in chunks, in float64 on
    the host), and averages

        I = mean[log q(z|x_n) - log q(z)],    marginal KL = mean[log q(z) - log p(z)].

    Their sum is an unbiased estimate of the average KL, which is also returned in closed form
    (``avg_kl``) as a check.
"""

from __future__ import annotations

from math import log, pi

import numpy as np

from cuvae.measure.evaluation import _host, prior_samples, reconstruct


# ---- sharpness -------------------------------------------------------------------------------
def laplacian(images: np.ndarray) -> np.ndarray:
    """4-neighbour discrete Laplacian on the interior pixels of (N, H, W) images: (N, H-2, W-2)."""
    a = np.asarray(images, np.float64)
    return a[:, :-2, 1:-1] + a[:, 2:, 1:-1] + a[:, 1:-1, :-2] + a[:, 1:-1, 2:] - 4.0 * a[:, 1:-1, 1:-1]


def laplacian_energy(images: np.ndarray) -> float:
    """Mean squared Laplacian over pixels and images."""
    return float(np.mean(laplacian(images) ** 2))


def sharpness(images: np.ndarray, reference: np.ndarray) -> float:
    """Laplacian energy of ``images`` relative to that of ``reference`` (1.0: as sharp as the reference)."""
    ref = laplacian_energy(reference)
    if ref <= 0:
        raise ValueError("the reference images are flat (zero Laplacian energy); sharpness is undefined")
    return laplacian_energy(images) / ref


def sharpness_scores(model, P, x, *, shape=(28, 28), n: int = 1000, seed: int = 0, samples: bool = True) -> dict:
    """Sharpness of the reconstructions of the first ``n`` rows of x (relative to those rows) and of
    ``n`` prior samples (relative to the same rows); ``samples=False`` skips the latter (None)."""
    x = x[:n]
    reference = _host(model.xp, x).reshape((-1, *shape))
    recon = reconstruct(model, P, x, shape)
    out = {"sharpness_recon": sharpness(recon, reference), "sharpness_samples": None,
           "sharpness_data": laplacian_energy(reference)}
    if samples:
        out["sharpness_samples"] = sharpness(prior_samples(model, P, len(reference), seed=seed, shape=shape), reference)
    return out


# ---- ELBO surgery --------------------------------------------------------------------------------
def encode_gaussians(model, P, x, batch: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(means, logvars) of q(z|x) for every row of x, float64 on the host."""
    if model.arch.kind != "vae":
        raise ValueError("ELBO surgery needs a VAE (an autoencoder has no q(z|x))")
    means, logvars = [], []
    for a in range(0, x.shape[0], batch):
        b = min(a + batch, x.shape[0])
        mean, logvar = model.encode(P, x[a:b], model.workspace(b - a))
        means.append(_host(model.xp, mean).astype(np.float64))
        logvars.append(_host(model.xp, logvar).astype(np.float64))
    return np.concatenate(means), np.concatenate(logvars)


def log_mixture_density(z: np.ndarray, means: np.ndarray, logvars: np.ndarray, chunk: int = 512) -> np.ndarray:
    """log (1/N) sum_m N(z_i; means_m, diag exp(logvars_m)) for each row z_i: (len(z),)."""
    N, L = means.shape
    inv = np.exp(-logvars)  # (N, L)
    mu_inv = means * inv
    const = -0.5 * (L * log(2 * pi) + logvars.sum(1) + (means * mu_inv).sum(1))  # (N,)
    out = np.empty(z.shape[0])
    for a in range(0, z.shape[0], chunk):
        zc = z[a:a + chunk]
        # -0.5 sum_l (z - mu)^2 / var, expanded into two matrix products
        quad = -0.5 * ((zc * zc) @ inv.T) + zc @ mu_inv.T  # (c, N)
        logp = quad + const[None, :]
        top = logp.max(1, keepdims=True)
        out[a:a + chunk] = (top[:, 0] + np.log(np.exp(logp - top).sum(1))) - log(N)
    return out


def elbo_surgery(model, P, x, *, samples: int = 1, seed: int = 0) -> dict:
    """Split the average KL over the rows of x into index-code MI and marginal KL (see the module doc).

    Returns ``avg_kl`` (closed form), ``mutual_info``, ``marginal_kl`` (Monte Carlo, their sum
    estimates avg_kl), ``mi_bound`` (log N, the largest MI N examples allow) and ``examples``.
    """
    means, logvars = encode_gaussians(model, P, x)
    N, L = means.shape
    rng = np.random.default_rng([seed, 4242])
    std = np.exp(0.5 * logvars)
    mi = mkl = 0.0
    for _ in range(samples):
        eps = rng.standard_normal((N, L))
        z = means + std * eps
        log_q_cond = -0.5 * (eps * eps).sum(1) - 0.5 * logvars.sum(1) - 0.5 * L * log(2 * pi)
        log_q = log_mixture_density(z, means, logvars)
        log_p = -0.5 * (z * z).sum(1) - 0.5 * L * log(2 * pi)
        mi += float((log_q_cond - log_q).mean())
        mkl += float((log_q - log_p).mean())
    avg_kl = float((0.5 * (means ** 2 + np.exp(logvars) - 1.0 - logvars).sum(1)).mean())
    return {"avg_kl": avg_kl, "mutual_info": mi / samples, "marginal_kl": mkl / samples, "mi_bound": log(N),
            "examples": int(N)}
