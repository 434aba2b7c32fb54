"""K-sample objectives for the MLP VAE, forward and backward by hand: the average ELBO and the IWAE bound.

Rows: the encoder runs once on the B examples; the decoder on R = B*K rows, row ``b*K + k``
being sample k of example b (``eps`` has R rows in that order).

- ``elbo``: mean over examples of (1/K) sum_k recon(z_bk) + beta * KL(q(z|x_b) || N(0, I)),
  the KL in closed form, so K = 1 is exactly :meth:`VAE.loss_and_grad`.
- ``iwae`` (Burda et al., 2016): -mean_b log (1/K) sum_k w_bk, with
  log w_bk = -recon(z_bk) - beta * (log q(z_bk|x_b) - log p(z_bk)). Its gradient is the
  softmax(log w_b.)-weighted sum of the per-sample gradients of -log w_bk; log-sum-exp with
  the row maximum subtracted, so no weight overflows. beta = 1 is the bound itself.

With eps held fixed, log q(z|x) - log p(z) = 0.5 * sum(z^2 - eps^2 - logvar) (the 2 pi terms cancel),
so its derivatives are z (w.r.t. z, then through the reparameterisation) and -0.5 (w.r.t. logvar).
"""

from __future__ import annotations

from math import log

OBJECTIVES = ("elbo", "iwae")


def log_q_minus_log_p(z, eps, logvar_rows):
    """Per-row log q(z|x) - log p(z) for z = mean + exp(0.5 logvar) * eps."""
    return 0.5 * (z * z - eps * eps - logvar_rows).sum(axis=1)


def log_mean_exp_weights(xp, logw):
    """(log (1/K) sum_k exp(logw_bk), softmax over k) for (B, K) log weights, stable for any values."""
    top = logw.max(axis=1, keepdims=True)
    w = xp.exp(logw - top)
    total = w.sum(axis=1, keepdims=True)
    w /= total
    return top[:, 0] + xp.log(total[:, 0]) - log(logw.shape[1]), w


def loss_and_grad(model, P: dict, G: dict, x, eps, beta: float = 1.0, *, samples: int = 1, objective: str = "elbo"):
    """Write d(loss)/d(params) into G; return (loss, recon, kl) batch means as 0-d backend arrays.

    recon is the mean over all R rows; kl is the closed-form KL (``elbo``) or the mean of the
    sampled log q - log p (``iwae``); loss is the objective being minimised.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if model.arch.kind != "vae":
        raise ValueError("the K-sample objectives need a VAE (an autoencoder has no q(z|x))")
    ops, xp, K = model.ops, model.xp, int(samples)
    B, L = x.shape[0], model.arch.latent
    R = B * K
    if eps.shape != (R, L):
        raise ValueError(f"eps must have shape {(R, L)} (batch * samples, latent), got {eps.shape}")
    wse = model.workspace(B)
    wsd = model.workspace(R)  # the same workspace when K = 1: encoder and decoder use different layers

    # forward: one encoder pass, K samples per example
    mean, logvar = model.encode(P, x, wse)
    mean_r = xp.repeat(mean, K, axis=0) if K > 1 else mean
    logvar_r = xp.repeat(logvar, K, axis=0) if K > 1 else logvar
    z = ops.reparameterize(mean_r, logvar_r, eps, wsd.z)
    logits = model.decode(P, z, wsd)
    x_r = xp.repeat(x, K, axis=0) if K > 1 else x
    recon = model.recon_per_example(logits, x_r, wsd)  # (R,)

    # per-row weights of the per-sample gradients
    dlogits = wsd.grad["out"]
    grad_fn = ops.bernoulli_nll_grad if model.arch.likelihood == "bernoulli" else ops.sse_grad
    if objective == "elbo":
        kl_b = ops.kl(mean, logvar)
        kl = kl_b.sum() * (1.0 / B)
        loss = recon.sum() * (1.0 / R) + beta * kl
        grad_fn(logits, x_r, 1.0 / R, dlogits)
    else:
        lqp = log_q_minus_log_p(z, eps, logvar_r)  # (R,)
        logw = -(recon + beta * lqp).reshape(B, K)
        log_mean_w, w = log_mean_exp_weights(xp, logw)
        loss = -log_mean_w.sum() * (1.0 / B)
        kl = lqp.sum() * (1.0 / R)
        row_scale = (w * (1.0 / B)).reshape(R, 1).astype(dlogits.dtype)
        grad_fn(logits, x_r, 1.0, dlogits)
        dlogits *= row_scale

    model.decoder_backward(P, G, z, wsd)
    dz = wsd.dz
    if objective == "iwae":
        dz += (beta * row_scale) * z  # d(beta * (log q - log p)) / dz, weighted
    # back through z = mean + exp(0.5 logvar) * eps, summing each example's K rows
    dmean, dlogvar = model.split_head(wse.grad["head"])
    std = xp.exp(0.5 * logvar)
    if K > 1:
        dmean[...] = dz.reshape(B, K, L).sum(axis=1)
        dlogvar[...] = (dz * eps).reshape(B, K, L).sum(axis=1)
    else:
        dmean[...] = dz
        xp.multiply(dz, eps, out=dlogvar)
    dlogvar *= 0.5 * std
    if objective == "elbo":
        ops.kl_grad_add(mean, logvar, beta / B, dmean, dlogvar)
    else:
        dlogvar -= (0.5 * beta) * row_scale.reshape(B, K).sum(axis=1, keepdims=True)  # d(-0.5 logvar) terms
    model.encoder_backward(P, G, x, wse)
    recon_mean = recon.sum() * (1.0 / R)
    return loss, recon_mean, kl
