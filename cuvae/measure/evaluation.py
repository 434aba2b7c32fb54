"""What a trained model is worth: test ELBO, importance-weighted NLL, active units, images.

All functions take the model, its parameter views and device arrays; noise is
drawn on the host from seeded NumPy generators, so NumPy and CuPy runs of the
same weights see the same eps.
"""

from __future__ import annotations

from math import log, pi

import numpy as np

from cuvae.nn.model import VAE, free_workspaces

ACTIVE_THRESHOLD = 0.01  # Burda et al.: a unit is active if Cov_x(E_q[z_u]) > 0.01


def gaussian_log_norm(in_dim: int) -> float:
    """SSE + this = Gaussian NLL with variance 1/2 (so the SSE loss is that NLL minus (D/2) ln pi)."""
    return 0.5 * in_dim * log(pi)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def elbo(model: VAE, P: dict, x, *, seed: int = 0, batch: int = 1000, keep_batch: int | None = None) -> dict:
    """Test negative ELBO (one eps sample per example) with its parts, and active units."""
    xp, arch = model.xp, model.arch
    n = x.shape[0]
    rng = np.random.default_rng([seed, 7919])
    sums = np.zeros(3)
    mean_sum = np.zeros(arch.latent)
    mean_sq = np.zeros(arch.latent)
    kl_dims = np.zeros(arch.latent)
    for a, b in _batches(n, batch):
        xb = x[a:b]
        eps = xp.asarray(rng.standard_normal((b - a, arch.latent)).astype(model.dtype))
        recon, kl = model.losses(P, xb, eps)
        ws = model.workspace(b - a)
        mean, logvar = model.split_head(ws.act["head"])
        sums += [float(recon.sum()), float(kl.sum()), 0.0]
        m = _host(xp, mean).astype(np.float64)
        mean_sum += m.sum(0)
        mean_sq += (m * m).sum(0)
        if logvar is not None:  # each latent dimension's share of the KL (they sum to the KL)
            lv = _host(xp, logvar).astype(np.float64)
            kl_dims += 0.5 * (m * m + np.exp(lv) - 1.0 - lv).sum(0)
    free_workspaces(model, keep_batch)
    variances = mean_sq / n - (mean_sum / n) ** 2
    recon, kl = sums[0] / n, sums[1] / n
    return {
        "test_loss": recon + kl,
        "test_recon": recon,
        "test_kl": kl,
        "active_units": int((variances > ACTIVE_THRESHOLD).sum()),
        "latent_variances": variances,
        "kl_per_dim": kl_dims / n,
    }


def iwae_nll(model: VAE, P: dict, x, *, k: int = 1000, seed: int = 0, max_rows: int = 20000, progress=None,
             keep_batch: int | None = None) -> float:
    """Importance-weighted estimate of -log p(x), averaged over examples; see :func:`iwae_estimate`."""
    return iwae_estimate(model, P, x, k=k, seed=seed, max_rows=max_rows, progress=progress, keep_batch=keep_batch)["nll"]


def iwae_estimate(model: VAE, P: dict, x, *, k: int = 1000, seed: int = 0, max_rows: int = 20000, progress=None,
                  keep_batch: int | None = None) -> dict:
    """Importance-weighted estimate of -log p(x) (Burda et al., 2016): its mean over examples ``nll``,
    the standard error of that mean over examples ``se``, and the wall time ``seconds``.

    log p(x) ~ logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, with z_k ~ q(z|x).
    Batched over examples *and* samples (at most ``max_rows`` decoder rows at once), with a
    running logsumexp, so memory stays bounded whatever k is. For the Gaussian likelihood the
    normalised density (variance 1/2) is used, so the number is a real NLL in nats.

    ``se`` is the sampling error of the test-set average (std over examples / sqrt(n)); it does not
    include the bias of the k-sample bound, which shrinks as k grows.
    """
    import time

    t0 = time.perf_counter()
    xp, arch = model.xp, model.arch
    if arch.kind != "vae":
        raise ValueError("the importance-weighted NLL needs a VAE (an autoencoder has no q(z|x))")
    L, D = arch.latent, arch.in_dim
    n = x.shape[0]
    ex = max(1, min(n, max_rows // min(k, max_rows)))  # examples per chunk
    ks = max(1, min(k, max_rows // ex))  # samples per chunk
    rng = np.random.default_rng([seed, 104729])
    log_norm = gaussian_log_norm(D) if arch.likelihood == "gaussian" else 0.0
    const = 0.5 * L * log(2 * pi)
    total, total_sq = 0.0, 0.0
    for a, b in _batches(n, ex):
        m = b - a
        ws = model.workspace(m)
        mean, logvar = (t.copy() for t in model.encode(P, x[a:b], ws))
        std = xp.exp(0.5 * logvar)
        xr = xp.repeat(x[a:b], ks, axis=0)  # (m*ks, D): row i*ks + j is example i, sample j
        run_max = xp.full(m, -np.inf, dtype=np.float64)
        run_sum = xp.zeros(m, dtype=np.float64)
        for s0, s1 in _batches(k, ks):
            c = s1 - s0
            eps = xp.asarray(rng.standard_normal((m, c, L)).astype(model.dtype))
            z = mean[:, None, :] + std[:, None, :] * eps
            rows = m * c
            wsd = model.workspace(rows)
            logits = model.decode(P, z.reshape(rows, L), wsd)
            log_px = -(model.recon_per_example(logits, xr[: rows] if c == ks else xp.repeat(x[a:b], c, axis=0), wsd) + log_norm)
            log_pz = -0.5 * (z * z).sum(-1) - const
            log_qz = -0.5 * (eps * eps).sum(-1) - 0.5 * logvar.sum(-1)[:, None] - const
            logw = log_px.reshape(m, c).astype(np.float64) + log_pz - log_qz
            new_max = xp.maximum(run_max, logw.max(1))
            run_sum = run_sum * xp.exp(run_max - new_max) + xp.exp(logw - new_max[:, None]).sum(1)
            run_max = new_max
            if progress:
                progress(m * c)
        log_px = xp.log(run_sum) + run_max - log(k)
        total += float(log_px.sum())
        total_sq += float((log_px * log_px).sum())
        free_workspaces(model, keep_batch)
    mean = total / n
    var = max(total_sq / n - mean * mean, 0.0) * n / max(n - 1, 1)
    return {"nll": -mean, "se": (var / n) ** 0.5, "seconds": time.perf_counter() - t0, "k": k, "examples": n}


def decode_images(model: VAE, P: dict, z, shape=(28, 28)) -> np.ndarray:
    """Decoder means, sigmoid(logits), as (N, H, W) host floats in [0, 1]."""
    xp = model.xp
    z = xp.asarray(z, dtype=model.dtype)
    ws = model.workspace(z.shape[0])
    logits = model.decode(P, z, ws)
    out = model.ops.sigmoid(logits, xp.empty_like(logits))
    images = _host(xp, out).reshape((-1, *shape)).astype(np.float32)
    return images


def encode_means(model: VAE, P: dict, x, batch: int = 1000) -> np.ndarray:
    """Encoder means of x, (N, latent), on the host."""
    out = []
    for a, b in _batches(x.shape[0], batch):
        mean, _ = model.encode(P, x[a:b], model.workspace(b - a))
        out.append(_host(model.xp, mean).copy())
    return np.concatenate(out) if out else np.zeros((0, model.arch.latent), np.float32)


def reconstruct(model: VAE, P: dict, x, shape=(28, 28)) -> np.ndarray:
    """Decode the encoder mean of each row of x: (N, H, W) in [0, 1]."""
    return decode_images(model, P, encode_means(model, P, x), shape)


def prior_samples(model: VAE, P: dict, n: int, seed: int = 0, temperature: float = 1.0, shape=(28, 28)) -> np.ndarray:
    z = np.random.default_rng([seed, 31337]).standard_normal((n, model.arch.latent)) * temperature
    return decode_images(model, P, z, shape)


def _host(xp, a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and xp is not np else np.asarray(a)
