"""The VAE's operations, each forward beside its backward, written once against ``xp``.

Every function writes into buffers passed in (``out=``), so a training step
allocates nothing large. Caches are arguments, not attributes: a backward reads
exactly what its forward was given or produced.

Conventions (one for the whole package):
- a linear layer is ``y = x @ W + b`` with ``W`` of shape (in, out);
- ``logvar`` is log sigma^2, so sigma = exp(0.5 * logvar) in sampler, KL and gradients;
- the decoder emits *logits*; Bernoulli NLL is softplus(l) - x*l, never log(sigmoid).

:class:`NumpyOps` is the specification. :class:`cuvae.backends.cuda_ops.CupyOps` runs the
same code on CuPy and :class:`cuvae.backends.cpu_ops.NumbaOps` on fused CPU kernels; both
override hot ops, each tested against its NumPy twin here.
"""

from __future__ import annotations

import numpy as np


class NumpyOps:
    xp = np

    # ---- linear: y = x @ W + b -------------------------------------------------
    def linear(self, x, W, b, out):
        self.xp.matmul(x, W, out=out)
        out += b
        return out

    def linear_backward(self, dy, x, W, dW, db, dx=None):
        """Write dW = x^T dy and db = sum(dy); dx = dy W^T when asked for."""
        self.xp.matmul(x.T, dy, out=dW)
        self.xp.sum(dy, axis=0, out=db)
        if dx is not None:
            self.xp.matmul(dy, W.T, out=dx)

    # ---- ReLU, in place on the pre-activation --------------------------------
    def relu(self, h):
        self.xp.maximum(h, 0, out=h)
        return h

    def relu_backward(self, dh, h):
        """dh *= (h > 0), where h is the ReLU's *output* (zero exactly where it was cut)."""
        dh *= h > 0
        return dh

    # ---- tanh, in place on the pre-activation (Burda et al.'s network) ----------
    def tanh(self, h):
        self.xp.tanh(h, out=h)
        return h

    def tanh_backward(self, dh, h):
        """dh *= 1 - h^2, where h is the tanh's *output*."""
        dh *= 1.0 - h * h
        return dh

    # ---- sigmoid (overflow-free, through tanh) --------------------------------
    def sigmoid(self, logits, out):
        self.xp.multiply(logits, 0.5, out=out)
        self.xp.tanh(out, out=out)
        out *= 0.5
        out += 0.5
        return out

    # ---- reconstruction terms: per-example sums over pixels, and their gradients ---
    def softplus(self, l, out):
        """softplus(l) = max(l, 0) + log1p(exp(-|l|)), finite for any l."""
        xp = self.xp
        xp.abs(l, out=out)
        xp.negative(out, out=out)
        xp.exp(out, out=out)
        xp.log1p(out, out=out)
        out += xp.maximum(l, 0)
        return out

    def bernoulli_nll(self, logits, x, tmp):
        """Per-example -log p(x|z) = sum_pixels softplus(l) - x*l  (x in [0, 1])."""
        self.softplus(logits, tmp)
        tmp -= x * logits
        return tmp.sum(axis=1)

    def bernoulli_nll_grad(self, logits, x, scale, dlogits):
        """d/dl of scale * bernoulli_nll: scale * (sigmoid(l) - x)."""
        self.sigmoid(logits, dlogits)
        dlogits -= x
        dlogits *= scale
        return dlogits

    def sse(self, logits, x, tmp):
        """Per-example sum of squared errors between sigmoid(l) and x (the chapter's loss)."""
        self.sigmoid(logits, tmp)
        tmp -= x
        tmp *= tmp
        return tmp.sum(axis=1)

    def sse_grad(self, logits, x, scale, dlogits):
        """d/dl of scale * sse: scale * 2 (y - x) y (1 - y), y = sigmoid(l)."""
        xp = self.xp
        y = self.sigmoid(logits, dlogits)
        grad = (y - x) * (1.0 - y)  # small temporaries; the fused kernels avoid them
        grad *= y
        xp.multiply(grad, 2.0 * scale, out=dlogits)
        return dlogits

    # ---- reparameterisation and KL to N(0, I) --------------------------------
    def reparameterize(self, mean, logvar, eps, out):
        """z = mean + exp(0.5 * logvar) * eps."""
        xp = self.xp
        xp.multiply(logvar, 0.5, out=out)
        xp.exp(out, out=out)
        out *= eps
        out += mean
        return out

    def reparameterize_backward(self, dz, logvar, eps, dmean, dlogvar):
        """dmean = dz; dlogvar = dz * eps * 0.5 * exp(0.5 * logvar)."""
        xp = self.xp
        dmean[...] = dz
        xp.multiply(logvar, 0.5, out=dlogvar)
        xp.exp(dlogvar, out=dlogvar)
        dlogvar *= eps
        dlogvar *= dz
        dlogvar *= 0.5

    def kl(self, mean, logvar):
        """Per-example KL(q || N(0, I)) = 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)."""
        xp = self.xp
        return 0.5 * (mean * mean + xp.exp(logvar) - 1.0 - logvar).sum(axis=1)

    def kl_grad_add(self, mean, logvar, scale, dmean, dlogvar):
        """Add d/d(mean, logvar) of scale * kl: scale*mean and scale*0.5*(exp(logvar) - 1)."""
        xp = self.xp
        dmean += scale * mean
        dlogvar += (0.5 * scale) * (xp.exp(logvar) - 1.0)

    # ---- Adam on flat buffers -------------------------------------------------
    def adam(self, p, g, m, v, tmp, lr, beta1, beta2, eps, step):
        """One Adam step with bias correction, in place (PyTorch's formulation)."""
        xp = self.xp
        m *= beta1
        xp.multiply(g, 1.0 - beta1, out=tmp)
        m += tmp
        v *= beta2
        xp.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v += tmp
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        xp.sqrt(v, out=tmp)
        tmp *= 1.0 / np.sqrt(bc2)
        tmp += eps
        xp.divide(m, tmp, out=tmp)
        tmp *= lr / bc1
        p -= tmp

