"""The MLP VAE (and its plain-autoencoder twin), forward and backward by hand.

    x -> [enc_i: linear + act]* -> head: linear -> [mean | logvar]
      -> z = mean + exp(0.5 logvar) * eps
      -> [dec_i: linear + act]* -> out: linear -> logits -> likelihood

act is ReLU (the default) or tanh (Burda et al.'s network).

The step is a pure function of (parameters, batch, eps): the trainer draws eps
from a seeded generator and passes it in. Both heads are one ``head`` layer of
width 2*latent (mean first), so the step has one skinny GEMM instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cuvae.nn.params import Layout, init_params

LIKELIHOODS = ("bernoulli", "gaussian")
MODEL_KINDS = ("vae", "ae")
ACTIVATIONS = ("relu", "tanh")


@dataclass(frozen=True)
class Arch:
    in_dim: int = 784
    hidden: tuple[int, ...] = (256, 128)
    latent: int = 8
    likelihood: str = "bernoulli"
    kind: str = "vae"  # "ae": deterministic autoencoder, z = mean, no KL
    activation: str = "relu"  # of every hidden layer: "relu" or "tanh"

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    @property
    def head_width(self) -> int:
        return 2 * self.latent if self.kind == "vae" else self.latent

    @property
    def linears(self) -> list[tuple[str, int, int]]:
        """(name, fan_in, fan_out) of every linear layer, in forward order."""
        dims = (self.in_dim, *self.hidden)
        layers = [(f"enc{i + 1}", dims[i], dims[i + 1]) for i in range(len(self.hidden))]
        layers.append(("head", dims[-1], self.head_width))
        back = (self.latent, *reversed(self.hidden), self.in_dim)
        layers += [(f"dec{i + 1}", back[i], back[i + 1]) for i in range(len(self.hidden))]
        layers.append(("out", back[-2], back[-1]))
        return layers

    def layout(self) -> Layout:
        entries = []
        for name, fan_in, fan_out in self.linears:
            entries += [(f"{name}.W", (fan_in, fan_out)), (f"{name}.b", (fan_out,))]
        return Layout(tuple(entries))

    def describe(self) -> str:
        sizes = "-".join(map(str, (self.in_dim, *self.hidden, self.latent)))
        act = "" if self.activation == "relu" else f", {self.activation}"
        return f"{self.kind.upper()} {sizes}, {self.likelihood}{act}"


@dataclass
class Workspace:
    """Preallocated activations and their gradients for one batch size."""

    batch: int
    act: dict = field(default_factory=dict)  # layer name -> (B, out) output
    grad: dict = field(default_factory=dict)  # layer name -> (B, out) d loss / d output
    z: object = None
    dz: object = None
    pixels: object = None  # (B, in_dim) scratch for the likelihood


class VAE:
    """Forward and backward for an :class:`Arch` on one backend's ops."""

    def __init__(self, arch: Arch, ops, dtype=np.float32):
        self.arch, self.ops, self.xp, self.dtype = arch, ops, ops.xp, np.dtype(dtype)
        self.layout = arch.layout()
        self.linear_names = [name for name, _, _ in arch.linears]
        self._workspaces: dict[int, Workspace] = {}
        # the hidden layers' activation and its backward (in place; the backward reads the output)
        self.act = getattr(ops, arch.activation)
        self.act_backward = getattr(ops, f"{arch.activation}_backward")

    def initial_params(self, init: str, seed: int) -> np.ndarray:
        """Freshly initialised flat parameters, on the host."""
        return init_params(self.layout, self.linear_names, init, seed, self.dtype)

    # ---- buffers ---------------------------------------------------------------
    def workspace(self, batch: int) -> Workspace:
        ws = self._workspaces.get(batch)
        if ws is None:
            xp, dt = self.xp, self.dtype
            ws = Workspace(batch)
            for name, _, fan_out in self.arch.linears:
                ws.act[name] = xp.empty((batch, fan_out), dt)
                ws.grad[name] = xp.empty((batch, fan_out), dt)
            ws.z = xp.empty((batch, self.arch.latent), dt)
            ws.dz = xp.empty((batch, self.arch.latent), dt)
            ws.pixels = xp.empty((batch, self.arch.in_dim), dt)
            self._workspaces[batch] = ws
        return ws

    def split_head(self, head):
        """(mean, logvar) views of the head output; logvar is None for the autoencoder."""
        L = self.arch.latent
        if self.arch.kind == "ae":
            return head, None
        return head[:, :L], head[:, L:]

    # ---- forward ----------------------------------------------------------------
    def encode(self, P: dict, x, ws: Workspace):
        ops, h = self.ops, x
        for i in range(len(self.arch.hidden)):
            name = f"enc{i + 1}"
            h = self.act(ops.linear(h, P[f"{name}.W"], P[f"{name}.b"], ws.act[name]))
        return self.split_head(ops.linear(h, P["head.W"], P["head.b"], ws.act["head"]))

    def decode(self, P: dict, z, ws: Workspace):
        """Decoder logits for latent codes z (rows of ws.act["out"])."""
        ops, h = self.ops, z
        for i in range(len(self.arch.hidden)):
            name = f"dec{i + 1}"
            h = self.act(ops.linear(h, P[f"{name}.W"], P[f"{name}.b"], ws.act[name]))
        return ops.linear(h, P["out.W"], P["out.b"], ws.act["out"])

    def sample_z(self, mean, logvar, eps, ws: Workspace):
        if logvar is None:
            return mean
        return self.ops.reparameterize(mean, logvar, eps, ws.z)

    def recon_per_example(self, logits, x, ws: Workspace):
        if self.arch.likelihood == "bernoulli":
            return self.ops.bernoulli_nll(logits, x, ws.pixels)
        return self.ops.sse(logits, x, ws.pixels)

    def losses(self, P: dict, x, eps):
        """Per-example (recon, kl) for a batch; the evaluation path."""
        ws = self.workspace(x.shape[0])
        mean, logvar = self.encode(P, x, ws)
        logits = self.decode(P, self.sample_z(mean, logvar, eps, ws), ws)
        recon = self.recon_per_example(logits, x, ws)
        kl = self.ops.kl(mean, logvar) if logvar is not None else self.xp.zeros_like(recon)
        return recon, kl

    # ---- forward + backward -----------------------------------------------------------
    def loss_and_grad(self, P: dict, G: dict, x, eps, beta: float = 1.0):
        """Write d(loss)/d(params) into the views G; return (loss, recon, kl) batch means.

        loss = mean over the batch of recon + beta * kl. The returned values are
        0-d arrays on the backend: reading them is the caller's choice (a GPU sync).
        """
        ops, arch = self.ops, self.arch
        B = x.shape[0]
        ws = self.workspace(B)
        scale = 1.0 / B
        mean, logvar = self.encode(P, x, ws)
        z = self.sample_z(mean, logvar, eps, ws)
        logits = self.decode(P, z, ws)

        # likelihood: per-example sums, batch mean, gradient w.r.t. logits
        recon = self.recon_per_example(logits, x, ws).sum() * scale
        grad_fn = ops.bernoulli_nll_grad if arch.likelihood == "bernoulli" else ops.sse_grad
        grad_fn(logits, x, scale, ws.grad["out"])

        self.decoder_backward(P, G, z, ws)

        # latent: reparameterisation and KL
        dhead = ws.grad["head"]
        if logvar is None:
            dhead[...] = ws.dz
            kl = self.xp.zeros((), self.dtype)
        else:
            dmean, dlogvar = self.split_head(dhead)
            ops.reparameterize_backward(ws.dz, logvar, eps, dmean, dlogvar)
            kl = ops.kl(mean, logvar).sum() * scale
            ops.kl_grad_add(mean, logvar, beta * scale, dmean, dlogvar)

        self.encoder_backward(P, G, x, ws)
        return recon + beta * kl, recon, kl

    def decoder_backward(self, P: dict, G: dict, z, ws: Workspace) -> None:
        """From ws.grad["out"] (d loss / d logits): the decoder's parameter gradients, and d loss / dz in ws.dz."""
        dec = [f"dec{i + 1}" for i in range(len(self.arch.hidden))]
        inputs = [z] + [ws.act[n] for n in dec]
        for name, inp, below in zip(["out", *reversed(dec)], reversed(inputs), [*reversed(dec), None]):
            dx = ws.grad[below] if below else ws.dz
            self.ops.linear_backward(ws.grad[name], inp, P[f"{name}.W"], G[f"{name}.W"], G[f"{name}.b"], dx)
            if below:
                self.act_backward(dx, ws.act[below])

    def encoder_backward(self, P: dict, G: dict, x, ws: Workspace) -> None:
        """From ws.grad["head"] (d loss / d [mean | logvar]): the encoder's parameter gradients."""
        enc = [f"enc{i + 1}" for i in range(len(self.arch.hidden))]
        inputs = [x] + [ws.act[n] for n in enc]
        for name, inp, below in zip(["head", *reversed(enc)], reversed(inputs), [*reversed(enc), None]):
            dx = ws.grad[below] if below else None
            self.ops.linear_backward(ws.grad[name], inp, P[f"{name}.W"], G[f"{name}.W"], G[f"{name}.b"], dx)
            if below:
                self.act_backward(dx, ws.act[below])


def free_workspaces(model: VAE, keep: int | None = None) -> None:
    """Drop cached workspaces (evaluation uses odd batch sizes) except ``keep``'s."""
    for batch in list(model._workspaces):
        if batch != keep:
            del model._workspaces[batch]
