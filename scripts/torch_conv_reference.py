"""Independent PyTorch twin of cuvae's conv VAE, trained the same way, for the acceptance check.

Same architecture (Conv2d k4 s2 p1 + ReLU per level, linear head, linear + ReLU, ConvTranspose2d
mirror with the output padding that restores each size), same likelihood (Bernoulli, or a
discretised logistic with mu = sigmoid(logit) and a learned per-channel log-scale starting at -2),
same optimiser (Adam, lr 1e-3, batch 100), one eps sample per example. Shares no model code with
cuvae: only the data loader is reused, so both see the same pixels. torch's own default init.

    python scripts/torch_conv_reference.py --dataset folder:/work/shared/data/cifar10-jpeg.zip \
        --train-size 5000 --test-size 1000 --epochs 3 --latent 32

Prints one JSON line per epoch: test_loss (negative ELBO, nats per image) and test_bpd.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def out_size(n, k=4, s=2, p=1):
    return (n + 2 * p - k) // s + 1


class ConvVAE(nn.Module):
    def __init__(self, shape, channels, latent, likelihood):
        super().__init__()
        C, H, W = shape
        sizes = [(H, W)]
        for _ in channels:
            sizes.append((out_size(sizes[-1][0]), out_size(sizes[-1][1])))
        chans = [C, *channels]
        self.enc = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1) for i in range(len(channels)))
        self.top = (channels[-1], *sizes[-1])
        flat = channels[-1] * sizes[-1][0] * sizes[-1][1]
        self.head = nn.Linear(flat, 2 * latent)
        self.fc = nn.Linear(latent, flat)
        dec = []
        for i in range(len(channels), 0, -1):
            (h, w), (Ht, Wt) = sizes[i], sizes[i - 1]
            op = (Ht - ((h - 1) * 2 - 2 + 4), Wt - ((w - 1) * 2 - 2 + 4))
            dec.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 4, 2, 1, output_padding=op))
        self.dec = nn.ModuleList(dec)
        self.likelihood, self.latent, self.shape = likelihood, latent, shape
        if likelihood == "logistic":
            self.logscale = nn.Parameter(torch.full((C,), -2.0))

    def forward(self, x, eps):
        h = x.view(-1, *self.shape)
        for conv in self.enc:
            h = F.relu(conv(h))
        mean, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        z = mean + torch.exp(0.5 * logvar) * eps
        h = F.relu(self.fc(z)).view(-1, *self.top)
        for i, conv in enumerate(self.dec):
            h = conv(h)
            if i < len(self.dec) - 1:
                h = F.relu(h)
        return h.flatten(1), mean, logvar

    def nll(self, out, x):
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, x, reduction="none").sum(1)
        B, C = x.shape[0], self.shape[0]
        mu = torch.sigmoid(out).view(B, C, -1)
        xx = x.view(B, C, -1)
        s = torch.exp(self.logscale).view(1, C, 1)
        hb = 0.5 / 255
        cdf_plus = torch.sigmoid((xx + hb - mu) / s)
        cdf_min = torch.sigmoid((xx - hb - mu) / s)
        log_cdf_plus = F.logsigmoid((xx + hb - mu) / s)  # x = 0: P = cdf_plus
        log_one_minus_cdf_min = -F.softplus((xx - hb - mu) / s)  # x = 1: P = 1 - cdf_min
        mid = torch.log(torch.clamp(cdf_plus - cdf_min, min=1e-12))
        logp = torch.where(xx < hb, log_cdf_plus, torch.where(xx > 1 - hb, log_one_minus_cdf_min, mid))
        return -logp.sum((1, 2))


def kl(mean, logvar):
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir")
    p.add_argument("--train-size", type=int)
    p.add_argument("--test-size", type=int)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--likelihood", choices=["bernoulli", "logistic"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from cuvae.data import load_dataset  # data only

    ds = load_dataset(a.dataset, data_dir=a.data_dir, train_size=a.train_size, test_size=a.test_size, log=None)
    shape = tuple(ds.image_shape) if len(ds.image_shape) == 3 else (1, *ds.image_shape)
    lik = a.likelihood or ("logistic" if shape[0] == 3 else "bernoulli")
    torch.manual_seed(a.seed)
    model = ConvVAE(shape, a.channels, a.latent, lik)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    tx = torch.from_numpy(ds.train_x.astype(np.float32) / 255.0)
    vx = torch.from_numpy(ds.test_x.astype(np.float32) / 255.0)
    D = tx.shape[1]
    gen = torch.Generator().manual_seed(a.seed)
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(len(tx), generator=gen)
        total = 0.0
        for s in range(0, len(tx), a.batch_size):
            xb = tx[perm[s:s + a.batch_size]]
            eps = torch.randn(len(xb), a.latent, generator=gen)
            out, mean, logvar = model(xb, eps)
            loss = (model.nll(out, xb) + kl(mean, logvar)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(xb)
        secs = time.perf_counter() - t0
        with torch.no_grad():
            g = torch.Generator().manual_seed(1000 + a.seed)
            test = 0.0
            for s in range(0, len(vx), 500):
                xb = vx[s:s + 500]
                out, mean, logvar = model(xb, torch.randn(len(xb), a.latent, generator=g))
                test += float((model.nll(out, xb) + kl(mean, logvar)).sum())
            test /= len(vx)
        row = {"epoch": epoch, "train_loss": total / len(tx), "test_loss": test, "seconds": secs,
               "examples_per_s": len(tx) / secs, "likelihood": lik}
        if lik == "logistic":
            row["test_bpd"] = test / (D * math.log(2))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
