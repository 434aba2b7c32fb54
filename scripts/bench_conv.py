"""Conv VAE speed on the CPU: cuvae against PyTorch (oneDNN), measured in the same run.

Layers (default): each layer of the 3x32x32 model (channels 32-64-128, k4 s2 p1), forward +
backward (input gradient included), on one batch, for three implementations:

- ``numpy``: the reference ops of cuvae.nn.conv (NCHW; the specification, and the "before");
- ``cuvae``: the fused NHWC layers of cuvae.backends.cpu_conv, which the CPU backend trains with
  (activations NHWC, as inside the model; torch gets its own NCHW);
- ``torch``: torch.nn.Conv2d / ConvTranspose2d.

The three are interleaved, each timed best-of --repeat, and the whole table is measured --rounds
times; ratios (examples/s over torch's) are reported as the median over rounds with their range,
since a shared machine makes single runs noisy.

Epoch (--epoch): a whole conv-VAE training epoch on a dataset slice, through cuvae-train (the real
trainer: shuffling, noise, step, Adam) and scripts/torch_conv_reference.py (the same model in
PyTorch, trained the same way), each in its own process, alternating, --epoch-rounds times;
examples/s of every epoch and each process's peak resident memory (ru_maxrss).

    python scripts/bench_conv.py --batch 100 --repeat 5 --rounds 3
    python scripts/bench_conv.py --epoch --dataset folder:/work/shared/data/cifar10-jpeg.zip --train-size 10000
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [("conv", 3, 32, 32), ("conv", 32, 64, 16), ("conv", 64, 128, 8),
          ("tconv", 128, 64, 4), ("tconv", 64, 32, 8), ("tconv", 32, 3, 16)]


def best(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def layer_runners(np, torch, kind, cin, cout, hw, B, rng):
    """Three zero-argument callables (numpy, cuvae, torch), each one forward + backward."""
    from cuvae.backends import cpu_conv as F
    from cuvae.nn import conv as R

    k, s, p = 4, 2, 1
    x = rng.standard_normal((B, cin, hw, hw)).astype(np.float32)
    x4 = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    b = np.zeros(cout, np.float32)
    if kind == "conv":
        W = (rng.standard_normal((cout, cin, k, k)) * 0.05).astype(np.float32)
        Ho = (hw + 2 * p - k) // s + 1
        buf = F.ConvBuffers(B * Ho * Ho, cin * k * k, cout, cin * k * k, cout, np.float32)
        out = np.empty((B * Ho * Ho, cout), np.float32)
        dx4 = np.empty_like(x4)
        fwd, bwd, tmod = R.conv2d, R.conv2d_backward, torch.nn.Conv2d(cin, cout, k, s, p)

        def fused():
            F.conv2d_forward(x4, W, b, s, p, out, buf)
            F.conv2d_backward(out, W, dW, db, s, p, buf, dx4=dx4)
    else:
        W = (rng.standard_normal((cin, cout, k, k)) * 0.05).astype(np.float32)
        Ho = (hw - 1) * s - 2 * p + k
        buf = F.ConvBuffers(B * hw * hw, cout * k * k, cin, cout * k * k, cout, np.float32)
        xr = x4.reshape(-1, cin)
        out4 = np.empty((B, Ho, Ho, cout), np.float32)
        dxr = np.empty_like(xr)
        fwd, bwd, tmod = R.conv_transpose2d, R.conv_transpose2d_backward, torch.nn.ConvTranspose2d(cin, cout, k, s, p)

        def fused():
            F.conv_transpose2d_forward(xr, (hw, hw), W, b, s, p, out4, buf)
            F.conv_transpose2d_backward(out4, xr, (hw, hw), W, dW, db, s, p, buf, dxr)
    dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)

    def reference():
        o, cache = fwd(np, x, W, b, s, p)
        bwd(np, o, cache, W, dW, db, dx)

    tx = torch.from_numpy(x).requires_grad_(True)

    def theirs():
        o = tmod(tx)
        o.backward(o.detach())

    return reference, fused, theirs


def spread(values):
    return statistics.median(values), min(values), max(values)


def bench_layers(a):
    import numpy as np
    import torch

    from cuvae.backends.backend import set_cpu_threads

    torch.set_num_threads(a.threads)
    set_cpu_threads(a.threads)
    rng = np.random.default_rng(0)
    runners = [layer_runners(np, torch, *layer, a.batch, rng) for layer in LAYERS]
    names = ["numpy", "cuvae", "torch"]
    rounds = []  # rounds[r][layer][impl] = seconds
    for _ in range(a.rounds):
        rounds.append([[best(f, a.repeat) for f in trio] for trio in runners])
    B = a.batch
    rows = []
    for li, (kind, cin, cout, hw) in enumerate(LAYERS):
        sec = {n: statistics.median(r[li][i] for r in rounds) for i, n in enumerate(names)}
        ratio = {n: spread([r[li][2] / r[li][i] for r in rounds]) for i, n in enumerate(names[:2])}
        rows.append({"layer": f"{kind} {cin}->{cout} @ {hw}x{hw}", **{f"{n}_ex_s": B / sec[n] for n in names},
                     "ratio": ratio["cuvae"], "ratio_numpy": ratio["numpy"]})
    tot = [[sum(r[li][i] for li in range(len(LAYERS))) for i in range(3)] for r in rounds]
    total = {"layer": "all six layers",
             **{f"{n}_ex_s": B / statistics.median(t[i] for t in tot) for i, n in enumerate(names)},
             "ratio": spread([t[2] / t[1] for t in tot]), "ratio_numpy": spread([t[2] / t[0] for t in tot])}
    print(f"batch {B}, {a.threads} threads, forward + backward, examples/s (median of {a.rounds} rounds); "
          f"ratio = over torch's, median [min-max]")
    print(f"{'layer':24s} {'numpy':>8s} {'cuvae':>8s} {'torch':>8s}   {'numpy/torch':>18s}   {'cuvae/torch':>18s}")
    for r in rows + [total]:
        rn, rc = r["ratio_numpy"], r["ratio"]
        print(f"{r['layer']:24s} {r['numpy_ex_s']:8.0f} {r['cuvae_ex_s']:8.0f} {r['torch_ex_s']:8.0f}   "
              f"{rn[0]:5.2f} [{rn[1]:.2f}-{rn[2]:.2f}]   {rc[0]:5.2f} [{rc[1]:.2f}-{rc[2]:.2f}]")
    print(json.dumps({"batch": B, "threads": a.threads, "rounds": a.rounds, "layers": rows, "total": total}))


def run_measured(cmd, env):
    """Run cmd; return (stdout, peak resident memory in MiB) of that process alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{cmd[1]} failed ({proc.returncode}): {err.read()[-2000:]}")
        return out.read(), usage.ru_maxrss / 1024


def bench_epoch(a):
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads))
    common = ["--dataset", a.dataset, "--train-size", str(a.train_size), "--test-size", str(a.test_size),
              "--epochs", str(a.epochs), "--latent", str(a.latent), "--threads", str(a.threads)]
    results = {"cuvae": [], "torch": []}
    for _ in range(a.epoch_rounds):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "cuvae.train", "--arch", "conv", "--device", "cpu", "--json",
                   "--out", str(Path(tmp) / "run"), *common]
            text, rss = run_measured(cmd, env)
        rates = [json.loads(line)["examples_per_s"] for line in text.splitlines()
                 if line.startswith("{") and "examples_per_s" in line]
        results["cuvae"].append((rates, rss))
        text, rss = run_measured([sys.executable, str(ROOT / "scripts" / "torch_conv_reference.py"), *common], env)
        rates = [json.loads(line)["examples_per_s"] for line in text.splitlines() if line.startswith("{")]
        results["torch"].append((rates, rss))
    summary = {}
    for name, runs in results.items():
        rates = [r for rs, _ in runs for r in rs]
        summary[name] = {"epochs_ex_s": rates, "median_ex_s": statistics.median(rates),
                         "peak_rss_mib": max(m for _, m in runs)}
    pairs = [c / t for (cr, _), (tr, _) in zip(results["cuvae"], results["torch"]) for c, t in zip(cr, tr)]
    ratio = spread(pairs)
    print(f"whole training epoch, {a.dataset} (train {a.train_size}), batch 100, latent {a.latent}, "
          f"{a.threads} threads, {a.epoch_rounds} x {a.epochs} epochs each")
    for name in ("cuvae", "torch"):
        s = summary[name]
        print(f"{name:6s} median {s['median_ex_s']:7.0f} ex/s  (epochs: "
              f"{', '.join(f'{r:.0f}' for r in s['epochs_ex_s'])})  peak RSS {s['peak_rss_mib']:.0f} MiB")
    print(f"ratio cuvae/torch per epoch pair: median {ratio[0]:.2f} [{ratio[1]:.2f}-{ratio[2]:.2f}]")
    print(json.dumps({"epoch": summary, "ratio": ratio}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="times the layer table is measured (default 3)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epoch", action="store_true", help="time whole training epochs instead of layers")
    p.add_argument("--dataset", default="folder:/work/shared/data/cifar10-jpeg.zip")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--epoch-rounds", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # as importing cuvae sets it (before NumPy loads here)
    (bench_epoch if a.epoch else bench_layers)(a)


if __name__ == "__main__":
    main()
