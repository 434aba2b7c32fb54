"""cuvae-doctor's GPU checks of the conv model (run by :mod:`cuvae.backends.selftest_gpu`): the cases of
conv.cu's kernels against their twins, a captured :class:`~cuvae.backends.gpu_conv_step.ConvDeviceStep`
against :class:`~cuvae.nn.conv_model.ConvVAE` + NumpyOps Adam on the same weights, batch and noise, and
the time of a step of the default conv model. ``env`` is selftest_gpu's Engine (the device, or the twins).
"""

from __future__ import annotations

import numpy as np

from cuvae.backends.gpu_conv_step import ConvDeviceStep
from cuvae.backends.selftest import CheckFailed, time_captured_step
from cuvae.nn.conv_model import ConvArch, ConvVAE
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam


def conv_kernel_cases():
    """(label, kernel, arguments, [(output argument, rtol, atol)]) for every kernel of conv.cu: im2col / col2im on
    the NCHW image and NHWC rows, the packing gather, the likelihoods."""
    rng = np.random.default_rng(1)
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    N, C, H, W, k, st, p = 8, 3, 28, 28, 4, 2, 1
    Ho = (H + 2 * p - k) // st + 1
    nchw, nhwc = (C * H * W, W, 1, H * W), (H * W * C, W * C, C, 1)
    cases = [(f"im2col_nhwc ({name})", "im2col_nhwc", [f32(N * C * H * W), *strides, N, H, W, C, k, st, p, Ho, Ho,
                                                       np.zeros((N * Ho * Ho, k * k * C), np.float32)], [(14, 0, 0)])
             for name, strides in (("NCHW image", nchw), ("NHWC rows", nhwc))]
    for mode in range(4):
        cases.append((f"col2im_nhwc (mode {mode})", "col2im_nhwc",
                      [f32(N * Ho * Ho, k * k * C), N, H, W, C, k, st, p, Ho, Ho, f32(C) if mode in (1, 2) else None, mode,
                       f32(N * C * H * W) if mode == 3 else None, np.zeros(N * C * H * W, np.float32),
                       *(nchw if mode == 1 else nhwc)], [(13, 1e-5, 1e-5)]))
    cases.append(("gather_index", "gather_index", [f32(100_003), rng.permutation(100_003).astype(np.int64),
                                                   np.zeros(100_003, np.float32), 100_003], [(2, 0, 0)]))
    x = (rng.integers(0, 256, size=(50, C * 1024)) / 255).astype(np.float32)
    for lik, name in enumerate(("bernoulli", "gaussian", "logistic")):
        logits = (f32(50, C * 1024) * 3).astype(np.float32)
        cases.append((f"pixel_nll_grad ({name})", "pixel_nll_grad",
                      [logits, x, np.array([-3.0, -2.0, -1.0], np.float32) if lik == 2 else None, np.zeros_like(logits),
                       np.zeros(50 * C * 3, np.float32), C, 1024, lik, 1 / 50], [(3, 1e-4, 2e-6), (4, 1e-4, 1e-4)]))
    cases.append(("pixel_finish", "pixel_finish", [f32(500 * C * 3), np.zeros(500, np.float32), np.zeros(C, np.float32),
                                                   np.zeros(C, np.float32), 500, C], [(1, 1e-5, 1e-5), (2, 1e-5, 1e-4),
                                                                                       (3, 1e-5, 1e-4)]))
    return cases


# ---- the whole conv step --------------------------------------------------------------------------------
CONV_CHECK = ConvArch(image_shape=(1, 28, 28), channels=(4, 8), latent=4, likelihood="bernoulli")
CONV_TIMED = ConvArch(image_shape=(1, 28, 28), channels=(32, 64, 128), latent=8, likelihood="bernoulli")  # the default


def _conv_run(env, arch, data, steps, rows, betas, graph, p0):
    """ConvDeviceStep for ``steps`` steps; host copies of (params, per-step losses, xs, epss, first grads, graph)."""
    xp = env.xp
    p = xp.asarray(p0.copy())  # the step trains p in place; p0 stays the reference's start
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = ConvDeviceStep(arch, p, g, m, v, xp.asarray(data), seed=5, lr=1e-3, engine=env.name, graph=graph)
    try:
        st.start_epoch(1, betas, 0)
        losses, xs, epss, first = [], [], [], None
        for _ in range(steps):
            st.step(rows)
            st.synchronize()
            bufs = st._plans[rows].bufs
            losses.append(np.array(env.to_host(st.loss)))
            xs.append(np.array(env.to_host(bufs["x"])))
            epss.append(np.array(env.to_host(bufs["eps"])))
            if first is None:
                first = np.array(env.to_host(g))
        used_graph = st.use_graph
    finally:
        st.close()
    return np.array(env.to_host(p)), np.array(losses), xs, epss, first, used_graph


def conv_step_vs_numpy(env, graph: bool = True) -> tuple[str, dict]:
    """A captured conv step (and two replays) against ConvVAE + NumpyOps Adam on the same weights, batch and eps."""
    arch = CONV_CHECK
    rng = np.random.default_rng(2)
    data = (rng.integers(0, 256, size=(48, arch.in_dim)) / 255).astype(np.float32)
    betas = np.array([0.5, 0.75, 1.0], np.float32)
    model = ConvVAE(arch, NumpyOps(), np.float32)
    p0 = model.initial_params("pytorch", 0)
    p, losses, xs, epss, first, used_graph = _conv_run(env, arch, data, 3, 16, betas, graph, p0)
    if graph and env.name == "cuda" and not used_graph:
        raise CheckFailed("the conv step was not captured in a CUDA graph (see the line above on why); it ran uncaptured")
    ref, grad = p0.copy(), np.zeros_like(p0)
    P, G = model.layout.views(ref), model.layout.views(grad)
    adam = Adam(model.ops, ref.size, np.float32, lr=1e-3)
    ref_losses, ref_first = [], None
    for x, eps, beta in zip(xs, epss, betas):
        ref_losses.append([float(v) for v in model.loss_and_grad(P, G, x, eps, float(beta))])
        if ref_first is None:
            ref_first = grad.copy()
        adam.step(ref, grad)
    ref_losses = np.array(ref_losses)
    rel = float(np.max(np.abs(losses - ref_losses) / np.maximum(np.abs(ref_losses), 1e-6)))
    gerr = float(np.max(np.abs(first - ref_first)) / max(float(np.abs(ref_first).max()), 1e-30))
    perr = float(np.max(np.abs(p - ref)))
    if not np.allclose(losses, ref_losses, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"losses differ from ConvVAE's NumPy step (worst relative error {rel:.2g})")
    if gerr > 1e-3:
        raise CheckFailed(f"gradients differ from ConvVAE's NumPy step ({gerr:.2g} of the largest gradient)")
    if perr > 1e-4:
        raise CheckFailed(f"parameters after 3 steps differ from ConvVAE's NumPy step (max abs error {perr:.2g})")
    return (f"{'captured' if used_graph else 'uncaptured'} step of {arch.describe()}, batch 16, 3 steps: losses "
            f"within {rel:.1e} relative, gradients {gerr:.1e}, parameters {perr:.1e}",
            {"loss_rel_err": rel, "grad_rel_err": gerr, "param_abs_err": perr, "graph": used_graph})


def time_conv_step(env, batch: int = 100, n: int = 2000) -> tuple[str, dict]:
    """ms per captured step of the default conv model on 28x28 images (epoch 2's replays)."""
    arch = CONV_TIMED
    data = (np.random.default_rng(0).integers(0, 256, size=(n, arch.in_dim)) / 255).astype(np.float32)
    xp = env.xp
    p = xp.asarray(ConvVAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 0))
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = ConvDeviceStep(arch, p, g, m, v, xp.asarray(data), engine=env.name, graph=True)
    ms, sums, kind = time_captured_step(st, n // batch, batch)
    if not np.isfinite(sums).all():
        raise CheckFailed("the conv step's loss became NaN or infinite")
    return (f"{arch.describe()}, batch {batch} ({kind}): {ms:.3f} ms a step ({batch * 1e3 / ms:,.0f} examples/s)",
            {"batch": batch, "ms_per_step": ms, "examples_per_s": batch * 1e3 / ms, "kind": kind})
