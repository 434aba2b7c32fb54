"""Conv VAE speed on the GPU: cuvae's device step against PyTorch eager and PyTorch's whole step in a CUDA
graph, the same model trained the same way, measured in one run.

The model is cuvae's default conv VAE on MNIST (1x28x28, Conv2d k4 s2 p1 with 32-64-128 channels + ReLU,
linear head to z = 8, the mirrored ConvTranspose2d decoder, Bernoulli likelihood, Adam 1e-3), in
PyTorch as scripts/torch_conv_reference.py builds it. Per batch size it prints ms per step and
examples/s for

- ``cuvae conv``: :class:`cuvae.backends.gpu_conv_step.ConvDeviceStep` (shuffle, noise, step and Adam on
  the device, one CUDA graph; --no-graph also times it uncaptured), the best of --rounds epochs after a
  warm-up epoch;
- ``pytorch conv eager``: gather, eps, forward, backward, fused Adam, cuDNN autotuned (benchmark mode);
- ``pytorch conv CUDA graph``: that whole step captured once (capturable fused Adam) and replayed;

with cuvae's examples/s as a multiple of each PyTorch mode's (``x_pytorch_eager``, ``x_pytorch_graph``).
Both frameworks compute in fp32: TF32 is off for PyTorch's GEMMs and its cuDNN convolutions unless --tf32
(then on for both).

    python scripts/bench_conv_gpu.py --data-dir DIR [--batches 100 1000] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHANNELS, LATENT = (32, 64, 128), 8


def conv_arch(shape=(1, 28, 28), channels=CHANNELS, latent=LATENT):
    from cuvae.nn.conv_model import ConvArch

    return ConvArch(image_shape=shape, channels=channels, latent=latent, likelihood="bernoulli")


def time_cuvae_conv(x_dev, arch, batch, graph=True, tf32=False, rounds=2, engine="cuda"):
    """Best epoch of ``rounds`` after a warm-up one: (ms per step, kind). The first step of each epoch (which
    may capture the graph) is not timed. ``engine="twin"`` runs on the NumPy twins (for the CPU tests)."""
    from bench import epoch_plan

    from cuvae.backends.gpu_conv_step import ConvDeviceStep
    from cuvae.backends.selftest import time_captured_step
    from cuvae.nn.conv_model import ConvVAE
    from cuvae.nn.ops import NumpyOps

    if engine == "cuda":
        import cupy

        xp, device_sync = cupy, cupy.cuda.Device().synchronize
    else:
        xp, device_sync = np, lambda: None
    steps, reps = epoch_plan(x_dev.shape[0], batch)
    data = x_dev if reps == 1 else xp.concatenate([x_dev] * reps)
    p = xp.asarray(ConvVAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 0))
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    notes = []
    st = ConvDeviceStep(arch, p, g, m, v, data[: steps * batch], lr=1e-3, engine=engine, graph=graph, tf32=tf32,
                        log=notes.append)
    best, sums, kind = time_captured_step(st, steps, batch, rounds=rounds, before_epoch=device_sync)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not np.isfinite(sums).all():
        raise RuntimeError(f"cuvae's conv step diverged at batch {batch}")
    return best, kind


def time_torch_conv(x, arch, batch, mode="eager", device="cuda", tf32=False, steps=50, warmup=5, seed=0):
    """ms per step of the same model in PyTorch: mode "eager", or "graph" (CUDA: the whole step in a CUDAGraph)."""
    import torch

    import torch_conv_reference as tcr
    from torch_reference import make_adam

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if mode not in ("eager", "graph") or (mode == "graph" and not cuda):
        raise ValueError(f"mode {mode!r} on {device}: eager anywhere, graph on CUDA only")
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
    torch.backends.cudnn.benchmark = True
    try:
        torch.manual_seed(seed)
        xs = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(dev)
        model = tcr.ConvVAE(arch.image_shape, list(arch.channels), arch.latent, "bernoulli").to(dev)
        opt = make_adam(model.parameters(), 1e-3, fused=True, capturable=(mode == "graph"))
        n = len(xs)

        def step():
            xb = xs[torch.randint(n, (batch,), device=dev)]
            eps = torch.randn(batch, arch.latent, device=dev)
            out, mean, logvar = model(xb, eps)
            loss = (model.nll(out, xb) + tcr.kl(mean, logvar)).mean()
            opt.zero_grad(set_to_none=mode == "eager")
            loss.backward()
            opt.step()

        run = step
        if mode == "graph":
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm up (and autotune cuDNN) on a side stream before capture
                for _ in range(max(warmup, 3)):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            run = graph.replay
        for _ in range(warmup):
            run()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            run()
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e3 / steps
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = old


def rows_for_batch(cuvae, torch_modes, batch, arch, device, tf32):
    """JSON rows: each cuvae timing with its examples/s as a multiple of each PyTorch mode's, then PyTorch's."""
    out = []
    base = {"batch": batch, "arch": arch.describe(), "tf32": tf32}
    for kind, ms in cuvae:
        r = {"framework": f"cuvae conv ({kind})", **base, "device": device, "ms_per_step": ms,
             "examples_per_s": batch * 1e3 / ms}
        for mode, (_, tms) in torch_modes.items():
            r[f"x_pytorch_{mode}"] = tms / ms  # (cuvae examples/s) / (pytorch examples/s)
        out.append(r)
    for mode, (label, tms) in torch_modes.items():
        out.append({"framework": label, **base, "ms_per_step": tms, "examples_per_s": batch * 1e3 / tms})
    return out


def fmt(r):
    ratios = "".join(f", {v:.2f}x PyTorch {k[10:]}" for k, v in r.items() if k.startswith("x_pytorch_"))
    return (f"batch {r['batch']:>5}  {r['framework']:<44} {r['ms_per_step']:8.3f} ms  "
            f"{r['examples_per_s']:>10,.0f} examples/s{ratios}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--rounds", type=int, default=2, help="timed epochs (cuvae) and timed runs (PyTorch), best kept")
    ap.add_argument("--steps", type=int, default=50, help="PyTorch: steps per timed run (default 50)")
    ap.add_argument("--tf32", action="store_true", help="TF32 GEMMs (and cuDNN convolutions) in both frameworks")
    ap.add_argument("--no-graph", action="store_true", help="time cuvae without the CUDA graph as well")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    args = ap.parse_args(argv)
    from bench import load_x, torch_cuda_probe

    from cuvae.backends.backend import get_backend

    device = get_backend("gpu").device_name  # no GPU: a one-line error naming the fix, before importing CuPy
    import cupy

    x, source = load_x(args.data_dir, args.train_size)
    if max(args.batches) > len(x):
        print(f"error: batch {max(args.batches)} is larger than the {len(x)} training images", file=sys.stderr)
        return 2
    arch = conv_arch()
    x_dev = cupy.asarray(x)
    tr, tdev = torch_cuda_probe()
    if tr is None:
        print(f"PyTorch with CUDA is not available ({tdev}): cuvae figures only", file=sys.stderr)
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: print(fmt(r), flush=True))
    if not args.json:
        print(f"data: {source}, {len(x)} images; {arch.describe()}; fp32{' + TF32' if args.tf32 else ''}", flush=True)
    for batch in args.batches:
        torch_modes = {}
        if tr is not None:
            for mode, label in (("eager", "pytorch conv eager, fused Adam"), ("graph", "pytorch conv CUDA graph, fused Adam")):
                try:
                    ms = min(time_torch_conv(x, arch, batch, mode, tf32=args.tf32, steps=args.steps)
                             for _ in range(args.rounds))
                    torch_modes[mode] = (f"{label} ({tdev})", ms)
                except Exception as err:  # noqa: BLE001 - report and go on with the other mode
                    print(f"pytorch conv {mode} at batch {batch} failed: {type(err).__name__}: {err}", file=sys.stderr)
        cuvae = []
        for graph in ([True, False] if args.no_graph else [True]):
            ms, kind = time_cuvae_conv(x_dev, arch, batch, graph, args.tf32, args.rounds)
            cuvae.append((kind, ms))
        for r in rows_for_batch(cuvae, torch_modes, batch, arch, device, args.tf32):
            emit(r)
    return 0


if __name__ == "__main__":
    from cuvae.errors import CuvaeError

    try:
        sys.exit(main())
    except CuvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
