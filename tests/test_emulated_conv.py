"""The conv VAE's GPU path on the emulated device (tests/emulated_gpu): conv.cu and step.cu compiled unchanged
by g++, cuBLAS's entry points in C, a NumPy-backed CuPy, so cuvae's own ConvCudaKernels, CublasGemm and
ConvDeviceStep run here.

- every conv.cu kernel, through the real launcher, against its NumPy twin (conv_twins), at tiny and
  edge sizes, built plain (IEEE) and with FMA contraction and flush-to-zero; the barrier kernels with
  threads taking turns in reverse and on free-running threads;
- the whole ConvDeviceStep (captured graph and not) against the twin engine, which
  tests/test_gpu_conv_step.py checks against ConvVAE;
- negative controls: copies of conv.cu with an off-by-one bound, a barrier removed, an end-bin mask
  dropped or a wrong parameter type must make these tests fail, and do.
"""

import numpy as np
import pytest

from cuvae.backends.gpu_conv_step import ConvDeviceStep
from cuvae.backends.kernels import CONV_KERNELS, KERNELS, conv_twins, source
from cuvae.nn.conv_model import ConvArch
from emulated_gpu import build, start
from test_gpu_conv_step import assert_same_run, pixel_data, run_conv_epochs

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="needs a C++ compiler (g++) to build the emulated GPU")


# ---- every conv.cu kernel against its twin ----------------------------------------------------------------------
def _rng():
    return np.random.default_rng(7)


def _f32(*shape, scale=1.0):
    return (_rng().normal(size=shape) * scale).astype(np.float32)


def _both(cp, name, *args):
    """Run kernel ``name`` through ConvCudaKernels on device copies and its twin on host copies; both arg lists."""
    from cuvae.backends.cuda_conv_ops import ConvCudaKernels

    dev = [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    host = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    getattr(ConvCudaKernels(), name)(*dev)
    cp.cuda.Device().synchronize()
    getattr(conv_twins, name)(*host)
    return [cp.asnumpy(d) if isinstance(d, cp.ndarray) else d for d in dev], host


GRIDS = [  # (N, C, H, W, k, s, p, Ho, Wo), as tests/test_conv_twins.py: conv grids and a transposed conv's
    (2, 3, 9, 8, 4, 2, 1, 4, 4),
    (1, 2, 5, 5, 1, 2, 0, 3, 3),
    (2, 3, 7, 7, 4, 2, 1, 3, 3),  # 3 -> 7 with output padding 1: rows the windows never reach
]


def _im2col(g, nchw):
    N, C, H, W, k, s, p, Ho, Wo = g
    strides = (C * H * W, W, 1, H * W) if nchw else (H * W * C, W * C, C, 1)
    return (_f32(N * C * H * W), *strides, N, H, W, C, k, s, p, Ho, Wo, np.full((N * Ho * Wo, k * k * C), np.nan, np.float32))


def _col2im(g, mode, nchw):
    N, C, H, W, k, s, p, Ho, Wo = g
    strides = (C * H * W, W, 1, H * W) if nchw else (H * W * C, W * C, C, 1)
    return (_f32(N * Ho * Wo, k * k * C), N, H, W, C, k, s, p, Ho, Wo, _f32(C) if mode in (1, 2) else None, mode,
            _f32(N * C * H * W) if mode == 3 else None, np.full(N * C * H * W, np.nan, np.float32), *strides)


def _pixels(B, C, D, likelihood):
    r = _rng()
    logits = r.normal(scale=3, size=(B, C * D)).astype(np.float32)
    x = (r.integers(0, 256, size=(B, C * D)) / 255).astype(np.float32)
    x.reshape(-1)[:2], x.reshape(-1)[-2:] = 0.0, 1.0  # the open end bins
    logscale = np.linspace(-3, -1, C).astype(np.float32) if likelihood == 2 else None
    return (logits, x, logscale, np.full_like(logits, np.nan), np.full(B * C * 3, np.nan, np.float32), C, D,
            likelihood, 1.0 / B)


def _finish(rows, C, with_ls):
    part = _rng().uniform(-1, 1, size=rows * C * 3).astype(np.float32)
    return (part, np.full(rows, np.nan, np.float32), np.full(C, np.nan, np.float32) if with_ls else None,
            np.full(C, np.nan, np.float32), rows, C)


# (kernel, args builder, [(arg index, rtol, atol)])
CASES = [
    *[(f"im2col_nhwc-{i}-{'nchw' if nchw else 'nhwc'}", "im2col_nhwc", lambda g=g, nchw=nchw: _im2col(g, nchw),
       [(14, 0, 0)]) for i, g in enumerate(GRIDS) for nchw in (False, True)],
    *[(f"col2im_nhwc-{i}-mode{mode}", "col2im_nhwc", lambda g=g, mode=mode, i=i: _col2im(g, mode, i % 2 == 0),
       [(13, 1e-5, 1e-6)]) for i, g in enumerate(GRIDS) for mode in range(4)],
    *[(f"gather_index-{n}", "gather_index", lambda n=n: (_f32(n + 3), _rng().permutation(n + 3)[:n].astype(np.int64),
                                                          np.full(n, np.nan, np.float32), n), [(2, 0, 0)]) for n in (1, 300)],
    *[(f"pixel_nll_grad-lik{lik}-{B}x{C}x{D}", "pixel_nll_grad", lambda B=B, C=C, D=D, lik=lik: _pixels(B, C, D, lik),
       # atol: the logistic's gradient is a difference of two sigmoids (tanhf's last bit, cancelled)
       [(3, 1e-4, 2e-6), (4, 1e-4, 1e-5)]) for lik in (0, 1, 2) for B, C, D in ((1, 1, 1), (3, 2, 300))],
    *[(f"pixel_finish-{rows}x{C}-{'ls' if ls else 'nols'}", "pixel_finish", lambda rows=rows, C=C, ls=ls: _finish(rows, C, ls),
       [(1, 1e-5, 1e-6), (2, 1e-5, 1e-5), (3, 1e-5, 1e-5)]) for rows, C in ((1, 1), (300, 3)) for ls in (False, True)],
]


def test_cases_cover_every_conv_kernel():
    assert {c[1] for c in CASES} == set(CONV_KERNELS)


def _check(d, h, name, checks):
    for i, rtol, atol in checks:
        if h[i] is None:
            assert d[i] is None
        elif rtol == 0 and atol == 0:
            np.testing.assert_array_equal(d[i], h[i], err_msg=f"{name} argument {i}")
        else:
            np.testing.assert_allclose(d[i], h[i], rtol=rtol, atol=atol, err_msg=f"{name} argument {i}")


@pytest.mark.parametrize("name,make,checks", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_conv_kernel_matches_twin(emu, name, make, checks):
    d, h = _both(emu, name, *make())
    for i, *_ in checks:
        assert h[i] is None or not np.isnan(h[i]).any(), f"twin {name} left argument {i} unwritten"
    _check(d, h, name, checks)


BARRIER = [c for c in CASES if c[0] in ("pixel_nll_grad-lik2-3x2x300", "pixel_finish-300x3-ls")]


@pytest.mark.parametrize("mode,reverse", [("fibers", True), ("threads", False)], ids=["reverse-turns", "free-threads"])
@pytest.mark.parametrize("name,make,checks", [c[1:] for c in BARRIER], ids=[c[0] for c in BARRIER])
def test_barrier_kernels_in_other_thread_orders(monkeypatch, emu_cache, name, make, checks, mode, reverse):
    shim = start(monkeypatch, emu_cache, mode=mode, reverse=reverse)
    _check(*_both(shim, name, *make()), name, checks)


# ---- negative controls: a broken copy of conv.cu must fail these tests -------------------------------------------
def _broken(old, new):
    code = source("conv.cu")
    assert code.count(old) == 1, old
    return code.replace(old, new)


def _case(case_id):
    return next(c for c in CASES if c[0] == case_id)


BROKEN = {
    # one element past the end of the column matrix is written (total = 2*4*4*16*3 is no multiple of 256)
    "off-by-one-im2col": (_broken("    long long total = (long long)N * Ho * Wo * k * k * C;\n"
                                  "    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;",
                                  "    long long total = (long long)N * Ho * Wo * k * k * C;\n"
                                  "    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e <= total;"),
                          "im2col_nhwc-0-nchw", RuntimeError, r"ILLEGAL_ADDRESS .* past the end"),
    # a window row past the grid is summed in (it reads columns of the next image, or past the end)
    "window-bound": (_broken("if (i < 0 || i >= Ho) continue;", "if (i < 0 || i > Ho) continue;"),
                     "col2im_nhwc-2-mode0", AssertionError, r"Not equal to tolerance"),
    # the barrier before the tree reduction removed: thread 0 adds partial sums not yet written
    "no-barrier-pixel": (_broken("    red[2][threadIdx.x] = s_b;\n    __syncthreads();\n", "    red[2][threadIdx.x] = s_b;\n"),
                         "pixel_nll_grad-lik0-3x2x300", AssertionError, r"Not equal to tolerance"),
    # the bottom bin's mask dropped from the gradient: wrong where x = 0
    "end-bin-mask": (_broken("float sa = sigmoidf_(a) * lo,", "float sa = sigmoidf_(a),"),
                     "pixel_nll_grad-lik2-3x2x300", AssertionError, r"Not equal to tolerance"),
    # a parameter type the launcher's arguments do not fit
    "wrong-type": (_broken("int C, int D, int likelihood, float scale", "int C, int D, long long likelihood, float scale"),
                   "pixel_nll_grad-lik1-1x1x1", TypeError, r"pixel_nll_grad argument 7 \(long long likelihood\).*4 bytes"),
}


@pytest.mark.parametrize("control", list(BROKEN))
def test_negative_control_is_caught(monkeypatch, emu_cache, control):
    code, case_id, exc, message = BROKEN[control]
    shim = start(monkeypatch, emu_cache, conv_code=code)
    _, name, make, checks = _case(case_id)
    with pytest.raises(exc, match=message):
        _check(*_both(shim, name, *make()), name, checks)


# ---- the whole step: ConvDeviceStep with the real CublasGemm on the emulated device == the twin engine ------------
ARCHES = {
    "bernoulli": ConvArch(image_shape=(1, 8, 8), channels=(2, 3), latent=2, likelihood="bernoulli"),
    "gaussian-ae": ConvArch(image_shape=(1, 8, 8), channels=(2, 3), latent=2, likelihood="gaussian", kind="ae"),
    "logistic": ConvArch(image_shape=(2, 8, 8), channels=(3,), latent=3, likelihood="logistic"),
    "7x7-padding": ConvArch(image_shape=(1, 7, 7), channels=(2, 2), latent=2, likelihood="bernoulli"),
}


def _data(arch, n=10):
    return pixel_data(arch, n, seed=5)


_run, _close = run_conv_epochs, assert_same_run  # tests/test_gpu_conv_step.py's, shared with the real-GPU tests


@pytest.mark.parametrize("arch,graph,binarize", [("bernoulli", True, False), ("bernoulli", False, True),
                                                 ("gaussian-ae", True, False), ("logistic", True, False),
                                                 ("7x7-padding", True, True)])
def test_conv_step_equals_twin_engine(emu_ieee, arch, graph, binarize):
    a = ARCHES[arch]
    got = _run("cuda", a, _data(a), 4, 2, graph=graph, binarize=binarize)  # steps of 4, 4 and 2
    want = _run("twin", a, _data(a), 4, 2, binarize=binarize)
    assert got[0].shape == (6, 3) and np.isfinite(got[0]).all()
    _close(got, want)
    st = got[4]
    assert st.graph_failed is None and st.use_graph == graph and st.gemm_kind == "cuBLAS (ctypes)"
    assert emu_ieee.counters()["captures"] == (2 if graph else 0)  # one graph per batch size serves both epochs


def test_conv_step_fma_ftz_equals_twin_engine(monkeypatch, emu_cache):
    if why := build.fma_ftz_supported():
        pytest.skip(why)
    start(monkeypatch, emu_cache, "fma-ftz")
    a = ARCHES["logistic"]
    _close(_run("cuda", a, _data(a), 4, 2, graph=True), _run("twin", a, _data(a), 4, 2))


def test_conv_graph_equals_uncaptured_exactly(emu_ieee):
    a = ARCHES["logistic"]
    g, u = _run("cuda", a, _data(a), 4, 1, graph=True), _run("cuda", a, _data(a), 4, 1, graph=False)
    np.testing.assert_array_equal(g[0], u[0])
    np.testing.assert_array_equal(g[1], u[1])


def test_conv_step_large_batch_splits_bias_sums(emu_ieee):
    """Batch 40 of 8x8 images: 640 rows after the first convolution, so relu_back_bias_grad sums in blocks."""
    a = ARCHES["bernoulli"]
    got = _run("cuda", a, _data(a, 40), 40, 1, graph=True)
    assert emu_ieee.counters()["launches"].get("col_reduce", 0) > 0
    _close(got, _run("twin", a, _data(a, 40), 40, 1))


def test_conv_kernels_are_loaded_once(emu_ieee):
    _run("cuda", ARCHES["bernoulli"], _data(ARCHES["bernoulli"]), 4, 1)
    assert emu_ieee.counters()["get_function"] == {name: 1 for name in (*KERNELS, *CONV_KERNELS)}


def test_conv_compile_failure_surfaces_when_the_step_is_built(monkeypatch, emu_cache):
    """A conv.cu that does not compile fails in ConvDeviceStep's constructor, where the trainer falls back."""
    shim = start(monkeypatch, emu_cache, conv_code=_broken("    dst[i] = src[idx[i]];", "    dst[i] = no_such(i);"))
    a = ARCHES["bernoulli"]
    with pytest.raises(shim.CompileException):
        ConvDeviceStep(a, *(shim.zeros(a.layout().size, np.float32) for _ in range(4)), shim.zeros((8, a.in_dim), np.float32))


def test_doctors_conv_checks_pass_on_the_emulated_device(emu_ieee):
    """cuvae-doctor's conv checks (selftest_gpu) through the same launcher and step as on a GPU."""
    from cuvae.backends import selftest, selftest_gpu

    checks = [c for c in selftest_gpu.gpu_checks(engine="cuda")
              if c.name.startswith(("compile", "conv kernel", "captured conv step"))]
    assert len(checks) == 2 + len(selftest_gpu.conv_kernel_cases())
    results = [selftest.run(c) for c in checks]
    assert [r.status for r in results] == ["ok"] * len(results), [(r.name, r.detail) for r in results if r.status != "ok"]
    assert results[-1].figures["graph"] is True
