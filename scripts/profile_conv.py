"""Where a conv layer's time goes: the NumPy reference ops (cuvae.nn.conv) and the fused NHWC ops
(cuvae.backends.cpu_conv), stage by stage, for the conv VAE's six layer shapes (batch 100, CPU).

Each stage is timed alone (best of --repeat), so the stages add up to a little less than a whole
layer (no cache effects between them). GEMM stages are the matrix products; everything else is
layout work (padding, im2col, col2im, transposes, bias, column sums, weight repacking).

    python scripts/profile_conv.py --repeat 7 --threads 2
"""
import argparse
import os
import time


def best(f, repeat):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def reference_stages(np, C, kind, x, W, k, s, p):
    """Stages of cuvae.nn.conv's conv2d / conv_transpose2d forward + backward (NCHW)."""
    B, cin, hw, _ = x.shape
    st = {}
    if kind == "conv":
        cout, Ho = W.shape[0], (hw + 2 * p - k) // s + 1
        xp = C.pad(np, x, p)
        st["pad"] = lambda: C.pad(np, x, p)
        cols = C.im2col(np, xp, k, s, Ho, Ho)
        st["im2col"] = lambda: C.im2col(np, xp, k, s, Ho, Ho)
        Wm = W.reshape(cout, -1)
        rws = cols @ Wm.T
        st["GEMM fwd"] = lambda: cols @ Wm.T
        out = np.empty((B, cout, Ho, Ho), np.float32)
        st["rows->NCHW + bias"] = lambda: (C._nchw_from_rows(rws, B, Ho, Ho, out), out.__iadd__(1))
        dr = C._rows_from_nchw(np, out)
        st["NCHW->rows"] = lambda: C._rows_from_nchw(np, out)
        st["GEMM dW"] = lambda: dr.T @ cols
        st["db"] = lambda: out.sum(axis=(0, 2, 3))
        dc = dr @ Wm
        st["GEMM dx"] = lambda: dr @ Wm
        st["col2im"] = lambda: C.col2im(np, dc, (B, cin, hw + 2 * p, hw + 2 * p), k, s, Ho, Ho)
    else:
        cout, Ho = W.shape[1], (hw - 1) * s - 2 * p + k
        xr = C._rows_from_nchw(np, x)
        st["NCHW->rows"] = lambda: C._rows_from_nchw(np, x)
        Wm = W.reshape(cin, -1)
        cols = xr @ Wm
        st["GEMM fwd"] = lambda: xr @ Wm
        st["col2im"] = lambda: C.col2im(np, cols, (B, cout, Ho + 2 * p, Ho + 2 * p), k, s, hw, hw)
        full = C.col2im(np, cols, (B, cout, Ho + 2 * p, Ho + 2 * p), k, s, hw, hw)
        out = np.empty((B, cout, Ho, Ho), np.float32)
        st["crop + bias"] = lambda: (out.__setitem__(Ellipsis, full[:, :, p:p + Ho, p:p + Ho]), out.__iadd__(1))
        st["pad"] = lambda: C.pad(np, out, p)
        dfull = C.pad(np, out, p)
        dc = C.im2col(np, dfull, k, s, hw, hw)
        st["im2col"] = lambda: C.im2col(np, dfull, k, s, hw, hw)
        st["GEMM dW"] = lambda: xr.T @ dc
        st["db"] = lambda: out.sum(axis=(0, 2, 3))
        dr = dc @ Wm.T
        st["GEMM dx"] = lambda: dc @ Wm.T
        xx = x.copy()
        st["rows->NCHW"] = lambda: C._nchw_from_rows(dr, B, hw, hw, xx)
    return st


def fused_stages(np, F, kind, x, W, k, s, p):
    """Stages of cuvae.backends.cpu_conv's layers (NHWC rows)."""
    B, cin, hw, _ = x.shape
    x4 = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    st = {}
    if kind == "conv":
        cout, Ho = W.shape[0], (hw + 2 * p - k) // s + 1
        buf = F.ConvBuffers(B * Ho * Ho, cin * k * k, cout, cin * k * k, cout, np.float32)
        b = np.zeros(cout, np.float32)
        out = np.empty((B * Ho * Ho, cout), np.float32)
        dx = np.empty_like(x4)
        st["pack W"] = lambda: F.pack_weight(W, buf.Wm)
        st["im2col"] = lambda: F.im2col(x4, k, s, p, Ho, Ho, buf.cols)
        st["GEMM fwd"] = lambda: np.matmul(buf.cols, buf.Wm.T, out=out)
        st["bias"] = lambda: F.bias_act(out, b, False)
        st["db"] = lambda: F.mask_colsum(out, None, b, buf.partial)
        st["GEMM dW"] = lambda: np.matmul(out.T, buf.cols, out=buf.dWm)
        st["unpack dW"] = lambda: F.unpack_weight(buf.dWm, np.empty_like(W))
        dcols = np.empty_like(buf.cols)
        st["GEMM dx"] = lambda: np.matmul(out, buf.Wm, out=dcols)
        st["col2im"] = lambda: F.col2im(dcols, k, s, p, Ho, Ho, dx)
    else:
        cout, Ho = W.shape[1], (hw - 1) * s - 2 * p + k
        buf = F.ConvBuffers(B * hw * hw, cout * k * k, cin, cout * k * k, cout, np.float32)
        b = np.zeros(cout, np.float32)
        xr = x4.reshape(-1, cin)
        out = np.empty((B, Ho, Ho, cout), np.float32)
        dx = np.empty_like(xr)
        st["pack W"] = lambda: F.pack_weight(W, buf.Wm)
        st["GEMM fwd"] = lambda: np.matmul(xr, buf.Wm, out=buf.cols)
        st["col2im + bias"] = lambda: F.col2im(buf.cols, k, s, p, hw, hw, out, bias=b)
        st["db"] = lambda: F.mask_colsum(out.reshape(-1, cout), None, b, buf.partial)
        st["im2col"] = lambda: F.im2col(out, k, s, p, hw, hw, buf.cols)
        st["GEMM dW"] = lambda: np.matmul(xr.T, buf.cols, out=buf.dWm)
        st["unpack dW"] = lambda: F.unpack_weight(buf.dWm, np.empty_like(W))
        st["GEMM dx"] = lambda: np.matmul(buf.cols, buf.Wm.T, out=dx)
    return st


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", choices=["reference", "fused"])
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    import numpy as np

    from cuvae.backends import cpu_conv as F
    from cuvae.backends.backend import set_cpu_threads
    from cuvae.nn import conv as C

    set_cpu_threads(a.threads)
    rng = np.random.default_rng(0)
    layers = [("conv", 3, 32, 32), ("conv", 32, 64, 16), ("conv", 64, 128, 8),
              ("tconv", 128, 64, 4), ("tconv", 64, 32, 8), ("tconv", 32, 3, 16)]
    for name, stages in [("reference", reference_stages), ("fused", fused_stages)]:
        if a.only and a.only != name:
            continue
        print(f"-- {name} ops (ms per stage, batch {a.batch}, {a.threads} threads)")
        for kind, cin, cout, hw in layers:
            x = rng.standard_normal((a.batch, cin, hw, hw)).astype(np.float32)
            shape = (cout, cin, 4, 4) if kind == "conv" else (cin, cout, 4, 4)
            W = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            st = stages(np, C if name == "reference" else F, kind, x, W, 4, 2, 1)
            ms = {n: best(f, a.repeat) for n, f in st.items()}
            tot = sum(ms.values())
            gemm = sum(v for n, v in ms.items() if n.startswith("GEMM"))
            print(f"{kind} {cin}->{cout} @ {hw}x{hw}: {tot:.1f} ms, GEMM {gemm:.1f} ({100 * gemm / tot:.0f}%) | "
                  + ", ".join(f"{n} {v:.2f}" for n, v in ms.items()))


if __name__ == "__main__":
    main()
