"""Independent PyTorch VAE: the reference that cuvae's acceptance checks and benchmarks measure against.

Deliberately shares no code with cuvae. Data come in as NumPy arrays of shape (N, 784) in [0, 1].
Run as a script for a quick MNIST check (one JSON line per epoch):

    python scripts/torch_reference.py --data-dir /path/to/mnist --hidden 400 --latent 20 --epochs 3
"""
import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class VAE(nn.Module):
    def __init__(self, in_dim, hidden, latent):
        super().__init__()
        dims = [in_dim, *hidden]
        self.encoder = nn.Sequential(*[m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())])
        self.mean = nn.Linear(hidden[-1], latent)
        self.logvar = nn.Linear(hidden[-1], latent)
        dims = [latent, *reversed(hidden)]
        self.decoder = nn.Sequential(*[m for a, b in zip(dims, dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())],
                                     nn.Linear(hidden[0], in_dim))

    def forward(self, x, eps):
        h = self.encoder(x)
        mean, logvar = self.mean(h), self.logvar(h)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decoder(z), mean, logvar


def build_vae(in_dim=784, hidden=(256, 128), latent=8, init="pytorch", seed=0, dtype=torch.float32, device="cpu"):
    """init="pytorch": nn.Linear's default init; "glorot": xavier_uniform_ weights, zero biases.
    Seeded without disturbing the global RNG."""
    if init not in ("pytorch", "glorot"):
        raise ValueError(f"unknown init {init!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VAE(in_dim, tuple(hidden), latent)
        if init == "glorot":
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
    return model.to(device=device, dtype=dtype)


def vae_loss(logits, x, mean, logvar, likelihood="bernoulli", beta=1.0):
    """Negative ELBO in nats per example: returns (recon + beta*kl, recon, kl), each a batch mean."""
    if likelihood == "bernoulli":
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
    elif likelihood == "gaussian":
        recon = (torch.sigmoid(logits) - x).pow(2).sum(1)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}")
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    recon, kl = recon.mean(), kl.mean()
    return recon + beta * kl, recon, kl


def make_adam(params, lr, fused=True, capturable=False):
    """Adam(lr, (0.9, 0.999), 1e-8), fused where this build supports it for the parameters' device, else foreach."""
    params = list(params)
    kw = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, capturable=capturable)
    if fused:
        try:
            return torch.optim.Adam(params, fused=True, **kw)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.Adam(params, foreach=True, **kw)


def _loss_on(model, x, eps, likelihood):
    logits, mean, logvar = model(x, eps)
    return vae_loss(logits, x, mean, logvar, likelihood)


@torch.no_grad()
def evaluate(model, x, latent, likelihood, seed, batch_size=1000):
    """Test negative ELBO with one eps sample per example (seeded); returns [loss, recon, kl] per example."""
    g = torch.Generator().manual_seed(seed)
    tot = torch.zeros(3, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size]
        eps = torch.randn(len(xb), latent, generator=g)
        tot += torch.stack(_loss_on(model, xb, eps, likelihood)).double() * len(xb)
    return (tot / len(x)).tolist()


def train_reference(train_x, test_x, *, hidden=(256, 128), latent=8, likelihood="bernoulli", batch_size=100,
                    lr=1e-3, epochs=3, init="pytorch", seed=0, fused_adam=True, threads=None, log=print):
    """Train on CPU; one dict per epoch. `log` gets one JSON line per epoch (None: silent)."""
    if threads:
        torch.set_num_threads(threads)
    xtr, xte = torch.from_numpy(np.ascontiguousarray(train_x, np.float32)), torch.from_numpy(np.ascontiguousarray(test_x, np.float32))
    model = build_vae(xtr.shape[1], hidden, latent, init=init, seed=seed)
    opt = make_adam(model.parameters(), lr, fused=fused_adam)
    g = torch.Generator().manual_seed(seed)
    n, history = len(xtr), []
    for epoch in range(1, epochs + 1):
        t0, total = time.perf_counter(), 0.0
        for idx in torch.randperm(n, generator=g).split(batch_size):  # last partial batch included
            xb = xtr[idx]
            eps = torch.randn(len(idx), latent, generator=g)
            loss, _, _ = _loss_on(model, xb, eps, likelihood)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds = time.perf_counter() - t0
        test_loss, test_recon, test_kl = evaluate(model, xte, latent, likelihood, seed + 1)
        rec = dict(epoch=epoch, train_loss=total / n, test_loss=test_loss, test_recon=test_recon, test_kl=test_kl,
                   seconds=seconds, examples_per_s=n / seconds)
        history.append(rec)
        if log:
            log(json.dumps(rec))
    return history


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(batch_size, *, hidden=(256, 128), latent=8, likelihood="gaussian", steps=200, warmup=20, mode="eager",
               fused_adam=True, device="cpu", tf32=False, data=None, seed=0):
    """Time one training step (gather batch, eps, forward, backward, Adam) on preloaded data.

    mode: "eager"; "graph" (CUDA only: whole step captured in a CUDAGraph, replayed);
    "gemm_only" (only the step's matrix products: per Linear X@W^T, dX, dW; graph-captured on CUDA)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if mode == "graph" and not cuda:
        raise ValueError("mode='graph' needs device='cuda'")
    if mode not in ("eager", "graph", "gemm_only"):
        raise ValueError(f"unknown mode {mode!r}")
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.manual_seed(seed)
    in_dim = 784 if data is None else data.shape[1]
    xs = (torch.rand(max(10000, batch_size), in_dim) if data is None
          else torch.from_numpy(np.ascontiguousarray(data, np.float32))).to(dev)
    model = build_vae(in_dim, hidden, latent, seed=seed, device=dev)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    if mode == "gemm_only":
        lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
        first = model.encoder[0]
        bufs = [(torch.rand(batch_size, m.in_features, device=dev), torch.rand(batch_size, m.out_features, device=dev),
                 m.weight.detach(), m is first) for m in lins]

        def step():
            for x, dy, w, is_first in bufs:
                x @ w.t()                # forward
                if not is_first:
                    dy @ w               # dX (not needed for the input layer)
                dy.t() @ x               # dW
    else:
        opt = make_adam(model.parameters(), 1e-3, fused=fused_adam, capturable=(mode == "graph"))
        n = len(xs)

        def step():
            idx = torch.randint(n, (batch_size,), device=dev)
            xb = xs[idx]
            eps = torch.randn(batch_size, latent, device=dev)
            loss, _, _ = _loss_on(model, xb, eps, likelihood)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    if cuda and mode != "eager":
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm up on a side stream before capture
            for _ in range(max(warmup, 3)):
                step()
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        if mode == "graph":
            opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            step()
        run = graph.replay
    else:
        run = step
    for _ in range(warmup):
        run()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        run()
    _sync(dev)
    ms = (time.perf_counter() - t0) * 1e3 / steps
    peak = torch.cuda.max_memory_allocated() if cuda else None
    torch.backends.cuda.matmul.allow_tf32 = old_tf32
    return dict(ms_per_step=ms, examples_per_s=batch_size * 1e3 / ms, peak_mem_bytes=peak)


def load_idx(path):
    """Read a (gzipped) MNIST IDX file into a NumPy array."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir):
    """(train_x, test_x) as float32 (N, 784) in [0, 1]."""
    get = lambda name: load_idx(os.path.join(data_dir, name)).reshape(-1, 784).astype(np.float32) / 255.0
    return get("train-images-idx3-ubyte.gz"), get("t10k-images-idx3-ubyte.gz")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data/mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    ap.add_argument("--likelihood", choices=["bernoulli", "gaussian"], default="bernoulli")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init", choices=["pytorch", "glorot"], default="pytorch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    train_x, test_x = load_mnist(a.data_dir)
    if a.train_size:
        train_x = train_x[:a.train_size]
    train_reference(train_x, test_x, hidden=tuple(a.hidden), latent=a.latent, likelihood=a.likelihood,
                    batch_size=a.batch_size, lr=a.lr, epochs=a.epochs, init=a.init, seed=a.seed, threads=a.threads)
