"""The convolutional VAE, forward and backward by hand, with the MLP VAE's interface.

    x (B, C*H*W) -> (B, C, H, W) -> [enc_i: Conv2D k4 s2 p1 + ReLU]* -> flatten
      -> head: linear -> [mean | logvar] -> z = mean + exp(0.5 logvar) * eps
      -> fc: linear + ReLU -> (B, C_n, h_n, w_n)
      -> [dec_i: ConvTranspose2D k4 s2 p1 + ReLU]* (the last without ReLU) -> logits (B, C*H*W)

The decoder mirrors the encoder exactly: each transposed convolution gets the
output padding that restores its encoder level's size (28 -> 14 -> 7 -> 3 is
undone as 3 -> 7 -> 14 -> 28), so one default works for 28x28 and 32x32.

Likelihoods (per example, summed over the C*H*W subpixels):
- ``bernoulli``: softplus(l) - x l, as in the MLP (MNIST);
- ``gaussian``: the chapter's sum of squared errors of sigmoid(l);
- ``logistic``: a *discretised logistic* (Salimans et al., PixelCNN++) with
  location mu = sigmoid(l) per subpixel and a learned log-scale per channel
  (``out.logscale``). The 256 pixel levels are bins of width 1/255 around
  x = k/255, the two end bins are open, so -log p(x|z) is the negative log of a
  probability mass and the negative ELBO / (C H W ln 2) is a proper bits/dim.
  It is chosen over a discretised Gaussian because its CDF is a sigmoid: exact
  and overflow-free with NumPy/CuPy alone (no erf), with a closed-form gradient.

The public surface is :class:`cuvae.nn.model.VAE`'s: ``encode``, ``decode``,
``split_head``, ``sample_z``, ``recon_per_example``, ``losses``,
``loss_and_grad``, ``workspace``, ``initial_params``, ``layout``, ``arch``, so
the trainer, the evaluation functions and checkpoints work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from cuvae.nn.conv import conv2d, conv2d_backward, conv_out_size, conv_transpose2d, conv_transpose2d_backward, \
    conv_transpose_out_size
from cuvae.nn.model import VAE
from cuvae.nn.params import Layout

CONV_LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
DEFAULT_CHANNELS = (32, 64, 128)
LOGSCALE_INIT = -2.0  # logistic scale exp(-2) ~ 0.14 at the start (pixels are in [0, 1])
HALF_BIN = 0.5 / 255.0  # half the width of one of the 256 pixel levels
FORWARD_CHUNK = 256  # forward-only passes (evaluation) run in chunks of this many rows


@dataclass(frozen=True)
class ConvArch:
    image_shape: tuple = (1, 28, 28)  # (C, H, W)
    channels: tuple = DEFAULT_CHANNELS
    latent: int = 8
    likelihood: str = "bernoulli"
    kind: str = "vae"
    kernel: int = 4
    stride: int = 2
    padding: int = 1

    def __post_init__(self):
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.likelihood not in CONV_LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {CONV_LIKELIHOODS}, got {self.likelihood!r}")
        if self.kind not in ("vae", "ae"):
            raise ValueError(f"model kind must be vae or ae, got {self.kind!r}")
        if len(self.image_shape) != 3 or not self.channels:
            raise ValueError(f"need image_shape (C, H, W) and at least one channel count, got "
                             f"{self.image_shape} and {self.channels}")
        h, w = self.sizes[-1]
        if h < 1 or w < 1:
            raise ValueError(f"{len(self.channels)} stride-{self.stride} convolutions shrink a "
                             f"{self.image_shape[1]}x{self.image_shape[2]} image to nothing; use fewer channels")

    # ---- shapes -------------------------------------------------------------------
    @property
    def in_dim(self) -> int:
        return prod(self.image_shape)

    @property
    def hidden(self) -> tuple:
        return self.channels

    @property
    def head_width(self) -> int:
        return 2 * self.latent if self.kind == "vae" else self.latent

    @property
    def sizes(self) -> list[tuple[int, int]]:
        """(H, W) at each level: the image, then after each convolution."""
        k, s, p = self.kernel, self.stride, self.padding
        out = [tuple(self.image_shape[1:])]
        for _ in self.channels:
            h, w = out[-1]
            out.append((conv_out_size(h, k, s, p), conv_out_size(w, k, s, p)))
        return out

    @property
    def flat_dim(self) -> int:
        h, w = self.sizes[-1]
        return self.channels[-1] * h * w

    @property
    def enc_layers(self) -> list[tuple[str, int, int]]:
        """(name, in channels, out channels) of the convolutions."""
        chans = (self.image_shape[0], *self.channels)
        return [(f"enc{i + 1}", chans[i], chans[i + 1]) for i in range(len(self.channels))]

    @property
    def dec_layers(self) -> list[tuple[str, int, int, int]]:
        """(name, in channels, out channels, (op_h, op_w) output padding) of the transposed convolutions."""
        k, s, p = self.kernel, self.stride, self.padding
        chans = (self.image_shape[0], *self.channels)
        sizes = self.sizes
        out = []
        for j, i in enumerate(range(len(self.channels), 0, -1)):
            (h, w), (H, W) = sizes[i], sizes[i - 1]
            op = (H - conv_transpose_out_size(h, k, s, p), W - conv_transpose_out_size(w, k, s, p))
            if not (0 <= op[0] < s and 0 <= op[1] < s):
                raise ValueError(f"cannot mirror {h}x{w} back to {H}x{W} with kernel {k}, stride {s}, padding {p}")
            out.append((f"dec{j + 1}", chans[i], chans[i - 1], op))
        return out

    def layout(self) -> Layout:
        k = self.kernel
        e = []
        for name, cin, cout in self.enc_layers:
            e += [(f"{name}.W", (cout, cin, k, k)), (f"{name}.b", (cout,))]
        e += [("head.W", (self.flat_dim, self.head_width)), ("head.b", (self.head_width,))]
        e += [("fc.W", (self.latent, self.flat_dim)), ("fc.b", (self.flat_dim,))]
        for name, cin, cout, _ in self.dec_layers:
            e += [(f"{name}.W", (cin, cout, k, k)), (f"{name}.b", (cout,))]
        if self.likelihood == "logistic":
            e.append(("out.logscale", (self.image_shape[0],)))
        return Layout(tuple(e))

    def describe(self) -> str:
        c, h, w = self.image_shape
        chans = "-".join(map(str, self.channels))
        return (f"conv {self.kind.upper()} {c}x{h}x{w} channels {chans} (k{self.kernel} s{self.stride} "
                f"p{self.padding}) z{self.latent}, {self.likelihood}")


def bits_per_dim(nats_per_example: float, in_dim: int) -> float:
    """Negative log-likelihood (or ELBO) in nats per example -> bits per subpixel."""
    return float(nats_per_example) / (in_dim * np.log(2.0))


# ---- the discretised logistic likelihood, forward beside its gradient ----------------------------


def _sigmoid(xp, a):
    return 0.5 * (1.0 + xp.tanh(0.5 * a))


def _logistic_terms(xp, logits, x, logscale):
    """Shared pieces: mu, a, b (standardised bin edges), d (bin width / s), masks, 1/s."""
    B, C = logits.shape[0], logscale.shape[0]
    l, xx = logits.reshape(B, C, -1), x.reshape(B, C, -1)
    inv_s = xp.exp(-logscale).reshape(1, C, 1)
    mu = _sigmoid(xp, l)
    a = (xx - HALF_BIN - mu) * inv_s
    d = (2 * HALF_BIN) * inv_s
    b = a + d
    lo = xx > HALF_BIN  # not the bottom level: the bin has a lower edge
    hi = xx < 1.0 - HALF_BIN  # not the top level: the bin has an upper edge
    return mu, a, b, d, lo, hi, inv_s


def logistic_nll(xp, logits, x, logscale):
    """Per-example -log P(x | mu = sigmoid(l), s = exp(logscale[c])), x on the grid k/255.

    log P = log(sigmoid(b) - sigmoid(a)) = -softplus(-b) - softplus(a) + log(1 - e^-(b-a)) inside;
    log sigmoid(b) at x = 0 and log(1 - sigmoid(a)) at x = 1 (open end bins).
    """
    mu, a, b, d, lo, hi, _ = _logistic_terms(xp, logits, x, logscale)
    nll = xp.where(lo, xp.logaddexp(0.0, a), 0.0)
    nll += xp.where(hi, xp.logaddexp(0.0, -b), 0.0)
    nll -= (lo & hi) * xp.log(-xp.expm1(-d))
    return nll.reshape(nll.shape[0], -1).sum(axis=1)


def logistic_nll_grad(xp, logits, x, logscale, scale, dlogits, dlogscale):
    """Write d/dl (into dlogits) and d/dlogscale (into dlogscale) of scale * sum(logistic_nll)."""
    mu, a, b, d, lo, hi, inv_s = _logistic_terms(xp, logits, x, logscale)
    sa, snb = _sigmoid(xp, a) * lo, _sigmoid(xp, -b) * hi
    dmu = (snb - sa) * inv_s
    dlogits.reshape(mu.shape)[...] = dmu * mu * (1.0 - mu) * scale
    inner = (lo & hi) * (d / xp.expm1(d))
    dlogscale[...] = (b * snb - a * sa + inner).sum(axis=(0, 2)) * scale
    return dlogits


# ---- the model ------------------------------------------------------------------------------------


@dataclass
class ConvWorkspace:
    """Preallocated activations and gradients for one batch size."""

    batch: int
    act: dict = field(default_factory=dict)
    grad: dict = field(default_factory=dict)
    z: object = None
    dz: object = None
    pixels: object = None
    logscale: object = None  # view of the parameter, set by decode: the likelihood's scale
    fast: object = None  # the backend engine's own buffers for this batch size, if it has an engine


class ConvVAE:
    """Forward and backward for a :class:`ConvArch` on one backend's ops."""

    def __init__(self, arch: ConvArch, ops, dtype=np.float32, chunk: int = FORWARD_CHUNK):
        self.arch, self.ops, self.xp, self.dtype = arch, ops, ops.xp, np.dtype(dtype)
        self.layout = arch.layout()
        self.chunk = chunk
        self._workspaces: dict[int, ConvWorkspace] = {}
        # a backend may bring a faster engine for the same function (the CPU's: fused NHWC layers);
        # the methods below stay the specification it is tested against
        make = getattr(ops, "conv_engine", None)
        self.engine = make(arch, self.dtype) if make is not None else None

    # ---- parameters --------------------------------------------------------------
    def initial_params(self, init: str, seed: int) -> np.ndarray:
        """Host parameters. ``pytorch``: U(+-1/sqrt(fan_in)) for weights and biases, fan_in as
        torch.nn computes it (ConvTranspose2d: weight.size(1) * k * k); ``glorot``: Xavier-uniform
        weights with the receptive field counted, zero biases. The log-scale starts at LOGSCALE_INIT."""
        if init not in ("pytorch", "glorot"):
            raise ValueError(f"init must be pytorch or glorot, got {init!r}")
        rng = np.random.default_rng(seed)
        flat = np.zeros(self.layout.size, self.dtype)
        V = self.layout.views(flat)
        k2 = self.arch.kernel ** 2
        fans = {}
        for name, cin, cout in self.arch.enc_layers:
            fans[name] = (cin * k2, cout * k2, cin * k2)
        fans["head"] = (self.arch.flat_dim, self.arch.head_width, self.arch.flat_dim)
        fans["fc"] = (self.arch.latent, self.arch.flat_dim, self.arch.latent)
        for name, cin, cout, _ in self.arch.dec_layers:
            fans[name] = (cin * k2, cout * k2, cout * k2)  # torch's fan_in for ConvTranspose2d
        for name, (fan_in, fan_out, torch_fan_in) in fans.items():
            W, b = V[f"{name}.W"], V[f"{name}.b"]
            if init == "glorot":
                lim = np.sqrt(6.0 / (fan_in + fan_out))
                W[...] = rng.uniform(-lim, lim, W.shape)
            else:
                lim = 1.0 / np.sqrt(torch_fan_in)
                W[...] = rng.uniform(-lim, lim, W.shape)
                b[...] = rng.uniform(-lim, lim, b.shape)
        if "out.logscale" in V:
            V["out.logscale"][...] = LOGSCALE_INIT
        return flat

    # ---- buffers -----------------------------------------------------------------------
    def workspace(self, batch: int) -> ConvWorkspace:
        """Buffers for ``batch`` rows; layer activations only when a pass runs unchunked."""
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt, a = self.xp, self.dtype, self.arch
            ws = ConvWorkspace(batch)
            ws.act["head"] = xp.empty((batch, a.head_width), dt)
            ws.act["out"] = xp.empty((batch, a.in_dim), dt)
            ws.z = xp.empty((batch, a.latent), dt)
            ws.pixels = xp.empty((batch, a.in_dim), dt)
            if batch <= self.chunk and self.engine is None:
                self._layers(ws)
            self._workspaces[batch] = ws
        return ws

    def _layers(self, ws: ConvWorkspace) -> None:
        """Allocate the per-layer activations (once)."""
        if "fc" in ws.act:
            return
        xp, dt, a, batch = self.xp, self.dtype, self.arch, ws.batch
        sizes = a.sizes
        for i, (name, _, cout) in enumerate(a.enc_layers):
            ws.act[name] = xp.empty((batch, cout, *sizes[i + 1]), dt)
        ws.act["fc"] = xp.empty((batch, a.flat_dim), dt)
        for j, (name, _, cout, _) in enumerate(a.dec_layers[:-1]):
            ws.act[name] = xp.empty((batch, cout, *sizes[len(sizes) - 2 - j]), dt)

    def _grads(self, ws: ConvWorkspace) -> None:
        """Allocate the activations and their gradients (once): the training path."""
        if self.engine is not None:  # it keeps its own layer buffers
            if not ws.grad:
                ws.grad = {n: self.xp.empty_like(ws.act[n]) for n in ("head", "out")}
                ws.dz = self.xp.empty_like(ws.z)
            return
        self._layers(ws)
        if not ws.grad:
            for name, arr in ws.act.items():
                ws.grad[name] = self.xp.empty_like(arr)
            ws.dz = self.xp.empty_like(ws.z)

    def split_head(self, head):
        L = self.arch.latent
        if self.arch.kind == "ae":
            return head, None
        return head[:, :L], head[:, L:]

    # ---- forward, caches as return values ---------------------------------------------------
    def _encode(self, P, x, ws):
        if self.engine is not None:
            return self.engine.encode(P, x, ws), None
        xp, ops, a = self.xp, self.ops, self.arch
        h = x.reshape(x.shape[0], *a.image_shape)
        caches = []
        for name, _, _ in a.enc_layers:
            h, cache = conv2d(xp, h, P[f"{name}.W"], P[f"{name}.b"], a.stride, a.padding, out=ws.act[name])
            ops.relu(h)
            caches.append(cache)
        ops.linear(h.reshape(h.shape[0], -1), P["head.W"], P["head.b"], ws.act["head"])
        return ws.act["head"], caches

    def _decode(self, P, z, ws):
        if self.engine is not None:
            return self.engine.decode(P, z, ws), None
        xp, ops, a = self.xp, self.ops, self.arch
        B = z.shape[0]
        h = ops.relu(ops.linear(z, P["fc.W"], P["fc.b"], ws.act["fc"]))
        h = h.reshape(B, a.channels[-1], *a.sizes[-1])
        caches = []
        for name, _, _, op in a.dec_layers:
            last = name == a.dec_layers[-1][0]
            out = ws.act["out"].reshape(B, *a.image_shape) if last else ws.act[name]
            h, cache = conv_transpose2d(xp, h, P[f"{name}.W"], P[f"{name}.b"], a.stride, a.padding, op, out=out)
            if not last:
                ops.relu(h)
            caches.append(cache)
        ws.logscale = P.get("out.logscale")
        return ws.act["out"], caches

    def _chunked(self, fn, P, rows, ws, name):
        """Run a forward-only pass in chunks of ``self.chunk`` rows (bounded memory for big batches)."""
        B = rows.shape[0]
        if B <= self.chunk:
            return fn(P, rows, ws)[0]
        for s in range(0, B, self.chunk):
            e = min(B, s + self.chunk)
            sub = self.workspace(e - s)
            ws.act[name][s:e] = fn(P, rows[s:e], sub)[0]
        ws.logscale = P.get("out.logscale")
        return ws.act[name]

    def encode(self, P: dict, x, ws: ConvWorkspace):
        return self.split_head(self._chunked(self._encode, P, x, ws, "head"))

    def decode(self, P: dict, z, ws: ConvWorkspace):
        """Decoder outputs (B, C*H*W): logits, or the logistic's pre-sigmoid location."""
        return self._chunked(self._decode, P, z, ws, "out")

    def sample_z(self, mean, logvar, eps, ws: ConvWorkspace):
        if logvar is None:
            return mean
        return self.ops.reparameterize(mean, logvar, eps, ws.z)

    def recon_per_example(self, logits, x, ws: ConvWorkspace):
        lik = self.arch.likelihood
        if lik == "bernoulli":
            return self.ops.bernoulli_nll(logits, x, ws.pixels)
        if lik == "gaussian":
            return self.ops.sse(logits, x, ws.pixels)
        if self.engine is not None and self.engine.fits(logits, x):
            return self.engine.recon(logits, x, ws)
        return logistic_nll(self.xp, logits, x, ws.logscale)

    # the evaluation path is the MLP's, written against the same encode/decode/likelihood interface
    losses = VAE.losses

    # ---- forward + backward -------------------------------------------------------------------
    def latent_backward(self, ws, mean, logvar, eps, beta: float, scale: float):
        """ws.dz (the gradient at z) -> the head's gradient in ws.grad["head"], KL term included; returns the KL."""
        ops, dhead = self.ops, ws.grad["head"]
        if logvar is None:
            dhead[...] = ws.dz
            return self.xp.zeros((), self.dtype)
        dmean, dlogvar = self.split_head(dhead)
        ops.reparameterize_backward(ws.dz, logvar, eps, dmean, dlogvar)
        ops.kl_grad_add(mean, logvar, beta * scale, dmean, dlogvar)
        return ops.kl(mean, logvar).sum() * scale

    def loss_and_grad(self, P: dict, G: dict, x, eps, beta: float = 1.0):
        """Write d(loss)/d(params) into the views G; return (loss, recon, kl) batch means (0-d arrays)."""
        xp, ops, a = self.xp, self.ops, self.arch
        B = x.shape[0]
        ws = self.workspace(B)
        self._grads(ws)
        if self.engine is not None:
            return self.engine.loss_and_grad(P, G, self.engine.input(x), eps, beta, ws, self)
        scale = 1.0 / B
        head, enc_caches = self._encode(P, x, ws)
        mean, logvar = self.split_head(head)
        z = self.sample_z(mean, logvar, eps, ws)
        logits, dec_caches = self._decode(P, z, ws)

        # likelihood
        recon = self.recon_per_example(logits, x, ws).sum() * scale
        dout = ws.grad["out"]
        if a.likelihood == "bernoulli":
            ops.bernoulli_nll_grad(logits, x, scale, dout)
        elif a.likelihood == "gaussian":
            ops.sse_grad(logits, x, scale, dout)
        else:
            logistic_nll_grad(xp, logits, x, P["out.logscale"], scale, dout, G["out.logscale"])

        # decoder, last transposed convolution first
        dh = dout.reshape(B, *a.image_shape)
        names = [n for n, _, _, _ in a.dec_layers]
        for j in range(len(names) - 1, -1, -1):
            below = names[j - 1] if j > 0 else "fc"
            dx = ws.grad[below]
            dx = dx if j > 0 else dx.reshape(B, a.channels[-1], *a.sizes[-1])
            conv_transpose2d_backward(xp, dh, dec_caches[j], P[f"{names[j]}.W"], G[f"{names[j]}.W"],
                                      G[f"{names[j]}.b"], dx)
            ops.relu_backward(dx, ws.act[below].reshape(dx.shape))
            dh = dx
        ops.linear_backward(ws.grad["fc"], z, P["fc.W"], G["fc.W"], G["fc.b"], ws.dz)

        kl = self.latent_backward(ws, mean, logvar, eps, beta, scale)
        dhead = ws.grad["head"]

        # encoder, head first
        enc = [n for n, _, _ in a.enc_layers]
        top = enc[-1]
        ops.linear_backward(dhead, ws.act[top].reshape(B, -1), P["head.W"], G["head.W"], G["head.b"],
                            ws.grad[top].reshape(B, -1))
        for i in range(len(enc) - 1, -1, -1):
            name = enc[i]
            ops.relu_backward(ws.grad[name], ws.act[name])
            dx = ws.grad[enc[i - 1]] if i > 0 else None
            conv2d_backward(xp, ws.grad[name], enc_caches[i], P[f"{name}.W"], G[f"{name}.W"], G[f"{name}.b"], dx)

        return recon + beta * kl, recon, kl
