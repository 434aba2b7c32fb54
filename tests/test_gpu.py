"""The GPU path: CUDA kernels against their NumPy twins, graph against no graph, CuPy against NumPy.

The first half runs everywhere: the twins against NumpyOps / the VAE (so the specification the
kernels are held to is itself checked) and Philox against its published test vectors (the CUDA
source is compiled by tests/test_kernel_compile.py). The second half is marked ``gpu`` and skips
without CuPy and a CUDA device; tests/test_emulated_gpu.py runs it on an emulated device.
"""

from pathlib import Path

import numpy as np
import pytest

from cuvae.backends.gpu_step import DeviceStep, philox_key
from cuvae.backends.kernels import KERNELS, twins
from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam

ARCHES = [Arch(in_dim=20, hidden=(12, 7), latent=3, likelihood="gaussian"),
          Arch(in_dim=20, hidden=(12,), latent=3, likelihood="bernoulli"),
          Arch(in_dim=20, hidden=(12, 7), latent=3, likelihood="bernoulli", kind="ae")]


def _has_gpu():
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001
        return False


gpu = pytest.mark.skipif(not _has_gpu(), reason="needs CuPy and a CUDA device")


# ---- everywhere: the twins are right ------------------------------------------------------------------------
def test_philox_known_answers():
    """Random123's published Philox4x32-10 test vectors."""
    cases = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
             ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
             ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
              (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in cases:
        got = twins.philox4x32_10(np.array(ctr, np.uint64).reshape(4, 1), key)[:, 0]
        assert [int(v) for v in got] == list(want)


def test_normal_twin_is_standard_normal_and_counter_based():
    out = np.empty(200_001, np.float32)
    twins.normal_philox(out, out.size, np.array([3]), np.array([7, 11], np.uint32), 1)
    assert abs(out.mean()) < 0.01 and abs(out.var() - 1) < 0.01
    again = np.empty_like(out)
    twins.normal_philox(again, out.size, np.array([3]), np.array([7, 11], np.uint32), 1)
    np.testing.assert_array_equal(out, again)
    twins.normal_philox(again, out.size, np.array([4]), np.array([7, 11], np.uint32), 1)
    assert np.corrcoef(out, again)[0, 1] < 0.01  # the next counter: fresh noise


def test_twins_match_numpy_ops():
    ops, rng = NumpyOps(), np.random.default_rng(0)
    logits, x = rng.normal(scale=4, size=(6, 30)).astype(np.float32), rng.uniform(size=(6, 30)).astype(np.float32)
    for lik, fwd, grad in ((0, ops.bernoulli_nll, ops.bernoulli_nll_grad), (1, ops.sse, ops.sse_grad)):
        d, rl = np.empty_like(logits), np.empty(6, np.float32)
        twins.recon_fwd_grad(logits, x, d, rl, 6, 30, lik)
        np.testing.assert_allclose(rl, fwd(logits, x, np.empty_like(logits)), rtol=1e-5)
        np.testing.assert_allclose(d, grad(logits, x, 1 / 6, np.empty_like(logits)), rtol=1e-5, atol=1e-8)
    y, b = rng.normal(size=(2, 5, 4)).astype(np.float32), rng.normal(size=13).astype(np.float32)
    want = np.maximum(y + np.stack([b[:4], b[9:13]])[:, None, :], 0)
    twins.bias_act(y, b, 9, 2, 5, 4, 1)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    dy, h, db = rng.normal(size=(2, 5, 4)).astype(np.float32), want, np.zeros(13, np.float32)
    masked = dy * (h > 0)
    twins.relu_back_bias_grad(dy, h, db, 9, 5, 4, 2)
    np.testing.assert_allclose(dy, masked)
    np.testing.assert_allclose(db[:4], masked[0].sum(0), rtol=1e-5)
    np.testing.assert_allclose(db[9:13], masked[1].sum(0), rtol=1e-5)


def test_shuffle_is_a_permutation_and_seeded():
    keys = np.empty(1000, np.uint32)
    twins.philox_keys(keys, 1000, *philox_key(3, 1), 2)
    perm = np.argsort(keys, kind="stable")
    assert sorted(perm) == list(range(1000))
    other = np.empty_like(keys)
    twins.philox_keys(other, 1000, *philox_key(3, 2), 2)
    assert not np.array_equal(np.argsort(other, kind="stable"), perm)


def _reference_steps(arch, p0, xs, epss, betas, lr=1e-2):
    """The same steps through VAE.loss_and_grad + NumpyOps Adam: (params, losses)."""
    model = VAE(arch, NumpyOps(), np.float32)
    p = p0.copy()
    g = np.zeros_like(p)
    P, G = model.layout.views(p), model.layout.views(g)
    adam = Adam(model.ops, p.size, np.float32, lr=lr)
    losses = []
    for x, eps, beta in zip(xs, epss, betas):
        losses.append([float(v) for v in model.loss_and_grad(P, G, x, eps, beta)])
        adam.step(p, g)
    return p, np.array(losses)


def _device_steps(engine, arch, p0, data, steps, rows, betas, k=1, graph=True, lr=1e-2, binarize=False, to_host=None):
    """Run DeviceStep; return (params, per-step losses (k, 3), xs, epss) on the host."""
    xp = np if engine == "twin" else __import__("cupy")
    to_host = to_host or (lambda a: a if xp is np else xp.asnumpy(a))
    p = xp.asarray(np.tile(p0, k))
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = DeviceStep(arch, p, g, m, v, xp.asarray(data), k=k, seed=5, lr=lr, engine=engine, graph=graph,
                    binarize=binarize)
    st.start_epoch(1, betas, 0)
    losses, xs, epss = [], [], []
    for _ in range(steps):
        st.step(rows)
        st.synchronize()
        plan = st._plans[rows]
        losses.append(to_host(st.loss).reshape(k, 3).copy())
        xs.append(to_host(plan.bufs["x"]).copy())
        epss.append(to_host(plan.bufs["eps"]).copy())
    st.close()
    return to_host(p), np.array(losses), xs, epss


@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.describe())
def test_twin_step_equals_model_step(arch):
    """The device step's orchestration, run on the twins, is VAE.loss_and_grad + Adam, step for step."""
    rng = np.random.default_rng(1)
    data = rng.uniform(size=(64, 20)).astype(np.float32)
    p0 = VAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 2)
    betas = np.array([0.5, 0.75, 1.0, 1.0], np.float32)
    p, losses, xs, epss = _device_steps("twin", arch, p0, data, 4, 16, betas)
    ref_p, ref_losses = _reference_steps(arch, p0, xs, [e[0] for e in epss], betas)
    np.testing.assert_allclose(losses[:, 0, :], ref_losses, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(p, ref_p, rtol=1e-4, atol=1e-6)


def test_twin_k_models_equal_k_single_runs():
    arch = ARCHES[0]
    data = np.random.default_rng(1).uniform(size=(48, 20)).astype(np.float32)
    p0 = VAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 2)
    betas = np.ones(3, np.float32)
    pk, lk, _, epk = _device_steps("twin", arch, p0, data, 3, 16, betas, k=3)
    p1, l1, _, _ = _device_steps("twin", arch, p0, data, 3, 16, betas, k=1)
    # model 0 of the k-run draws the same eps as the single run (the same counter block)
    np.testing.assert_allclose(pk[: p0.size], p1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(lk[:, 0], l1[:, 0], rtol=1e-6)
    assert not np.allclose(lk[:, 1], lk[:, 0])  # other models get other noise


def test_dynamic_binarisation_twin():
    x = np.empty((50, 30), np.float32)
    data = np.full((100, 30), 0.25, np.float32)
    twins.gather_rows(data, np.arange(100), np.array([0, 0, 0, 0]), x, 50, 30, True, np.array([1, 2], np.uint32))
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert abs(x.mean() - 0.25) < 0.03


def test_cuda_ops_imports_without_gpu():
    pytest.importorskip("cupy", reason="CuPy is not installed")
    from cuvae.backends import cuda_ops

    assert set(KERNELS) <= set(dir(cuda_ops.CudaKernels))


# ---- on a GPU: every kernel against its twin ------------------------------------------------------------------
@pytest.fixture
def cp():
    import cupy

    return cupy


def _both(cp, fn, *args):
    """Run kernel ``fn`` on device copies and twin ``fn`` on host copies of args; return both arg lists."""
    from cuvae.backends.cuda_ops import CudaKernels

    dev = [cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    host = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    getattr(CudaKernels(), fn)(*dev)
    cp.cuda.Device().synchronize()
    getattr(twins, fn)(*host)
    return [cp.asnumpy(d) if isinstance(d, cp.ndarray) else d for d in dev], host


@gpu
@pytest.mark.gpu
def test_kernel_normal_philox(cp):
    out = np.zeros(1003, np.float32)
    d, h = _both(cp, "normal_philox", out, 1003, np.array([9], np.int64), np.array([3, 4], np.uint32), 1)
    np.testing.assert_allclose(d[0], h[0], rtol=1e-5, atol=1e-5)


@gpu
@pytest.mark.gpu
def test_kernel_philox_keys(cp):
    d, h = _both(cp, "philox_keys", np.zeros(5000, np.uint32), 5000, 1, 2, 2)
    np.testing.assert_array_equal(d[0], h[0])


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("binarize", [False, True])
def test_kernel_gather_rows(cp, binarize):
    rng = np.random.default_rng(0)
    data = rng.uniform(size=(300, 37)).astype(np.float32)
    perm = rng.permutation(300).astype(np.int64)
    d, h = _both(cp, "gather_rows", data, perm, np.array([2, 40, 0, 0], np.int64), np.zeros((64, 37), np.float32),
                 64, 37, binarize, np.array([5, 6], np.uint32))
    np.testing.assert_array_equal(d[3], h[3])


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("relu", [0, 1])
def test_kernel_bias_act(cp, relu):
    rng = np.random.default_rng(0)
    d, h = _both(cp, "bias_act", rng.normal(size=(3, 70, 33)).astype(np.float32),
                 rng.normal(size=200).astype(np.float32), 50, 3, 70, 33, relu)
    np.testing.assert_allclose(d[0], h[0], rtol=1e-6)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("with_relu", [False, True])
def test_kernel_relu_back_bias_grad(cp, with_relu):
    rng = np.random.default_rng(0)
    hh = rng.normal(size=(2, 10001, 45)).astype(np.float32) if with_relu else None  # rows split over blocks
    d, h = _both(cp, "relu_back_bias_grad", rng.normal(size=(2, 10001, 45)).astype(np.float32), hh,
                 np.zeros(200, np.float32), 100, 10001, 45, 2)
    np.testing.assert_allclose(d[0], h[0])
    np.testing.assert_allclose(d[2], h[2], rtol=1e-4, atol=2e-3)


@gpu
@pytest.mark.gpu
def test_kernel_col_reduce(cp):
    rng = np.random.default_rng(0)
    d, h = _both(cp, "col_reduce", rng.normal(size=(3 * 5 * 40)).astype(np.float32), np.zeros(300, np.float32),
                 100, 3, 5, 40)
    np.testing.assert_allclose(d[1], h[1], rtol=1e-5, atol=1e-6)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", [0, 1])
def test_kernel_recon_fwd_grad(cp, likelihood):
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(2, 50, 784)) * 5).astype(np.float32)
    x = rng.uniform(size=(50, 784)).astype(np.float32)
    d, h = _both(cp, "recon_fwd_grad", logits, x, np.zeros_like(logits), np.zeros(100, np.float32), 50, 784, likelihood)
    np.testing.assert_allclose(d[2], h[2], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(d[3], h[3], rtol=1e-5)


@gpu
@pytest.mark.gpu
def test_kernel_reparam_latent_backward_finish(cp):
    rng = np.random.default_rng(0)
    head = rng.normal(size=(2, 30, 16)).astype(np.float32)
    eps, dz = rng.normal(size=(2, 30, 8)).astype(np.float32), rng.normal(size=(2, 30, 8)).astype(np.float32)
    d, h = _both(cp, "reparam", head, eps, np.zeros_like(eps), 60, 8)
    # atol: where mean + sigma eps cancels, one ulp of expf (or an FMA) is far above rtol
    np.testing.assert_allclose(d[2], h[2], rtol=1e-5, atol=1e-6)
    betas, state = np.array([0.3, 0.7], np.float32), np.array([1, 0, 0, 0], np.int64)
    d, h = _both(cp, "latent_backward", head, eps, dz, np.zeros_like(head), np.zeros(60, np.float32), betas, state,
                 60, 30, 8)
    np.testing.assert_allclose(d[3], h[3], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(d[4], h[4], rtol=1e-5)
    rowloss = rng.uniform(size=60).astype(np.float32)
    d, h = _both(cp, "finish_step", rowloss, h[4], betas, state, np.ones(6), np.zeros(6, np.float32), 30, 2)
    np.testing.assert_allclose(d[4], h[4], rtol=1e-9)
    np.testing.assert_allclose(d[5], h[5], rtol=1e-6)


@gpu
@pytest.mark.gpu
def test_kernel_advance_and_adam(cp):
    d, h = _both(cp, "advance", np.array([3, 300, 7, 0], np.int64), np.array([3], np.int64), 100)
    np.testing.assert_array_equal(d[0], h[0])
    np.testing.assert_array_equal(d[1], h[1])
    rng = np.random.default_rng(0)
    n = 300_001
    args = [rng.normal(size=n).astype(np.float32) for _ in range(2)] + [
        rng.normal(size=n).astype(np.float32) * 0.1, rng.uniform(size=n).astype(np.float32) * 0.01]
    d, h = _both(cp, "adam_flat", *args, n, np.array([0, 0, 41, 0], np.int64), 1e-3, 0.9, 0.999, 1e-8)
    for i in (0, 2, 3):
        np.testing.assert_allclose(d[i], h[i], rtol=1e-5, atol=1e-7)


@gpu
@pytest.mark.gpu
def test_cupy_ops_match_numpy_ops(cp):
    from cuvae.backends.cuda_ops import CupyOps

    ops, ref, rng = CupyOps(), NumpyOps(), np.random.default_rng(0)
    l, x = rng.normal(size=(40, 30)).astype(np.float32) * 4, rng.uniform(size=(40, 30)).astype(np.float32)
    for name in ("sse_grad", "bernoulli_nll_grad"):
        got = getattr(ops, name)(cp.asarray(l), cp.asarray(x), 0.1, cp.empty((40, 30), cp.float32))
        np.testing.assert_allclose(cp.asnumpy(got), getattr(ref, name)(l, x, 0.1, np.empty_like(l)), rtol=1e-5, atol=1e-8)
    h, dh = rng.normal(size=(40, 30)).astype(np.float32), rng.normal(size=(40, 30)).astype(np.float32)
    got = ops.relu_backward(cp.asarray(dh), cp.asarray(h))
    np.testing.assert_array_equal(cp.asnumpy(got), ref.relu_backward(dh.copy(), h))
    p, g = rng.normal(size=999).astype(np.float32), rng.normal(size=999).astype(np.float32)
    bufs = [cp.asarray(p), cp.zeros(999, cp.float32), cp.zeros(999, cp.float32)]
    ops.adam(bufs[0], cp.asarray(g), bufs[1], bufs[2], None, 1e-2, 0.9, 0.999, 1e-8, 1)
    pr, mr, vr = p.copy(), np.zeros(999, np.float32), np.zeros(999, np.float32)
    ref.adam(pr, g, mr, vr, np.empty(999, np.float32), 1e-2, 0.9, 0.999, 1e-8, 1)
    np.testing.assert_allclose(cp.asnumpy(bufs[0]), pr, rtol=1e-5)


# ---- on a GPU: the whole step ---------------------------------------------------------------------------------
@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.describe())
def test_cuda_step_equals_numpy_step(cp, arch):
    """Same weights, same batch, same eps: the CUDA step's losses and parameters are NumPy's."""
    rng = np.random.default_rng(1)
    data = rng.uniform(size=(64, 20)).astype(np.float32)
    p0 = VAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 2)
    betas = np.array([0.5, 0.75, 1.0, 1.0], np.float32)
    p, losses, xs, epss = _device_steps("cuda", arch, p0, data, 4, 16, betas, graph=False)
    tp, tl, txs, teps = _device_steps("twin", arch, p0, data, 4, 16, betas)
    for a, b in zip(xs + epss, txs + teps):  # the device drew what the twins draw
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    ref_p, ref_losses = _reference_steps(arch, p0, xs, [e[0] for e in epss], betas)
    np.testing.assert_allclose(losses[:, 0, :], ref_losses, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(p, ref_p, rtol=1e-3, atol=1e-5)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("k", [1, 4])
def test_graph_and_no_graph_give_the_same_losses(cp, k):
    arch = Arch(hidden=(256, 128), latent=8, likelihood="gaussian")
    data = np.random.default_rng(0).uniform(size=(2000, 784)).astype(np.float32)
    p0 = VAE(arch, NumpyOps(), np.float32).initial_params("glorot", 0)
    betas = np.ones(20, np.float32)
    pg, lg, _, _ = _device_steps("cuda", arch, p0, data, 20, 100, betas, k=k, graph=True, lr=1e-3)
    pn, ln, _, _ = _device_steps("cuda", arch, p0, data, 20, 100, betas, k=k, graph=False, lr=1e-3)
    np.testing.assert_allclose(lg, ln, rtol=1e-6)
    np.testing.assert_allclose(pg, pn, rtol=1e-6, atol=1e-7)


@gpu
@pytest.mark.gpu
def test_trainer_gpu_graph_matches_no_graph_and_resumes(tmp_path):
    """Whole epochs through the Trainer: graph == no graph; a resumed run equals an uninterrupted one."""
    from cuvae.backends.backend import get_backend
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.engine.config import TrainConfig
    from cuvae.data import load_dataset
    from cuvae.engine.events import EpochEnded
    from cuvae.engine.trainer import Trainer

    import cuvae

    subset = Path(cuvae.__file__).parent / "data" / "datasets" / "mnist-subset"  # no download on a GPU box
    ds = load_dataset("mnist", data_dir=subset, train_size=1000, test_size=200, progress=False, log=lambda m: None)
    runs = {}
    for name, graph, epochs in (("graph", True, 2), ("nograph", False, 2), ("first", True, 1)):
        cfg = TrainConfig.from_recipe("chapter", epochs=epochs, batch_size=64)
        rows = []
        Trainer(cfg, get_backend("gpu"), ds, tmp_path / name, graph=graph,
                listeners=[lambda e: rows.append(e.metrics) if isinstance(e, EpochEnded) else None]).run()
        runs[name] = rows
    cfg = TrainConfig.from_recipe("chapter", epochs=2, batch_size=64)
    rows = []
    Trainer(cfg, get_backend("gpu"), ds, tmp_path / "first", resume=load_checkpoint(tmp_path / "first"),
            listeners=[lambda e: rows.append(e.metrics) if isinstance(e, EpochEnded) else None]).run()
    for key in ("train_loss", "test_loss"):
        assert runs["graph"][-1][key] == pytest.approx(runs["nograph"][-1][key], rel=1e-6)
        assert rows[-1][key] == pytest.approx(runs["graph"][-1][key], rel=1e-6)


def test_multi_model_twin_epoch():
    """k models through MultiModel (the NumPy twins): each equals its own single-model run."""
    from cuvae.backends.multi import MultiModel

    arch = ARCHES[0]
    data = np.random.default_rng(3).uniform(size=(40, 20)).astype(np.float32)
    multi = MultiModel(arch, [4, 5], data, batch=16, lr=1e-2, init="pytorch", seed=9, engine="twin")
    sums = multi.train_epoch(1)
    assert sums.shape == (2, 3) and np.isfinite(sums).all()
    single = MultiModel(arch, [4], data, batch=16, lr=1e-2, init="pytorch", seed=9, engine="twin")
    one = single.train_epoch(1)
    # model 0 of the pair draws the same data and noise as a run of that model alone
    np.testing.assert_allclose(sums[0], one[0], rtol=1e-6)
    np.testing.assert_allclose(multi.params(0), single.params(0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(multi.params(0), multi.params(1))
