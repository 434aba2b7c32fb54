"""Benchmark: cuvae's training step against PyTorch's, the same model trained the same way, in one run.

The chapter recipe (784-256-128-8, SSE + KL, Glorot init, Adam 1e-3) on real MNIST, preloaded for
both frameworks, at batch 100, 1000 and 10000. Per configuration it prints ms per step, seconds per
epoch (60,000 examples), examples per second, cuvae / PyTorch, the floor (the step's 20 GEMMs
alone, in cuvae's own BLAS) with cuvae's step as a multiple of it, and peak memory (CPU: peak RSS
of a separate process per framework, counted from after the data are loaded, so it includes the
preloaded float32 training set, 188 MB for MNIST; GPU: memory-pool peak / torch.cuda.max_memory_allocated).

    python scripts/bench.py --device cpu [--threads 2] [--json]
    python scripts/bench.py --device gpu [--tf32] [--models 1 4 16] [--json]
    python scripts/bench.py --device cpu --profile      # where the CPU step's time goes

Timings alternate between the frameworks in rounds and keep each one's best round, so a busy
machine penalises both alike. On the CPU each round of each framework runs in a fresh process (the
same data, preloaded): in one process NumPy's OpenBLAS threads and PyTorch's OpenMP threads keep
spinning after their calls and slow whichever framework runs next by up to 5x on 2 cores
(``--same-process`` shows it). TF32 is off unless --tf32 (stated on every line).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
EPOCH = 60_000


def load_x(data_dir, limit=None):
    from cuvae.data import load_dataset

    ds = load_dataset("mnist", data_dir=data_dir, progress=False, log=lambda m: print(m, file=sys.stderr))
    x = (ds.train_x if limit is None else ds.train_x[:limit]).astype(np.float32)
    x *= np.float32(1 / 255)
    return x, ds.source


# ---- cuvae on the CPU --------------------------------------------------------------------------------
class CpuStep:
    """The trainer's step (gather, eps, forward, backward, Adam) on the CPU backend, preloaded data."""

    def __init__(self, x, batch, ops=None, seed=0):
        from cuvae.backends.backend import get_backend
        from cuvae.engine.config import TrainConfig
        from cuvae.nn.optim import Adam

        self.ops = ops or get_backend("cpu").ops
        self.cfg = TrainConfig.from_recipe("chapter", batch_size=batch)
        self.model = self.cfg.build_model(self.ops)
        self.p = self.model.initial_params("glorot", seed)
        self.g = np.zeros_like(self.p)
        self.P, self.G = self.model.layout.views(self.p), self.model.layout.views(self.g)
        self.adam = Adam(self.ops, self.p.size, np.float32, lr=1e-3)
        self.X, self.B = x, batch
        self.rng = np.random.default_rng(seed)
        self.perm = self.rng.permutation(len(x))
        self.x = np.empty((batch, x.shape[1]), np.float32)
        self.eps = np.empty((batch, self.cfg.latent), np.float32)
        self.sums = np.zeros(3)
        self.s = 0

    def __call__(self):
        if self.s + self.B > len(self.X):
            self.perm, self.s = self.rng.permutation(len(self.X)), 0
        np.take(self.X, self.perm[self.s:self.s + self.B], axis=0, out=self.x)
        self.s += self.B
        self.rng.standard_normal(out=self.eps, dtype=np.float32)
        loss, recon, kl = self.model.loss_and_grad(self.P, self.G, self.x, self.eps, 1.0)
        self.adam.step(self.p, self.g)
        self.sums += (float(loss), float(recon), float(kl))


class CpuGemms:
    """The step's 20 matrix products alone (forward, dW, and dX except for the input layer), cuvae's BLAS."""

    def __init__(self, batch, arch=None):
        from cuvae.nn.model import Arch

        arch = arch or Arch(hidden=(256, 128), latent=8, likelihood="gaussian")
        rng = np.random.default_rng(0)
        self.bufs = []
        for i, (name, fi, fo) in enumerate(arch.linears):
            f = lambda *s: rng.random(s, dtype=np.float32)  # noqa: E731
            self.bufs.append((f(batch, fi), f(batch, fo), f(fi, fo), np.empty((batch, fo), np.float32),
                              np.empty((fi, fo), np.float32), None if i == 0 else np.empty((batch, fi), np.float32)))

    def __call__(self):
        for x, dy, W, y, dW, dx in self.bufs:
            np.matmul(x, W, out=y)
            np.matmul(x.T, dy, out=dW)
            if dx is not None:
                np.matmul(dy, W.T, out=dx)


def best_ms(fn, steps, rounds, warmup=3, sync=None):
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if sync:
            sync()
        best = min(best, (time.perf_counter() - t0) * 1e3 / steps)
    return best


def steps_for(batch, device):
    if device == "gpu":
        return {100: 2000, 1000: 1000, 10000: 200}.get(batch, 200)
    return {100: 150, 1000: 25, 10000: 4}.get(batch, max(2, 15000 // batch))


def profile_cpu(x, batch, steps):
    """Time per ops method over ``steps`` steps (linear/linear_backward hold the GEMMs)."""
    from cuvae.backends.backend import get_backend

    base = get_backend("cpu").ops
    totals = {}

    class Timed(type(base)):
        pass

    for name in [n for n in dir(base) if not n.startswith("_") and callable(getattr(base, n))]:
        def wrap(fn, name=name):
            def timed(*a, **k):
                t0 = time.perf_counter()
                r = fn(*a, **k)
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
                return r
            return timed
        setattr(Timed, name, staticmethod(wrap(getattr(base, name))))
    step = CpuStep(x, batch, ops=Timed())
    for _ in range(3):
        step()
    totals.clear()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    total = time.perf_counter() - t0
    gemm = CpuGemms(batch)
    floor = best_ms(gemm, steps, 1)
    rows = sorted(totals.items(), key=lambda kv: -kv[1])
    out = {"batch": batch, "ms_per_step": total * 1e3 / steps, "gemm_floor_ms": floor,
           "matmul_share": floor / (total * 1e3 / steps),
           "methods_ms": {k: v * 1e3 / steps for k, v in rows},
           "outside_ops_ms": (total - sum(totals.values())) * 1e3 / steps}
    return out


# ---- peak memory: one framework per process -------------------------------------------------------
def worker(args):
    """Child process: time one framework's step (best of --rounds rounds), with its peak RSS, as JSON."""
    x, _ = load_x(args.data_dir, args.train_size)
    _reset_peak_rss()  # from here on: the preloaded data plus what the framework adds
    steps = steps_for(args.batch, "cpu") if args.steps is None else args.steps
    if args.worker == "torch":
        import torch_reference as tr

        ms = min(tr.time_steps(args.batch, steps=steps, warmup=3, data=x)["ms_per_step"] for _ in range(args.rounds))
    else:
        fn = CpuStep(x, args.batch) if args.worker == "cuvae" else CpuGemms(args.batch)
        ms = best_ms(fn, steps, args.rounds)
    print(json.dumps({"ms": ms, "peak_rss": _peak_rss()}))
    return 0


def in_subprocess(framework, batch, args, rounds):
    """Run ``worker`` in a fresh process: thread pools (OpenBLAS, numba, PyTorch's OpenMP) never share one."""
    cmd = [sys.executable, __file__, "--worker", framework, "--batch", str(batch), "--rounds", str(rounds)]
    for flag, value in (("--data-dir", args.data_dir), ("--threads", args.threads), ("--steps", args.steps),
                        ("--train-size", args.train_size)):
        if value:
            cmd += [flag, str(value)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{framework} worker failed: {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak resident set (VmHWM) to the current one
    except OSError:
        pass


def _peak_rss():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- the runs ------------------------------------------------------------------------------------------
def fmt_line(r):
    ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "-"
    floor = f"{r['x_floor']:.2f}x floor" if r.get("x_floor") else ""
    mem = f"peak {r['peak_mb']:.0f} MB" if r.get("peak_mb") else ""
    return (f"{r['framework']:<28} batch {r['batch']:>5}  {r['ms_per_step']:8.3f} ms/step  "
            f"{r['s_per_epoch']:7.3f} s/epoch  {r['examples_per_s']:10.0f} ex/s  cuvae/this {ratio:>6}  "
            f"{floor:<14} {mem:<13} [{r['device']}, TF32 {'on' if r['tf32'] else 'off'}]")


def record(framework, batch, ms, device, tf32, **extra):
    return dict(framework=framework, batch=batch, ms_per_step=ms, s_per_epoch=ms * EPOCH / batch / 1e3,
                examples_per_s=batch * 1e3 / ms, device=device, tf32=tf32, **extra)


def run_cpu(args, x, emit):
    from cuvae.backends.backend import get_backend

    backend = get_backend("cpu", threads=args.threads)
    device = backend.device_name
    try:
        import torch

        import torch_reference as tr
        if args.threads:
            torch.set_num_threads(args.threads)
    except ImportError:
        tr = None
        print("PyTorch is not installed (pip install torch==2.13.0): cuvae figures only", file=sys.stderr)
    rows = []
    for batch in args.batches:
        if args.same_process:  # one process, alternating rounds (thread pools then contend: see the doc)
            steps = steps_for(batch, "cpu") if args.steps is None else args.steps
            step, gemm = CpuStep(x, batch), CpuGemms(batch)
            res = {"cuvae": [], "gemm": [], "torch": []}
            for _ in range(args.rounds):
                res["cuvae"].append({"ms": best_ms(step, steps, 1)})
                res["gemm"].append({"ms": best_ms(gemm, steps, 1)})
                if tr:
                    res["torch"].append({"ms": tr.time_steps(batch, steps=steps, warmup=3, data=x)["ms_per_step"]})
        else:  # a fresh process per framework and round, alternating; each keeps its best round
            res = {"cuvae": [], "gemm": [], "torch": []}
            for _ in range(args.rounds):
                for fw in ("cuvae", "torch", "gemm") if tr else ("cuvae", "gemm"):
                    res[fw].append(in_subprocess(fw, batch, args, 1))
        best = {fw: min(r["ms"] for r in rs) for fw, rs in res.items() if rs}
        peak = {fw: max(r.get("peak_rss") or 0 for r in rs) / 2**20 or None for fw, rs in res.items() if rs}
        cu_ms, fl_ms = best["cuvae"], best["gemm"]
        r_cu = record("cuvae (NumPy + numba)", batch, cu_ms, device, False, gemm_floor_ms=fl_ms, x_floor=cu_ms / fl_ms,
                      peak_mb=peak["cuvae"])
        out = [r_cu]
        if tr:
            pt_ms = best["torch"]
            r_cu["ratio"] = cu_ms / pt_ms
            out.append(record("pytorch eager, fused Adam", batch, pt_ms, f"torch {torch.__version__}, "
                              f"{torch.get_num_threads()} threads", False, ratio=cu_ms / pt_ms, peak_mb=peak["torch"]))
        out.append(record("GEMMs alone (cuvae's BLAS)", batch, fl_ms, device, False))
        for r in out:
            emit(r)
        rows += out
    return rows


class GpuGemms:
    """The step's 20 GEMMs alone through cuvae's cuBLAS (ctypes), captured in one CUDA graph."""

    def __init__(self, batch, tf32, k=1):
        import cupy

        from cuvae.backends.cuda_ops import CublasGemm
        from cuvae.nn.model import Arch

        arch = Arch(hidden=(256, 128), latent=8, likelihood="gaussian")
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.gemm = CublasGemm(self.stream, tf32=tf32)
        r = lambda *s: cupy.random.random_sample(s, dtype=cupy.float32)  # noqa: E731
        self.bufs = [(r(k, batch, fi), r(k, batch, fo), r(k, fi, fo), r(k, batch, fo), r(k, fi, fo),
                      None if i == 0 else r(k, batch, fi)) for i, (_, fi, fo) in enumerate(arch.linears)]
        cupy.cuda.Device().synchronize()
        with self.stream:
            self.stream.begin_capture()
            self._all()
            self.graph = self.stream.end_capture()

    def _all(self):
        for x, dy, W, y, dW, dx in self.bufs:
            self.gemm.mm(x, W, y)
            self.gemm.mm(x, dy, dW, ta=True)
            if dx is not None:
                self.gemm.mm(dy, W, dx, tb=True)

    def __call__(self):
        self.graph.launch(self.stream)

    def sync(self):
        self.stream.synchronize()


MIN_STEPS = 3  # timed epochs replay at least 2 steps after the one that captures the graph


def epoch_plan(n: int, batch: int, min_steps: int = MIN_STEPS) -> tuple[int, int]:
    """(steps per epoch, times the data are repeated) so an epoch has at least ``min_steps`` full batches.

    Batch 10000 on the bundled 10,000-image subset is one step an epoch: that step captures the graph,
    which leaves no replay to time. A step's cost does not depend on which images it sees, so the data
    are repeated instead (the row says so).
    """
    if batch < 1 or n < batch:
        raise ValueError(f"batch {batch} needs 1 to {n} images")
    reps = max(1, -(-min_steps * batch // n))
    return n * reps // batch, reps


def time_cuvae_gpu(x_dev, batch, k, graph, tf32, epochs=3, engine="cuda"):
    """Best epoch of ``epochs`` (after one warm-up epoch): (ms per step, s per epoch incl. shuffle, pool bytes,
    kind, notes, data repeats). ``engine="twin"`` runs it on the NumPy twins (for the CPU tests)."""
    from cuvae.nn.model import Arch
    from cuvae.backends.multi import MultiModel

    if engine == "cuda":
        import cupy

        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        base = pool.used_bytes()
        xp, device_sync = cupy, cupy.cuda.Device().synchronize
    else:
        pool, xp, device_sync = None, np, lambda: None
    arch = Arch(hidden=(256, 128), latent=8, likelihood="gaussian")
    notes = []
    steps, reps = epoch_plan(x_dev.shape[0], batch)
    data = x_dev if reps == 1 else xp.concatenate([x_dev] * reps)
    # full batches only: every step replays the same graph
    multi = MultiModel(arch, list(range(k)), data[: steps * batch], batch=batch, graph=graph, tf32=tf32,
                       log=notes.append, engine=engine)
    best_step, best_epoch = float("inf"), float("inf")
    for epoch in range(1, epochs + 2):
        device_sync()
        t0 = time.perf_counter()
        multi.step.start_epoch(epoch, np.ones(steps, np.float32), multi.adam_steps)
        multi.step.step(batch)  # the first step may capture the epoch's graph: not timed as a step
        multi.step.synchronize()
        t1 = time.perf_counter()
        for _ in range(steps - 1):
            multi.step.step(batch)
        sums = multi.step.read_sums()
        t2 = time.perf_counter()
        multi.adam_steps += steps
        if epoch > 1:
            best_step = min(best_step, (t2 - t1) * 1e3 / (steps - 1))
            best_epoch = min(best_epoch, t2 - t0)
    if not np.isfinite(sums).all():
        raise RuntimeError(f"cuvae GPU step diverged at batch {batch}, k {k}")
    used = pool.total_bytes() - base if pool is not None else 0
    kind = multi.step.gemm_kind + (", graph" if multi.step.use_graph else ", no graph")
    multi.close()
    return best_step, best_epoch * 60_000 / (steps * batch), used, kind, notes, reps


def torch_cuda_probe():
    """(torch_reference module, "torch X, <GPU>") when PyTorch can use CUDA, else (None, why not).

    A CPU build of torch raises AssertionError from get_device_name(): ask is_available() first.
    """
    try:
        import torch

        import torch_reference as tr
    except ImportError as err:
        return None, f"PyTorch is not installed ({err})"
    try:
        if not torch.cuda.is_available():
            return None, f"torch {torch.__version__} has no usable CUDA (a CPU build, or no device)"
        return tr, f"torch {torch.__version__}, {torch.cuda.get_device_name()}"
    except Exception as err:  # noqa: BLE001 - a broken CUDA setup in torch: report it, time cuvae anyway
        return None, f"torch {torch.__version__}: {type(err).__name__}: {err}"


def run_gpu(args, x, emit):
    from cuvae.backends.backend import get_backend

    device = get_backend("gpu").device_name  # no GPU: a one-line error naming the fix, before importing CuPy
    import cupy

    x_dev = cupy.asarray(x)
    tr, tdev = torch_cuda_probe()
    if tr is None:
        print(f"PyTorch with CUDA is not available ({tdev}): cuvae figures only", file=sys.stderr)
    rows = []
    for batch in args.batches:
        out = []
        g = GpuGemms(batch, args.tf32)
        floor = best_ms(g, steps_for(batch, "gpu"), args.rounds, sync=g.sync)
        pt = {}
        if tr:
            for mode, label in (("eager", "pytorch eager, fused Adam"), ("graph", "pytorch CUDA graph, fused Adam"),
                                ("gemm_only", "pytorch GEMMs alone (graph)")):
                try:
                    r = min((tr.time_steps(batch, steps=steps_for(batch, "gpu") // (4 if mode == "eager" else 1),
                                           mode=mode, device="cuda", tf32=args.tf32, data=x)
                             for _ in range(args.rounds)), key=lambda r: r["ms_per_step"])
                    pt[mode] = (label, r)
                except Exception as err:  # noqa: BLE001 - report and go on with the other modes
                    print(f"pytorch {mode} at batch {batch} failed: {err}", file=sys.stderr)
        best_pt = min((r["ms_per_step"] for m, (_, r) in pt.items() if m != "gemm_only"), default=None)
        for k in args.models:
            for graph in ([True, False] if args.no_graph and k == 1 else [True]):
                ms, epoch_s, used, kind, notes, reps = time_cuvae_gpu(x_dev, batch, k, graph, args.tf32)
                for note in notes:
                    print(f"note: {note}", file=sys.stderr)
                per_model = ms / k
                r = record(f"cuvae k={k} ({kind})", batch, per_model, device, args.tf32,
                           ms_per_step_all_models=ms, models=k, epoch_s_measured=epoch_s / k,
                           gemm_floor_ms=floor, x_floor=ms / (floor * k), peak_mb=used / 2**20, data_repeats=reps)
                if best_pt:
                    r["ratio"] = per_model / best_pt
                out.append(r)
        for mode, (label, r) in pt.items():
            peak = r.get("peak_mem_bytes")
            out.append(record(label, batch, r["ms_per_step"], tdev, args.tf32,
                              peak_mb=peak / 2**20 if peak else None))
        out.append(record("GEMMs alone (cuvae cuBLAS, graph)", batch, floor, device, args.tf32))
        for r in out:
            emit(r)
        rows += out
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--steps", type=int, default=None, help="steps per timed round (default: by batch size)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per framework, alternating (default 3)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for both frameworks (default: all)")
    ap.add_argument("--tf32", action="store_true", help="GPU: allow TF32 GEMMs in both frameworks (default off)")
    ap.add_argument("--models", type=int, nargs="+", default=[1, 4, 16], help="GPU: k models trained at once")
    ap.add_argument("--no-graph", action="store_true", help="GPU: time cuvae without the CUDA graph as well")
    ap.add_argument("--same-process", action="store_true",
                    help="CPU: time both frameworks in this process (their thread pools then contend) instead of "
                         "a fresh process per framework and round; no peak RSS then")
    ap.add_argument("--profile", action="store_true", help="CPU: time each op of cuvae's step; matmul share")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images (smoke runs)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    ap.add_argument("--worker", choices=["cuvae", "torch", "gemm"], help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.threads:
            from cuvae.backends.backend import set_cpu_threads

            set_cpu_threads(args.threads)
            try:
                import torch
                torch.set_num_threads(args.threads)
            except ImportError:
                pass
        return worker(args)
    x, source = load_x(args.data_dir, args.train_size)
    if max(args.batches) > len(x):
        print(f"error: batch {max(args.batches)} is larger than the {len(x)} training images", file=sys.stderr)
        return 2
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else (lambda r: print(fmt_line(r), flush=True))
    if not args.json:
        print(f"data: {source}, {len(x)} images, preloaded; chapter recipe 784-256-128-8, SSE + KL, Adam; "
              f"epoch = {EPOCH} examples", flush=True)
    if args.profile:
        for batch in args.batches:
            r = profile_cpu(x, batch, steps_for(batch, "cpu") if args.steps is None else args.steps)
            print(json.dumps(r) if args.json else _fmt_profile(r), flush=True)
        return 0
    (run_gpu if args.device == "gpu" else run_cpu)(args, x, emit)
    return 0


def _fmt_profile(r):
    lines = [f"batch {r['batch']}: step {r['ms_per_step']:.3f} ms, GEMMs alone {r['gemm_floor_ms']:.3f} ms "
             f"-> matmul share {100 * r['matmul_share']:.0f}%"]
    lines += [f"  {k:<26} {v:7.3f} ms" for k, v in r["methods_ms"].items()]
    lines.append(f"  {'(outside ops: gather, eps, loop)':<26} {r['outside_ops_ms']:7.3f} ms")
    return "\n".join(lines)


if __name__ == "__main__":
    from cuvae.errors import CuvaeError

    try:
        sys.exit(main())
    except CuvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
