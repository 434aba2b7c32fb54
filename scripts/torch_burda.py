"""Independent PyTorch model of Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders".

Written from the paper (section 5 and appendix), sharing no code with cuvae: the one-stochastic-layer
MNIST network 784-200-200-50 with tanh hidden units, a diagonal-Gaussian q(h|x), a Bernoulli p(x|h),
Glorot-initialised weights, the VAE (k-sample ELBO) or IWAE objective, Adam (beta1 0.9, beta2 0.999,
eps 1e-4), minibatches of 20, dynamic binarisation of the training images, and the learning-rate
schedule of 3^i passes at 1e-3 * 10^(-i/7) for i = 0..7 (3,280 passes). A shorter run (--epochs)
keeps each stage's share of the passes, counted per minibatch. The test NLL is the k-sample
importance-weighted estimate (the paper uses k = 5000) on binarised test images.

    pip install torch==2.13.0
    python scripts/torch_burda.py --data-dir /path/to/mnist --objective iwae --k 5 --epochs 3 --eval-k 100
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOG2PI = math.log(2 * math.pi)


class Net(nn.Module):
    def __init__(self, x_dim=784, h_dim=200, z_dim=50):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, h_dim), nn.Tanh(), nn.Linear(h_dim, h_dim), nn.Tanh())
        self.q_mu, self.q_logvar = nn.Linear(h_dim, z_dim), nn.Linear(h_dim, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, h_dim), nn.Tanh(), nn.Linear(h_dim, h_dim), nn.Tanh(),
                                 nn.Linear(h_dim, x_dim))
        for mod in self.modules():
            if isinstance(mod, nn.Linear):
                nn.init.xavier_uniform_(mod.weight)
                nn.init.zeros_(mod.bias)

    def log_weights(self, x, k, generator=None):
        """log w = log p(x, h) - log q(h|x) for k samples h ~ q(h|x): shape (k, batch)."""
        e = self.enc(x)
        mu, logvar = self.q_mu(e), self.q_logvar(e)
        sd = torch.exp(0.5 * logvar)
        noise = torch.randn((k, *mu.shape), generator=generator, dtype=mu.dtype)
        h = mu + sd * noise  # reparameterised: (k, batch, z)
        log_q = (-0.5 * noise.pow(2) - 0.5 * logvar - 0.5 * LOG2PI).sum(-1)
        log_prior = (-0.5 * h.pow(2) - 0.5 * LOG2PI).sum(-1)
        logits = self.dec(h)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
        return log_lik + log_prior - log_q, (mu, logvar, log_lik)


def loss_fn(net, x, k, objective):
    """Minimised: -IWAE bound (objective iwae) or -(k-sample average ELBO, KL in closed form) (vae)."""
    if objective == "iwae":
        lw, _ = net.log_weights(x, k)
        return -(torch.logsumexp(lw, 0) - math.log(k)).mean()
    _, (mu, logvar, log_lik) = net.log_weights(x, k)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    return -(log_lik.mean(0) - kl).mean()


def paper_lr(fraction):
    """Learning rate after `fraction` of training: stage i holds passes [sum_{j<i} 3^j, sum_{j<=i} 3^j) of 3,280."""
    passes, edge = fraction * 3280, 0
    for i in range(8):
        edge += 3**i
        if passes < edge - 1e-9:
            return 1e-3 * 10 ** (-i / 7)
    return 1e-3 * 10 ** (-1)


@torch.no_grad()
def test_nll(net, x_test, k=5000, chunk=20000, seed=1):
    """(mean -log p(x) estimate over the test set, its standard error over examples), k importance samples."""
    g = torch.Generator().manual_seed(seed)
    per = max(1, chunk // k)
    out = []
    for i in range(0, len(x_test), per):
        xb = x_test[i:i + per]
        parts, done = [], 0
        while done < k:  # keep at most `chunk` decoder rows in memory
            m = min(k - done, max(1, chunk // len(xb)))
            parts.append(net.log_weights(xb, m, g)[0])
            done += m
        lw = torch.cat(parts, 0)
        out.append(torch.logsumexp(lw.double(), 0) - math.log(k))
    logp = torch.cat(out)
    return float(-logp.mean()), float(logp.std() / math.sqrt(len(logp)))


def train(train_x, test_x, *, objective="vae", k=1, epochs=3, batch=20, seed=0, eval_k=5000, threads=None, log=print):
    """train_x: (N, 784) grey levels in [0, 1] (binarised afresh every minibatch); test_x: binary (M, 784)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = Net(train_x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-4)
    xtr = torch.from_numpy(np.ascontiguousarray(train_x, np.float32))
    xte = torch.from_numpy(np.ascontiguousarray(test_x, np.float32))
    n = len(xtr)
    steps = math.ceil(n / batch)
    history, t_train = [], 0.0
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for s, idx in enumerate(torch.randperm(n).split(batch)):
            for group in opt.param_groups:
                group["lr"] = paper_lr((epoch + s / steps) / epochs)
            xb = torch.bernoulli(xtr[idx])
            loss = loss_fn(net, xb, k, objective)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        seconds = time.perf_counter() - t0
        t_train += seconds
        rec = {"epoch": epoch + 1, "train_loss": total / n, "seconds": seconds}
        history.append(rec)
        if log:
            log(json.dumps(rec))
    t0 = time.perf_counter()
    nll, se = test_nll(net, xte, eval_k)
    return {"history": history, "train_seconds": t_train, "test_nll": nll, "test_se": se, "eval_k": eval_k,
            "eval_seconds": time.perf_counter() - t0}


def load_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape[0], -1)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--objective", choices=["vae", "iwae"], default="vae")
    ap.add_argument("--k", type=int, default=1, help="samples per example in training")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval-k", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    tr = load_idx(os.path.join(a.data_dir, "train-images-idx3-ubyte.gz")) / 255.0
    te = load_idx(os.path.join(a.data_dir, "t10k-images-idx3-ubyte.gz")) / 255.0
    te = (np.random.default_rng(123).random(te.shape) < te).astype(np.float32)  # one fixed binarisation
    res = train(tr, te, objective=a.objective, k=a.k, epochs=a.epochs, eval_k=a.eval_k, seed=a.seed, threads=a.threads)
    print(json.dumps({k: v for k, v in res.items() if k != "history"}))
