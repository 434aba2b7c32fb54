"""The GPU path on an emulated device (tests/emulated_gpu): step.cu compiled unchanged by g++, cuBLAS's
entry points in C, and a NumPy-backed CuPy, so cuvae's own CudaKernels, CublasGemm and DeviceStep run here.

- every kernel against its NumPy twin, through tests/test_gpu.py's own kernel tests (same inputs,
  same tolerances) and at edge sizes, built plain (IEEE) and with FMA contraction and flush-to-zero;
- the whole DeviceStep (captured graph and not) against the twin engine;
- the defects the review found, each shown here;
- negative controls: copies of step.cu with a barrier removed, an off-by-one bound or a wrong
  parameter type must make these tests fail, and do.
"""

import inspect
import re

import numpy as np
import pytest

import test_gpu
from cuvae.backends.gpu_step import DeviceStep
from cuvae.backends.kernels import KERNELS, source
from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps
from emulated_gpu import build, start
from step_runs import run_epochs

pytestmark = pytest.mark.skipif(build.compiler() is None, reason="needs a C++ compiler (g++) to build the emulated GPU")


# ---- every kernel against its twin ------------------------------------------------------------------------
def _gpu_kernel_cases():
    """tests/test_gpu.py's kernel tests, expanded over their parametrize marks: (id, function, kwargs)."""
    cases = []
    for name, fn in inspect.getmembers(test_gpu, inspect.isfunction):
        if not name.startswith("test_kernel_") or "cp" not in inspect.signature(fn).parameters:
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        if not marks:
            cases.append(pytest.param(fn, {}, id=name[len("test_kernel_"):]))
        for m in marks:
            for v in m.args[1]:
                cases.append(pytest.param(fn, {m.args[0]: v}, id=f"{name[len('test_kernel_'):]}-{m.args[0]}={v}"))
    return cases


GPU_KERNEL_CASES = _gpu_kernel_cases()


def test_gpu_kernel_tests_cover_every_kernel():
    covered = " ".join(inspect.getsource(p.values[0]) for p in GPU_KERNEL_CASES)
    assert all(f'"{k}"' in covered for k in KERNELS), [k for k in KERNELS if f'"{k}"' not in covered]


@pytest.mark.parametrize("fn,kwargs", GPU_KERNEL_CASES)
def test_kernel_matches_twin_on_gpu_test_inputs(emu, fn, kwargs):
    fn(emu, **kwargs)


def _rng():
    return np.random.default_rng(7)


def _f32(*shape, scale=1.0):
    return (_rng().normal(size=shape) * scale).astype(np.float32)


KEY = np.array([0x243F6A88, 0x85A308D3], np.uint32)

# (kernel, args builder, [(arg index, rtol, atol)]) at sizes the GPU tests do not use: one element,
# one past a block, several blocks with a remainder, counters past 2^32. Tolerances: test_gpu's.
EDGE = [
    *[("normal_philox", lambda n=n: (np.zeros(n, np.float32), n, np.array([2**33 + 5], np.int64), KEY, 1),
       [(0, 1e-5, 1e-5)]) for n in (1, 3, 5, 1025)],
    *[("philox_keys", lambda n=n: (np.zeros(n, np.uint32), n, 5, 6, 2), [(0, 0, 0)]) for n in (1, 257)],
    *[("gather_rows", lambda r=r, d=d, b=b: (_rng().uniform(size=(40, d)).astype(np.float32),
                                              _rng().permutation(40).astype(np.int64), np.array([3, 40 - r, 0, 0], np.int64),
                                              np.zeros((r, d), np.float32), r, d, b, KEY), [(3, 0, 0)])
      for r, d in ((1, 1), (3, 257)) for b in (0, 1)],
    *[("bias_act", lambda k=k, r=r, n=n, relu=relu: (_f32(k, r, n), _f32(k * n + 3), n + 3, k, r, n, relu),
       [(0, 1e-6, 0)]) for k, r, n in ((1, 1, 1), (2, 3, 257)) for relu in (0, 1)],
    *[("relu_back_bias_grad", lambda k=k, r=r, n=n, h=h: (_f32(k, r, n), _f32(k, r, n) if h else None,
                                                          np.zeros(k * (n + 5), np.float32), n + 5, r, n, k),
       [(0, 1e-7, 0), (2, 1e-4, 2e-3)])
      for k, r, n in ((1, 1, 1), (1, 511, 33), (3, 1025, 31)) for h in (0, 1)],
    ("col_reduce", lambda: (_f32(2 * 64 * 33), np.zeros(80, np.float32), 40, 2, 64, 33), [(1, 1e-5, 1e-6)]),
    *[("recon_fwd_grad", lambda k=k, r=r, n=n, lik=lik: (_f32(k, r, n, scale=5), _rng().uniform(size=(r, n)).astype(np.float32),
                                                         np.zeros((k, r, n), np.float32), np.zeros(k * r, np.float32), r, n, lik),
       [(2, 1e-4, 1e-7), (3, 1e-5, 0)]) for k, r, n in ((1, 1, 1), (2, 2, 1025)) for lik in (0, 1)],
    *[("reparam", lambda kr=kr, L=L: (_f32(kr, 2 * L), _f32(kr, L), np.zeros((kr, L), np.float32), kr, L),
       [(2, 1e-5, 1e-6)]) for kr, L in ((1, 1), (257, 2))],
    *[("latent_backward", lambda kr=kr, L=L: (_f32(kr, 2 * L), _f32(kr, L), _f32(kr, L), np.zeros((kr, 2 * L), np.float32),
                                              np.zeros(kr, np.float32), np.array([0.25, 0.5], np.float32),
                                              np.array([1, 0, 0, 0], np.int64), kr, max(1, kr // 3), L),
       [(3, 1e-5, 1e-7), (4, 1e-5, 0)]) for kr, L in ((1, 1), (129, 33))],
    *[("finish_step", lambda k=k, r=r, kl=kl: (_rng().uniform(size=k * r).astype(np.float32),
                                               _rng().uniform(size=k * r).astype(np.float32) if kl else None,
                                               np.array([0.3, 0.7], np.float32), np.array([1, 0, 0, 0], np.int64),
                                               np.ones(3 * k), np.zeros(3 * k, np.float32), r, k),
       [(4, 1e-9, 0), (5, 1e-6, 0)]) for k, r in ((1, 1), (2, 257), (1, 513)) for kl in (0, 1)],
    ("advance", lambda: (np.array([0, 0, 2**40, 0], np.int64), np.array([2**32 - 1], np.int64), 7), [(0, 0, 0), (1, 0, 0)]),
    *[("adam_flat", lambda n=n, t=t: (_f32(n), _f32(n), _f32(n, scale=0.1), np.abs(_f32(n, scale=0.01)), n,
                                      np.array([0, 0, t, 0], np.int64), 1e-3, 0.9, 0.999, 1e-8),
       [(0, 1e-5, 1e-7), (2, 1e-5, 1e-7), (3, 1e-5, 1e-7)]) for n, t in ((1, 0), (257, 100000))],
]


@pytest.mark.parametrize("name,make,checks", EDGE, ids=[f"{e[0]}-{i}" for i, e in enumerate(EDGE)])
def test_kernel_matches_twin_at_edge_sizes(emu, name, make, checks):
    d, h = test_gpu._both(emu, name, *make())
    for i, rtol, atol in checks:
        if d[i] is None:
            continue
        if rtol == 0 and atol == 0:
            np.testing.assert_array_equal(d[i], h[i], err_msg=f"{name} argument {i}")
        else:
            np.testing.assert_allclose(d[i], h[i], rtol=rtol, atol=atol, err_msg=f"{name} argument {i}")


def test_edge_sizes_cover_every_kernel():
    assert {e[0] for e in EDGE} == set(KERNELS)


BARRIER_SMALL = [
    ("relu_back_bias_grad", lambda: (_f32(2, 600, 40), _f32(2, 600, 40), np.zeros(90, np.float32), 45, 600, 40, 2),
     [(0, 1e-7, 0), (2, 1e-4, 2e-3)]),
    ("recon_fwd_grad", lambda: (_f32(2, 3, 300, scale=5), _rng().uniform(size=(3, 300)).astype(np.float32),
                                np.zeros((2, 3, 300), np.float32), np.zeros(6, np.float32), 3, 300, 1),
     [(2, 1e-4, 1e-7), (3, 1e-5, 0)]),
    ("finish_step", lambda: (_rng().uniform(size=600).astype(np.float32), _rng().uniform(size=600).astype(np.float32),
                             np.array([0.3, 0.7], np.float32), np.array([1, 0, 0, 0], np.int64), np.ones(6),
                             np.zeros(6, np.float32), 300, 2), [(4, 1e-9, 0), (5, 1e-6, 0)]),
]


BARRIER_CASES = [p for p in GPU_KERNEL_CASES if p.id.split("-")[0] in ("recon_fwd_grad", "relu_back_bias_grad",
                                                                         "reparam_latent_backward_finish")]


@pytest.mark.parametrize("fn,kwargs", BARRIER_CASES)
def test_barrier_kernels_with_threads_taking_turns_in_reverse(monkeypatch, emu_cache, fn, kwargs):
    """Reverse order finds a missing barrier where a thread reads a lower thread's write (forward: a higher's)."""
    fn(start(monkeypatch, emu_cache, reverse=True), **kwargs)


@pytest.mark.parametrize("name,make,checks", BARRIER_SMALL, ids=[b[0] for b in BARRIER_SMALL])
def test_barrier_kernels_on_free_running_threads(monkeypatch, emu_cache, name, make, checks):
    """The barrier kernels with one std::thread per CUDA thread, all at once (std::barrier): the same results."""
    shim = start(monkeypatch, emu_cache, mode="threads")
    test_kernel_matches_twin_at_edge_sizes(shim, name, make, checks)


# ---- the whole step: DeviceStep with the real CublasGemm on the emulated device == the twin engine ------------------
SMALL = Arch(in_dim=20, hidden=(12, 7), latent=3, likelihood="gaussian")


@pytest.mark.parametrize("arch", test_gpu.ARCHES, ids=lambda a: a.describe())
def test_gpu_step_test_on_emulated_device(emu, arch):
    test_gpu.test_cuda_step_equals_numpy_step(emu, arch)


def _run(engine, arch, data, batch, epochs, *, k=1, graph=False, binarize=False, p0=None, state=None, first_epoch=1):
    """Whole epochs through DeviceStep; returns (per-step losses, params, m, v, the step) on the host."""
    xp = np if engine == "twin" else __import__("cupy")
    if p0 is None:
        p0 = np.tile(VAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 3), k)
    p = xp.asarray(p0.copy())
    m, v = (xp.asarray(state[0].copy()), xp.asarray(state[1].copy())) if state else (xp.zeros_like(p), xp.zeros_like(p))
    g = xp.zeros_like(p)
    st = DeviceStep(arch, p, g, m, v, xp.asarray(data), k=k, seed=11, lr=1e-2, engine=engine, graph=graph,
                    binarize=binarize)
    return run_epochs(st, xp, p, m, v, data.shape[0], batch, epochs, first_epoch)


def _close(a, b):
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-5)  # losses (test_gpu's CUDA-vs-NumPy tolerances)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-3, atol=1e-5)  # parameters


DATA = np.random.default_rng(5).uniform(size=(50, 20)).astype(np.float32)  # batch 16: 16, 16, 16 and a partial 2


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("binarize", [False, True], ids=["binarize-off", "binarize-on"])
@pytest.mark.parametrize("graph", [False, True], ids=["uncaptured", "graph"])
def test_device_step_equals_twin_engine(emu_ieee, k, binarize, graph):
    got = _run("cuda", SMALL, DATA, 16, 2, k=k, graph=graph, binarize=binarize)
    want = _run("twin", SMALL, DATA, 16, 2, k=k, binarize=binarize)
    assert got[0].shape == (8, 3 * k)
    _close(got, want)
    assert (got[4].graph_failed is None) and (got[4].use_graph == graph)


def test_device_step_fma_ftz_equals_twin_engine(monkeypatch, emu_cache):
    if why := build.fma_ftz_supported():
        pytest.skip(why)
    start(monkeypatch, emu_cache, "fma-ftz")
    _close(_run("cuda", SMALL, DATA, 16, 2, k=2, graph=True, binarize=True),
           _run("twin", SMALL, DATA, 16, 2, k=2, binarize=True))


def test_device_step_large_batch_splits_rows(emu_ieee):
    """Batch 520: relu_back_bias_grad sums the rows in several blocks and col_reduce adds them."""
    data = np.random.default_rng(6).uniform(size=(520, 20)).astype(np.float32)
    arch = Arch(in_dim=20, hidden=(12,), latent=2, likelihood="bernoulli")
    got = _run("cuda", arch, data, 520, 1, k=2, graph=True)
    assert emu_ieee.counters()["launches"].get("col_reduce", 0) > 0
    _close(got, _run("twin", arch, data, 520, 1, k=2))


def test_graph_equals_uncaptured_exactly(emu_ieee):
    a = _run("cuda", SMALL, DATA, 16, 2, k=2, graph=True, binarize=True)
    b = _run("cuda", SMALL, DATA, 16, 2, k=2, graph=False, binarize=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_resume_mid_run_equals_uninterrupted(emu_ieee):
    """Epochs 1-3 in one go == epoch 1, then a new DeviceStep from the saved weights and moments for 2-3."""
    whole = _run("cuda", SMALL, DATA, 16, 3, graph=True, binarize=True)
    first = _run("cuda", SMALL, DATA, 16, 1, graph=True, binarize=True)
    rest = _run("cuda", SMALL, DATA, 16, 2, graph=True, binarize=True, p0=first[1], state=(first[2], first[3]),
                first_epoch=2)
    np.testing.assert_array_equal(np.concatenate([first[0], rest[0]]), whole[0])
    np.testing.assert_array_equal(rest[1], whole[1])
    _close(whole, _run("twin", SMALL, DATA, 16, 3, binarize=True))


def test_multi_model_on_emulated_device(emu_ieee):
    from cuvae.backends.multi import MultiModel

    got = MultiModel(SMALL, [4, 5, 6], DATA, batch=16, lr=1e-2, init="pytorch", seed=9, graph=True)
    want = MultiModel(SMALL, [4, 5, 6], DATA, batch=16, lr=1e-2, init="pytorch", seed=9, engine="twin")
    for epoch in (1, 2):
        np.testing.assert_allclose(got.train_epoch(epoch), want.train_epoch(epoch), rtol=1e-4, atol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(got.params(i), want.params(i), rtol=1e-3, atol=1e-5)
    got.close()


# ---- the review's defects ----------------------------------------------------------------------------------------------
def test_one_graph_serves_every_epoch(emu_ieee):
    """The Philox key is in device memory: 3 epochs capture once per batch size (16 and the partial 2)."""
    got = _run("cuda", SMALL, DATA, 16, 3, graph=True)
    assert emu_ieee.counters()["captures"] == 2
    _close(got, _run("twin", SMALL, DATA, 16, 3))


def test_kernels_are_loaded_once(emu_ieee):
    _run("cuda", SMALL, DATA, 16, 2, graph=False)
    assert emu_ieee.counters()["get_function"] == {name: 1 for name in KERNELS}


def test_compile_failure_surfaces_when_the_step_is_built(monkeypatch, emu_cache):
    """CuPy compiles on first use; DeviceStep compiles every kernel in __init__, where the trainer falls back."""
    shim = start(monkeypatch, emu_cache, code=_broken("    out[i] = philox4x32_10(", "    out[i] = no_such_function("))
    with pytest.raises(shim.CompileException):
        DeviceStep(SMALL, *(shim.zeros(SMALL.layout().size, np.float32) for _ in range(4)), shim.zeros((8, 20), np.float32))


def test_step_waits_for_the_callers_stream(emu_ieee):
    """Weights written on the default stream (asynchronous) reach a step running on its own stream."""
    cp = emu_ieee
    p0 = VAE(SMALL, NumpyOps(), np.float32).initial_params("pytorch", 3)
    p = cp.asarray(p0)
    st = DeviceStep(SMALL, p, cp.zeros_like(p), cp.zeros_like(p), cp.zeros_like(p), cp.asarray(DATA), seed=1)
    st.start_epoch(1, np.ones(4, np.float32), 0)
    st.step(16)
    first = cp.asnumpy(st.loss).copy()
    p[...] = cp.asarray(p0 * 0.5)  # new weights handed in mid-epoch, queued on the default stream
    st.wait_for_caller()
    st.step(16)
    st.synchronize()
    twin = DeviceStep(SMALL, p0.copy(), *(np.zeros_like(p0) for _ in range(3)), DATA.copy(), seed=1, engine="twin")
    twin.start_epoch(1, np.ones(4, np.float32), 0)
    twin.step(16)
    np.testing.assert_allclose(first, twin.loss, rtol=1e-4, atol=1e-5)
    twin.params[...] = p0 * 0.5
    twin.step(16)
    np.testing.assert_allclose(cp.asnumpy(st.loss), twin.loss, rtol=1e-4, atol=1e-5)
    st.close()


def test_without_waiting_the_step_reads_unwritten_weights(emu_ieee):
    """The emulated streams are strict enough to show the hazard: skip the wait and the step sees NaN."""
    cp = emu_ieee
    p = cp.asarray(VAE(SMALL, NumpyOps(), np.float32).initial_params("pytorch", 3))
    st = DeviceStep(SMALL, p, cp.zeros_like(p), cp.zeros_like(p), cp.zeros_like(p), cp.asarray(DATA), seed=1)
    st.start_epoch(1, np.ones(4, np.float32), 0)
    p[...] = cp.asarray(np.full(p.shape, np.nan, np.float32))  # queued on the default stream; no wait_for_caller
    st.step(16)
    st.synchronize()
    with st.stream:
        assert np.isfinite(cp.asnumpy(st.loss)).all()  # the step ran before the queued write...
    cp.cuda.Device().synchronize()
    assert np.isnan(cp.asnumpy(p)).all()  # ...which lands only now
    st.close()


def test_close_is_idempotent_and_final(emu_ieee):
    *_, st = _run("cuda", SMALL, DATA, 16, 1, graph=True)
    st.close()  # _run closed it already
    assert not st.gemm.handle
    with pytest.raises(RuntimeError, match="closed"):
        st.step(16)


def test_block_sizes_come_from_the_source(emu_ieee, monkeypatch):
    """A copy of step.cu with other block sizes still matches the twins: launches read the source's numbers."""
    code = source()
    for name, new in (("RECON_THREADS", 64), ("FINISH_THREADS", 32), ("BIAS_COLS", 16), ("BIAS_ROWS", 4)):
        code, n = re.subn(rf"^#define {name} \d+$", f"#define {name} {new}", code, flags=re.M)
        assert n == 1, name
    from cuvae.backends import cuda_ops

    monkeypatch.setattr(cuda_ops, "source", lambda: code)
    for fn, kwargs in [p.values for p in BARRIER_CASES]:
        fn(emu_ieee, **kwargs)
    assert cuda_ops.CudaKernels().recon_threads == 64


# ---- negative controls: a broken copy of the kernels must fail these tests -----------------------------------------------
def _broken(old, new, count=1):
    code = source()
    assert code.count(old) == count, old
    return code.replace(old, new)


def _gpu_case(prefix):
    return next((p.values[0], p.values[1]) for p in GPU_KERNEL_CASES if p.id.startswith(prefix))


BROKEN = {
    # a barrier removed: thread 0 adds partial sums the other threads have not written yet
    "no-barrier-recon": (_broken("    part[threadIdx.x] = s;\n    __syncthreads();\n", "    part[threadIdx.x] = s;\n"),
                         "recon_fwd_grad-likelihood=0", AssertionError, r"Not equal to tolerance"),
    "no-barrier-bias-grad": (_broken("    part[threadIdx.y][threadIdx.x] = s;\n    __syncthreads();\n",
                                     "    part[threadIdx.y][threadIdx.x] = s;\n"),
                             "relu_back_bias_grad-with_relu=True", AssertionError, r"Not equal to tolerance"),
    # a barrier only some threads reach, and threads that leave before the others' barrier
    "divergent-barrier": (_broken("        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];\n        __syncthreads();",
                                  "        if (threadIdx.x < w) { part[threadIdx.x] += part[threadIdx.x + w]; __syncthreads(); }"),
                          "recon_fwd_grad-likelihood=1", RuntimeError, r"divergent barrier .* waits at the __syncthreads"),
    "exit-before-barrier": (_broken("    part[threadIdx.x] = s;\n    __syncthreads();\n",
                                    "    part[threadIdx.x] = s;\n    if (threadIdx.x >= rows) return;\n    __syncthreads();\n"),
                            "recon_fwd_grad-likelihood=1", RuntimeError, r"divergent barrier .* has exited"),
    # off-by-one bounds: one element past the end is written
    "off-by-one-bias": (_broken("    if (idx >= total) return;", "    if (idx > total) return;"),
                        "bias_act-relu=1", RuntimeError, r"ILLEGAL_ADDRESS .* past the end"),
    "off-by-one-normal": (_broken("    if (i + 3 < n) out[i + 3]", "    if (i + 3 <= n) out[i + 3]"),
                          "normal_philox", RuntimeError, r"ILLEGAL_ADDRESS .* past the end"),
    # a parameter type the launcher's arguments do not fit
    "wrong-type": (_broken("int rows, int dim, int binarize", "long long rows, int dim, int binarize"),
                   "gather_rows-binarize=True", TypeError, r"gather_rows argument 4 \(long long rows\).*4 bytes of int32"),
}


# every control on the deterministic scheduler; the barrier errors on free-running threads too
CONTROLS = [(n, "fibers") for n in BROKEN] + [(n, "threads") for n in ("divergent-barrier", "exit-before-barrier")]


@pytest.mark.parametrize("name,mode", CONTROLS, ids=[f"{n}-{m}" for n, m in CONTROLS])
def test_negative_control_is_caught(monkeypatch, emu_cache, name, mode):
    code, case, exc, message = BROKEN[name]
    shim = start(monkeypatch, emu_cache, mode=mode, code=code)
    fn, kwargs = _gpu_case(case)
    with pytest.raises(exc, match=message):
        fn(shim, **kwargs)


def test_negative_control_wrong_type_from_the_launcher(emu_ieee, monkeypatch):
    """The launcher's side: a Python int where the kernel takes an int is 8 bytes under CuPy's rules."""
    from cuvae.backends import cuda_ops

    def bias_act(self, y, b, b_stride, k, rows, n, relu):
        self._fn("bias_act")(*cuda_ops._blocks(k * rows * n), (y, b, np.int64(b_stride), k, np.int32(rows),
                                                                np.int32(n), np.int32(bool(relu))))
    monkeypatch.setattr(cuda_ops.CudaKernels, "bias_act", bias_act)
    with pytest.raises(TypeError, match=r"bias_act argument 3 \(int k\): got int 3, which CuPy passes as 8 bytes"):
        _gpu_case("bias_act-relu=0")[0](emu_ieee, relu=0)


def test_host_array_as_kernel_argument_is_refused(emu_ieee):
    from cuvae.backends.cuda_ops import CudaKernels

    with pytest.raises(TypeError, match="numpy.ndarray of shape"):
        CudaKernels().reparam(np.zeros((4, 2), np.float32), emu_ieee.zeros((4, 1), np.float32),
                              emu_ieee.zeros((4, 1), np.float32), 4, 1)
