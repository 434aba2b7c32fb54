"""Conv layer throughput, cuvae (NumPy) vs PyTorch, for the conv VAE's layer shapes (CPU).

For each layer of the 3x32x32 model (channels 32-64-128, k4 s2 p1) times forward + backward
(input gradient included) on a batch, in the same process, and prints examples/s and the ratio
cuvae / torch. Both use the same number of threads (--threads, default 2).

    python scripts/bench_conv.py --batch 100 --repeat 5
"""
import argparse
import json
import os
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    from cuvae.nn.conv import conv2d, conv2d_backward, conv_transpose2d, conv_transpose2d_backward

    torch.set_num_threads(a.threads)
    B = a.batch
    layers = [("conv", 3, 32, 32), ("conv", 32, 64, 16), ("conv", 64, 128, 8),
              ("tconv", 128, 64, 4), ("tconv", 64, 32, 8), ("tconv", 32, 3, 16)]
    rng = np.random.default_rng(0)

    def best(f):
        f()
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            f()
            times.append(time.perf_counter() - t)
        return min(times)

    rows, tot_c, tot_t = [], 0.0, 0.0
    for kind, cin, cout, hw in layers:
        x = rng.standard_normal((B, cin, hw, hw)).astype(np.float32)
        if kind == "conv":
            W = rng.standard_normal((cout, cin, 4, 4)).astype(np.float32) * 0.05
            fwd, bwd, tmod = conv2d, conv2d_backward, torch.nn.Conv2d(cin, cout, 4, 2, 1)
        else:
            W = rng.standard_normal((cin, cout, 4, 4)).astype(np.float32) * 0.05
            fwd, bwd, tmod = conv_transpose2d, conv_transpose2d_backward, torch.nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        b = np.zeros(cout, np.float32)
        dW, db, dx = np.empty_like(W), np.empty_like(b), np.empty_like(x)

        def ours():
            out, cache = fwd(np, x, W, b, 2, 1)
            bwd(np, out, cache, W, dW, db, dx)

        tx = torch.from_numpy(x).requires_grad_(True)

        def theirs():
            out = tmod(tx)
            out.backward(out.detach())

        tc, tt = best(ours), best(theirs)
        tot_c, tot_t = tot_c + tc, tot_t + tt
        rows.append({"layer": f"{kind} {cin}->{cout} @ {hw}x{hw}", "cuvae_ex_s": B / tc, "torch_ex_s": B / tt,
                     "ratio": tt / tc})
    for r in rows:
        print(f"{r['layer']:28s} cuvae {r['cuvae_ex_s']:9.0f} ex/s   torch {r['torch_ex_s']:9.0f} ex/s   "
              f"ratio {r['ratio']:.2f}")
    print(f"{'all six layers':28s} cuvae {B / tot_c:9.0f} ex/s   torch {B / tot_t:9.0f} ex/s   ratio {tot_t / tot_c:.2f}")
    print(json.dumps({"batch": B, "threads": a.threads, "cuvae_ex_s": B / tot_c, "torch_ex_s": B / tot_t,
                      "ratio": tot_t / tot_c, "layers": rows}))


if __name__ == "__main__":
    main()
