"""The conv VAE's device step (cuvae.backends.gpu_conv_step), run on the kernels' NumPy twins, against the
specification: ConvVAE.loss_and_grad + Adam on the same batches and noise. (On the emulated device, the
CUDA kernels against these twins: tests/test_emulated_conv.py.)"""

import numpy as np
import pytest

from cuvae.backends.gpu_conv_step import ConvDeviceStep, pack_index
from cuvae.nn.conv_model import ConvArch, ConvVAE
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam

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
