"""The GPU checks of ``cuvae-doctor``: compile the kernels, each kernel against its NumPy twin on the device,
cuBLAS through ctypes, CupyOps against NumpyOps, a captured training step against the NumPy step on the
same weights and eps, graph against no graph, the time of a step (and ``--gradcheck`` on CupyOps); the same
for the conv model's step (conv.cu's kernels, ConvDeviceStep against ConvVAE, its time).

``engine="twin"`` runs the same checks with the twins in place of the kernels and NumPy in place of CuPy:
what the CPU tests use to check the harness itself (argument lists, comparisons) where there is no GPU.
Inputs and tolerances are those of ``tests/test_gpu.py``.
"""

from __future__ import annotations

import time

import numpy as np

from cuvae.backends import selftest
from cuvae.backends.gpu_step import DeviceStep
from cuvae.backends.kernels import CONV_KERNELS, conv_twins, twins
from cuvae.backends.selftest import CHAPTER, Check, CheckFailed, time_captured_step
from cuvae.backends.selftest_gpu_conv import conv_kernel_cases, conv_step_vs_numpy, time_conv_step
from cuvae.nn.model import VAE
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam

FIX = "report it with this output: a CUDA kernel disagrees with its NumPy twin"


class Engine:
    """Where the checks run: the device (CuPy, step.cu, cuBLAS) or, for tests, the NumPy twins."""

    def __init__(self, engine: str = "cuda"):
        self.name = engine
        if engine == "cuda":
            import cupy

            from cuvae.backends.cuda_conv_ops import ConvCudaKernels
            from cuvae.backends.cuda_ops import CupyOps

            self.xp, self.ops = cupy, CupyOps()
            self.to_dev, self.to_host = cupy.asarray, cupy.asnumpy
            self.sync = cupy.cuda.Device().synchronize
            self._kernels = ConvCudaKernels  # step.cu's kernels and conv.cu's
        else:
            from cuvae.backends.gpu_conv_step import ConvTwinKernels

            self.xp, self.ops = np, NumpyOps()
            self.to_dev = self.to_host = np.asarray
            self.sync = lambda: None
            self._kernels = ConvTwinKernels
        self._kern = None

    @property
    def kern(self):
        if self._kern is None:
            self._kern = self._kernels()
        return self._kern


# ---- each kernel against its twin --------------------------------------------------------------------------
def kernel_cases():
    """(label, kernel, arguments, [(output argument, rtol, atol)]) for every kernel of step.cu."""
    rng = np.random.default_rng(0)
    f32 = lambda *s, scale=1.0: (rng.normal(size=s) * scale).astype(np.float32)  # noqa: E731
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    head, eps, dz = f32(2, 30, 16), f32(2, 30, 8), f32(2, 30, 8)
    data = rng.uniform(size=(300, 37)).astype(np.float32)
    perm = rng.permutation(300).astype(np.int64)
    n = 300_001
    cases = [
        ("normal_philox", "normal_philox", [np.zeros(1003, np.float32), 1003, i64(9), np.array([3, 4], np.uint32), 1], [(0, 1e-5, 1e-5)]),
        ("philox_keys", "philox_keys", [np.zeros(5000, np.uint32), 5000, 1, 2, 2], [(0, 0, 0)]),
    ]
    for b in (False, True):
        cases.append((f"gather_rows (binarize {'on' if b else 'off'})", "gather_rows",
                      [data, perm, i64(2, 40, 0, 0), np.zeros((64, 37), np.float32), 64, 37, b, np.array([5, 6], np.uint32)], [(3, 0, 0)]))
    for relu in (0, 1):
        cases.append((f"bias_act (relu {relu})", "bias_act", [f32(3, 70, 33), f32(200), 50, 3, 70, 33, relu],
                      [(0, 1e-6, 0)]))
    for with_relu in (False, True):  # 10001 rows: split over blocks, then col_reduce
        cases.append((f"relu_back_bias_grad ({'with' if with_relu else 'no'} ReLU, rows split)", "relu_back_bias_grad",
                      [f32(2, 10001, 45), f32(2, 10001, 45) if with_relu else None, np.zeros(200, np.float32), 100,
                       10001, 45, 2], [(0, 0, 0), (2, 1e-4, 2e-3)]))
    cases.append(("col_reduce", "col_reduce", [f32(3 * 5 * 40), np.zeros(300, np.float32), 100, 3, 5, 40],
                  [(1, 1e-5, 1e-6)]))
    for lik in (0, 1):
        logits = f32(2, 50, 784, scale=5.0)
        cases.append((f"recon_fwd_grad ({'bernoulli' if lik == 0 else 'gaussian'})", "recon_fwd_grad",
                      [logits, rng.uniform(size=(50, 784)).astype(np.float32), np.zeros_like(logits),
                       np.zeros(100, np.float32), 50, 784, lik], [(2, 1e-4, 1e-7), (3, 1e-5, 0)]))
    # reparam: mean + sigma*eps cancels to ~0 in places, where one ulp of expf or an FMA exceeds any rtol
    cases.append(("reparam", "reparam", [head, eps, np.zeros_like(eps), 60, 8], [(2, 1e-5, 1e-6)]))
    betas = np.array([0.3, 0.7], np.float32)
    cases.append(("latent_backward", "latent_backward", [head, eps, dz, np.zeros_like(head), np.zeros(60, np.float32),
                                                         betas, i64(1, 0, 0, 0), 60, 30, 8],
                  [(3, 1e-5, 1e-7), (4, 1e-5, 0)]))
    cases.append(("finish_step", "finish_step", [rng.uniform(size=60).astype(np.float32),
                                                 rng.uniform(size=60).astype(np.float32), betas, i64(1, 0, 0, 0),
                                                 np.ones(6), np.zeros(6, np.float32), 30, 2],
                  [(4, 1e-9, 0), (5, 1e-6, 0)]))
    cases.append(("advance", "advance", [i64(3, 300, 7, 0), i64(3), 100], [(0, 0, 0), (1, 0, 0)]))
    cases.append(("adam_flat", "adam_flat", [f32(n), f32(n), f32(n, scale=0.1),
                                             (rng.uniform(size=n) * 0.01).astype(np.float32), n, i64(0, 0, 41, 0),
                                             1e-3, 0.9, 0.999, 1e-8], [(0, 1e-5, 1e-7), (2, 1e-5, 1e-7),
                                                                       (3, 1e-5, 1e-7)]))
    return cases


def kernel_vs_twin(env: Engine, kernel: str, args, outputs) -> tuple[str, dict]:
    dev = [env.to_dev(a.copy()) if isinstance(a, np.ndarray) else a for a in args]
    host = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    getattr(env.kern, kernel)(*dev)
    env.sync()
    getattr(conv_twins if kernel in CONV_KERNELS else twins, kernel)(*host)
    worst = 0.0
    for i, rtol, atol in outputs:
        got, want = np.asarray(env.to_host(dev[i])), host[i]
        if not np.allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol, equal_nan=False):
            err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            raise CheckFailed(f"argument {i} differs from the twin's (max abs error {err:.3g}, rtol {rtol:g}, "
                              f"atol {atol:g})")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0)))
    return f"equals its twin (max abs difference {worst:.1e})", {"max_abs_diff": worst}


# ---- the whole step ------------------------------------------------------------------------------------------
def _device_run(env: Engine, data, steps, rows, betas, graph, k=1, lr=1e-3, p0=None):
    """Run DeviceStep for ``steps`` steps; host copies of (params, per-step losses, xs, epss, first grads)."""
    xp = env.xp
    p0 = VAE(CHAPTER, NumpyOps(), np.float32).initial_params("glorot", 0) if p0 is None else p0
    p = xp.asarray(np.tile(p0, k))
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = DeviceStep(CHAPTER, p, g, m, v, xp.asarray(data), k=k, seed=5, lr=lr, engine=env.name, graph=graph)
    try:
        st.start_epoch(1, betas, 0)
        losses, xs, epss, first = [], [], [], None
        for _ in range(steps):
            st.step(rows)
            st.synchronize()
            plan = st._plans[rows]
            losses.append(np.array(env.to_host(st.loss)).reshape(k, 3))
            xs.append(np.array(env.to_host(plan.bufs["x"])))
            epss.append(np.array(env.to_host(plan.bufs["eps"])))
            if first is None:
                first = np.array(env.to_host(g))
        used_graph = st.use_graph
    finally:
        st.close()
    return np.array(env.to_host(p)), np.array(losses), xs, epss, first, used_graph


def captured_step_vs_numpy(env: Engine, graph: bool = True) -> tuple[str, dict]:
    """One captured step (then two replays) on the device against VAE + NumpyOps Adam on the same weights,
    batch and eps (the ones the device drew; those are checked against the twins' draws first)."""
    rng = np.random.default_rng(1)
    data = rng.uniform(size=(256, CHAPTER.in_dim)).astype(np.float32)
    betas = np.array([0.5, 0.75, 1.0], np.float32)
    p0 = VAE(CHAPTER, NumpyOps(), np.float32).initial_params("glorot", 0)
    p, losses, xs, epss, first, used_graph = _device_run(env, data, 3, 64, betas, graph, p0=p0)
    if graph and env.name == "cuda" and not used_graph:
        raise CheckFailed("the step was not captured in a CUDA graph (see the line above on why); it ran uncaptured")
    tw = _device_run(Engine("twin"), data, 3, 64, betas, False, p0=p0)
    for a, b in zip(xs + epss, tw[2] + tw[3]):
        if not np.allclose(a, b, rtol=1e-5, atol=1e-5):
            raise CheckFailed("the device drew other batches or noise than the twins (Philox, shuffle or gather)")
    model = VAE(CHAPTER, NumpyOps(), np.float32)
    ref = p0.copy()
    grad = np.zeros_like(ref)
    P, G = model.layout.views(ref), model.layout.views(grad)
    adam = Adam(model.ops, ref.size, np.float32, lr=1e-3)
    ref_losses, ref_first = [], None
    for x, eps, beta in zip(xs, epss, betas):
        ref_losses.append([float(v) for v in model.loss_and_grad(P, G, x, eps[0], float(beta))])
        if ref_first is None:
            ref_first = grad.copy()
        adam.step(ref, grad)
    ref_losses = np.array(ref_losses)
    rel = float(np.max(np.abs(losses[:, 0] - ref_losses) / np.maximum(np.abs(ref_losses), 1e-6)))
    gerr = float(np.max(np.abs(first - ref_first)) / max(float(np.abs(ref_first).max()), 1e-30))
    perr = float(np.max(np.abs(p - ref)))
    if not np.allclose(losses[:, 0], ref_losses, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"losses differ from the NumPy step's (worst relative error {rel:.2g})")
    if gerr > 1e-3:
        raise CheckFailed(f"gradients differ from the NumPy step's ({gerr:.2g} of the largest gradient)")
    if perr > 1e-4:  # a tenth of the lr: Adam moves a gradient that rounds to the other sign by 2 lr
        raise CheckFailed(f"parameters after 3 steps differ from the NumPy step's (max abs error {perr:.2g})")
    return (f"{'captured' if used_graph else 'uncaptured'} step of {CHAPTER.describe()}, batch 64, 3 steps: losses "
            f"within {rel:.1e} relative, gradients {gerr:.1e}, parameters {perr:.1e}",
            {"loss_rel_err": rel, "grad_rel_err": gerr, "param_abs_err": perr, "graph": used_graph})


def graph_vs_no_graph(env: Engine, k: int = 1) -> tuple[str, dict]:
    data = np.random.default_rng(0).uniform(size=(2000, CHAPTER.in_dim)).astype(np.float32)
    betas = np.ones(20, np.float32)
    pg, lg, *_, used = _device_run(env, data, 20, 100, betas, True, k=k)
    pn, ln, *_ = _device_run(env, data, 20, 100, betas, False, k=k)
    if env.name == "cuda" and not used:
        raise CheckFailed("the graph run was not captured (see the line above on why)")
    if not np.allclose(lg, ln, rtol=1e-6) or not np.allclose(pg, pn, rtol=1e-6, atol=1e-7):
        raise CheckFailed(f"20 steps with and without the CUDA graph differ (losses {np.max(np.abs(lg - ln)):.2g}, "
                          f"parameters {np.max(np.abs(pg - pn)):.2g})")
    return (f"20 steps, k={k}: losses and parameters equal (max differences {np.max(np.abs(lg - ln)):.1e}, "
            f"{np.max(np.abs(pg - pn)):.1e})", {"loss_abs_diff": float(np.max(np.abs(lg - ln)))})


def time_device_step(env: Engine, batch: int = 100, n: int = 10_000) -> tuple[str, dict]:
    """ms per captured step of the chapter model (epoch 2's replays after epoch 1's capture)."""
    data = np.random.default_rng(0).uniform(size=(n, CHAPTER.in_dim)).astype(np.float32)
    xp = env.xp
    p = xp.asarray(VAE(CHAPTER, NumpyOps(), np.float32).initial_params("glorot", 0))
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = DeviceStep(CHAPTER, p, g, m, v, xp.asarray(data), engine=env.name, graph=True)
    ms, sums, kind = time_captured_step(st, n // batch, batch)
    if not np.isfinite(sums).all():
        raise CheckFailed("the loss became NaN or infinite")
    return (f"{CHAPTER.describe()}, batch {batch} ({kind}): {ms:.3f} ms a step ({ms * 600 / 1e3:.3f} s a "
            f"60,000-image epoch)", {"batch": batch, "ms_per_step": ms, "s_per_epoch": ms * 600 / 1e3, "kind": kind})


def cublas_gemm(env: Engine) -> tuple[str, dict]:
    import cupy

    from cuvae.backends.cuda_ops import CublasGemm

    stream = cupy.cuda.Stream(non_blocking=True)
    gemm = CublasGemm(stream)
    try:
        rng = np.random.default_rng(0)
        a, b = rng.normal(size=(3, 64, 100)).astype(np.float32), rng.normal(size=(3, 100, 32)).astype(np.float32)
        c = cupy.zeros((3, 64, 32), cupy.float32)
        with stream:
            gemm.mm(cupy.asarray(a), cupy.asarray(b), c)
        stream.synchronize()
        err = float(np.max(np.abs(cupy.asnumpy(c) - a @ b)))
    finally:
        gemm.close()
    if err > 1e-3:
        raise CheckFailed(f"a batched GEMM differs from NumPy's by {err:.2g}")
    return f"{gemm.path}: batched GEMM equals NumPy's (max abs difference {err:.1e})", {"path": gemm.path}


def compile_kernels(env: Engine) -> tuple[str, dict]:
    from cuvae.backends.kernels import KERNELS

    t0 = time.perf_counter()
    env.kern.compile()
    env.sync()
    return (f"{len(KERNELS)} kernels of step.cu and {len(CONV_KERNELS)} of conv.cu in {time.perf_counter() - t0:.2f} s",
            {"kernels": [*KERNELS, *CONV_KERNELS]})


def gpu_checks(gradcheck_too: bool = False, engine: str = "cuda") -> list[Check]:
    env = Engine(engine)
    extra = "pip install 'cuvae[cuda12]' (or cuda13): NVRTC and the CUDA headers"
    checks = [Check("gpu", "compile the kernels", lambda: compile_kernels(env), extra)]
    for label, kernel, args, outputs in kernel_cases():
        checks.append(Check("gpu", f"kernel {label} vs twin",
                            lambda kernel=kernel, args=args, outputs=outputs: kernel_vs_twin(env, kernel, args, outputs),
                            FIX))
    if engine == "cuda":
        checks.append(Check("gpu", "cuBLAS through ctypes", lambda: cublas_gemm(env),
                            "pip install 'cuvae[cuda12]' (or cuda13) for libcublas; without it the step runs "
                            "uncaptured on cupy.matmul"))
    checks += [
        Check("gpu", "CupyOps vs NumpyOps",
              lambda: selftest.compare_ops(env.ops, to_dev=env.to_dev, to_host=env.to_host), FIX),
        Check("gpu", "captured training step vs NumPy step", lambda: captured_step_vs_numpy(env), FIX),
        Check("gpu", "graph vs no graph", lambda: graph_vs_no_graph(env), FIX),
        Check("gpu", "time a step", lambda: time_device_step(env)),
    ]
    for label, kernel, args, outputs in conv_kernel_cases():
        checks.append(Check("gpu", f"conv kernel {label} vs twin",
                            lambda kernel=kernel, args=args, outputs=outputs: kernel_vs_twin(env, kernel, args, outputs),
                            FIX))
    checks += [
        Check("gpu", "captured conv step vs NumPy ConvVAE step", lambda: conv_step_vs_numpy(env), FIX),
        Check("gpu", "time the conv step", lambda: time_conv_step(env)),
    ]
    if gradcheck_too:
        checks.append(Check("gradcheck", "backward vs finite differences (GPU)",
                            lambda: selftest.gradcheck_check(env.ops, type(env.ops).__name__, to_dev=env.to_dev),
                            "report it: a hand-written gradient is wrong on this backend"))
    return checks
