"""The conv VAE's device step (cuvae.backends.gpu_conv_step), run on the kernels' NumPy twins, against the
specification: ConvVAE.loss_and_grad + Adam on the same batches and noise; and, marked ``gpu`` (skipped
without CuPy and a CUDA device), the step on a GPU against the twins. tests/test_emulated_conv.py runs
the CUDA side on the emulated device with the helpers below."""

import numpy as np
import pytest

from cuvae.backends.gpu_conv_step import ConvDeviceStep, pack_index
from cuvae.nn.conv_model import ConvArch, ConvVAE
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam
from step_runs import run_epochs

ARCHES = [ConvArch(image_shape=(1, 8, 8), channels=(2, 3), latent=2, likelihood="bernoulli"),
          ConvArch(image_shape=(1, 8, 8), channels=(2, 3), latent=2, likelihood="gaussian", kind="ae"),
          ConvArch(image_shape=(2, 8, 8), channels=(3,), latent=3, likelihood="logistic"),
          ConvArch(image_shape=(1, 7, 7), channels=(2, 2), latent=2, likelihood="bernoulli")]  # output padding


def pixel_data(arch, n=10, seed=0):
    return (np.random.default_rng(seed).integers(0, 256, size=(n, arch.in_dim)) / 255).astype(np.float32)


def test_pack_index_is_the_fast_cpu_engines_layout():
    from cuvae.backends.cpu_conv import pack_weight
    from cuvae.backends.cpu_conv_model import FastConv

    arch = ARCHES[2]
    model = ConvVAE(arch, NumpyOps(), np.float32)
    p = model.initial_params("pytorch", 1)
    pack = pack_index(arch)
    assert np.array_equal(np.sort(pack), np.arange(p.size))
    packed, P = arch.layout().views(p[pack]), model.layout.views(p)
    W = P["enc1.W"]
    np.testing.assert_array_equal(packed["enc1.W"].reshape(W.shape[0], -1),
                                  pack_weight(W, np.empty((W.shape[0], W[0].size), np.float32)))
    perm = FastConv(arch, None, np.float32).perm
    np.testing.assert_array_equal(packed["head.W"], P["head.W"][perm])
    np.testing.assert_array_equal(packed["fc.W"], P["fc.W"][:, perm])
    np.testing.assert_array_equal(packed["out.logscale"], P["out.logscale"])


@pytest.mark.parametrize("binarize", [False, True], ids=["binarize-off", "binarize-on"])
@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.describe())
def test_twin_conv_step_equals_model_step(arch, binarize):
    model = ConvVAE(arch, NumpyOps(), np.float32)
    p0 = model.initial_params("pytorch", 1)
    p, g, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0)
    st = ConvDeviceStep(arch, p, g, m, v, pixel_data(arch), seed=3, lr=1e-2, engine="twin", binarize=binarize)
    betas = np.array([0.5, 0.7, 1.0], np.float32)
    st.start_epoch(1, betas, 0)
    rp, rg = p0.copy(), np.zeros_like(p0)
    P, G = model.layout.views(rp), model.layout.views(rg)
    adam = Adam(model.ops, rp.size, np.float32, lr=1e-2)
    epoch_sum = np.zeros(3)
    for t, rows in enumerate((4, 4, 2)):
        st.step(rows)
        bufs = st._plans[rows].bufs
        x = bufs["x"].copy()
        if binarize:
            assert set(np.unique(x)) <= {0.0, 1.0}
        want = [float(w) for w in model.loss_and_grad(P, G, x, bufs["eps"].copy(), betas[t])]
        np.testing.assert_allclose(st.loss, want, rtol=2e-5, atol=1e-6)
        epoch_sum += np.array(want) * rows
        np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-5 * np.abs(rg).max())
        adam.step(rp, rg)
        np.testing.assert_allclose(p, rp, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.read_sums()[0], epoch_sum, rtol=2e-5, atol=1e-5)  # the epoch's sums


def test_conv_step_trains_one_model():
    arch = ARCHES[0]
    p = np.zeros(arch.layout().size, np.float32)
    with pytest.raises(ValueError, match="one model"):
        ConvDeviceStep(arch, np.tile(p, 2), *(np.zeros(2 * p.size, np.float32) for _ in range(3)), pixel_data(arch),
                       k=2, engine="twin")


def _epochs(arch, data, first, last, p, m, v):
    st = ConvDeviceStep(arch, p, np.zeros_like(p), m, v, data, seed=3, lr=1e-2, engine="twin", binarize=True)
    losses = []
    for epoch in range(first, last + 1):
        st.start_epoch(epoch, np.ones(3, np.float32), (epoch - 1) * 3)
        for rows in (4, 4, 2):
            st.step(rows)
            losses.append(st.loss.copy())
    st.close()
    return np.array(losses)


def test_resumed_conv_step_replays_the_uninterrupted_run():
    """Epochs 1-2 in one go == epoch 1, then a new step from the saved weights and moments for epoch 2."""
    arch = ARCHES[2]
    data = pixel_data(arch)
    p0 = ConvVAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 1)
    whole = [p0.copy(), np.zeros_like(p0), np.zeros_like(p0)]
    lw = _epochs(arch, data, 1, 2, *whole)
    part = [p0.copy(), np.zeros_like(p0), np.zeros_like(p0)]
    l1 = _epochs(arch, data, 1, 1, *part)
    l2 = _epochs(arch, data, 2, 2, *part)  # a fresh step on the weights and moments epoch 1 left
    np.testing.assert_array_equal(np.concatenate([l1, l2]), lw)
    for got, want in zip(part, whole):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(l1, l2)  # epoch 2 saw other batches and noise


# ---- whole epochs, on the twins or a device (the emulated one too) -------------------------------------------
def run_conv_epochs(engine, arch, data, batch, epochs, *, graph=False, binarize=False):
    """Whole epochs through ConvDeviceStep; returns (per-step losses, params, m, v, the step) on the host."""
    xp = np if engine == "twin" else __import__("cupy")
    p0 = ConvVAE(arch, NumpyOps(), np.float32).initial_params("pytorch", 3)
    p = xp.asarray(p0)
    g, m, v = xp.zeros_like(p), xp.zeros_like(p), xp.zeros_like(p)
    st = ConvDeviceStep(arch, p, g, m, v, xp.asarray(data), seed=11, lr=1e-2, engine=engine, graph=graph,
                        binarize=binarize)
    return run_epochs(st, xp, p, m, v, data.shape[0], batch, epochs)


def assert_same_run(a, b):
    """Device run == twin run, to float32 rounding (test_gpu's CUDA-vs-NumPy tolerances)."""
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-5)  # losses
    np.testing.assert_allclose(a[1], b[1], rtol=1e-3, atol=1e-5)  # parameters
    np.testing.assert_allclose(a[2], b[2], rtol=1e-3, atol=1e-6)  # Adam's moments


def _has_gpu():
    try:
        import cupy

        return bool(cupy.is_available())
    except Exception:  # noqa: BLE001 - no CuPy, or no usable device
        return False


gpu = pytest.mark.skipif(not _has_gpu(), reason="needs CuPy and a CUDA device")


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("arch", ARCHES, ids=lambda a: a.describe())
def test_cuda_conv_step_equals_twin_engine(arch):
    got = run_conv_epochs("cuda", arch, pixel_data(arch), 4, 2, graph=True, binarize=True)
    assert got[4].use_graph and got[4].graph_failed is None
    assert_same_run(got, run_conv_epochs("twin", arch, pixel_data(arch), 4, 2, binarize=True))


@gpu
@pytest.mark.gpu
def test_cuda_conv_graph_equals_uncaptured_at_mnist_size():
    arch = ConvArch(image_shape=(1, 28, 28), channels=(32, 64, 128), latent=8, likelihood="bernoulli")
    data = pixel_data(arch, 400)
    a, b = run_conv_epochs("cuda", arch, data, 100, 2, graph=True), run_conv_epochs("cuda", arch, data, 100, 2)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-7)
