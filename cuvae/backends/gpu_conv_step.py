"""The conv VAE's device-resident training step: :class:`ConvDeviceStep`, the MLP's :class:`DeviceStep`
design for a :class:`~cuvae.nn.conv_model.ConvArch`.

Data, shuffle, noise, forward, backward and Adam run on the GPU, in one CUDA graph when it can be
captured; the epochs, counters, streams, graph capture and fallbacks are :class:`DeviceStep`'s (this
class changes the buffers and the kernels of one step only). One model (k = 1).

The layers are the fast CPU engine's (:mod:`cuvae.backends.cpu_conv_model`): activations are NHWC
rows, a convolution is ``im2col`` + one GEMM (+ bias and ReLU), a transposed convolution one GEMM
+ a gather ``col2im`` with the bias and ReLU fused; the first convolution reads the NCHW image and
the last transposed convolution writes NCHW logits through strides. The step works in a *packed*
copy of the parameters (conv weights with (u, v, c) columns; ``head.W``'s rows and ``fc``'s
columns in NHWC flatten order): one ``gather_index`` packs them at the start of the step, one
unpacks the gradients before Adam, so the caller's parameters, gradients and moments keep
PyTorch's layout (checkpoints are the same as on the CPU).

Engines as :class:`DeviceStep`'s: ``cuda`` (CuPy, ``kernels/step.cu`` + ``kernels/conv.cu``,
cuBLAS through ctypes) and ``twin`` (NumPy, the kernels' twins, ``np.matmul``), the latter tested
against :class:`~cuvae.nn.conv_model.ConvVAE` so the orchestration is checked without a GPU.
"""

from __future__ import annotations

import numpy as np

from cuvae.backends.gpu_step import STREAM_EPS, DeviceStep, TwinKernels, _Plan
from cuvae.backends.kernels import conv_twins

LIKELIHOOD_CODES = {"bernoulli": 0, "gaussian": 1, "logistic": 2}  # pixel_nll_grad's `likelihood`


class ConvTwinKernels(TwinKernels):
    """The NumPy twins of step.cu's and conv.cu's kernels behind ConvCudaKernels' interface."""

    def __getattr__(self, name):
        return getattr(conv_twins, name) if hasattr(conv_twins, name) else super().__getattr__(name)


def pack_index(arch) -> np.ndarray:
    """pack[j] = the position in the flat parameters of the packed parameters' entry j."""
    layout = arch.layout()
    C, h, w = arch.channels[-1], *arch.sizes[-1]
    # NCHW flat index of each NHWC flat position (i, j, c)
    perm = np.arange(C * h * w).reshape(C, h, w).transpose(1, 2, 0).reshape(-1)
    parts, off = [], 0
    for name, shape in layout.entries:
        size = int(np.prod(shape))
        local = np.arange(size).reshape(shape)
        if name.endswith(".W") and len(shape) == 4:  # (A, B, k, k) -> (A, k, k, B): columns (u, v, b)
            local = local.transpose(0, 2, 3, 1)
        elif name == "head.W":
            local = local[perm]
        elif name == "fc.W":
            local = local[:, perm]
        elif name == "fc.b":
            local = local[perm]
        parts.append(off + local.reshape(-1))
        off += size
    return np.concatenate(parts).astype(np.int64)


class ConvDeviceStep(DeviceStep):
    """One conv model's training step on device-resident data; arguments as :class:`DeviceStep`'s."""

    def __init__(self, arch, params, grads, m, v, data, *, k: int = 1, **kwargs):
        if k != 1:
            raise ValueError(f"the conv step trains one model at a time, got k={k}")
        super().__init__(arch, params, grads, m, v, data, k=1, **kwargs)
        pack = pack_index(arch)
        xp = self.xp
        with self._on_stream():
            self.pack_idx = xp.asarray(pack)
            self.unpack_idx = xp.asarray(np.argsort(pack).astype(np.int64))
            self.Pk = xp.zeros(self.P, np.float32)  # the packed parameters, rewritten at every step's start
            self.Gk = xp.zeros(self.P, np.float32)  # the packed gradients, unpacked into ``grads`` before Adam
        self.wait_for_caller()

    def _new_kernels(self, engine: str):
        if engine == "twin":
            return ConvTwinKernels()
        from cuvae.backends.cuda_conv_ops import ConvCudaKernels

        return ConvCudaKernels()

    # ---- views of the packed buffers ------------------------------------------------------------------
    def _view(self, flat, name, shape=None):
        off, full = self.offsets[name], self.layout.shapes[name]
        size = int(np.prod(full))
        return flat[off: off + size].reshape(shape if shape is not None else (size,))

    def _mat(self, flat, name):
        """A packed weight as a (1, rows, cols) GEMM operand: 4-D (A, B, k, k) -> (A, k*k*B)."""
        shape = self.layout.shapes[name]
        return self._view(flat, name, (1, shape[0], int(np.prod(shape[1:]))))

    # ---- buffers for one batch size -------------------------------------------------------------------
    def _plan(self, rows: int) -> _Plan:
        plan = self._plans.get(rows)
        if plan is not None:
            return plan
        xp, a, B = self.xp, self.arch, rows
        k, sizes, L = a.kernel, a.sizes, a.latent
        z = lambda *shape: xp.zeros(shape, np.float32)  # noqa: E731
        with self._on_stream():
            bufs = {"x": z(B, self.dim), "head": z(B, a.head_width), "dhead": z(B, a.head_width),
                    "eps": z(B, L), "rowloss": z(B), "part": z(B * a.image_shape[0] * 3),
                    "logits": z(B, self.dim), "dlogits": z(B, self.dim),
                    "fc": z(B, a.flat_dim), "dfc": z(B, a.flat_dim), "enc": [], "denc": [], "cols": [],
                    "dec": [], "ddec": []}
            vae = a.kind == "vae"
            bufs["z"] = z(B, L) if vae else bufs["head"]
            bufs["dz"] = z(B, L) if vae else bufs["dhead"]
            bufs["klrow"] = z(B) if vae else None
            for i, (_, cin, cout) in enumerate(a.enc_layers):
                n = B * sizes[i + 1][0] * sizes[i + 1][1]
                bufs["cols"].append(z(n, k * k * cin))
                bufs["enc"].append(z(n, cout))
                bufs["denc"].append(z(n, cout))
            widest = 0
            for j, (_, cin, cout, _) in enumerate(a.dec_layers):
                H, W = sizes[len(sizes) - 1 - j]  # the transposed convolution's input grid
                widest = max(widest, B * H * W * k * k * cout)
                if j < len(a.dec_layers) - 1:
                    Ho, Wo = sizes[len(sizes) - 2 - j]
                    bufs["dec"].append(z(B * Ho * Wo, cout))
                    bufs["ddec"].append(z(B * Ho * Wo, cout))
            bufs["dcols"] = z(widest)  # the transposed convolutions' column matrices are scratch: one buffer
        plan = self._plans[rows] = _Plan(rows, bufs)
        return plan

    # ---- the step, kernel by kernel ------------------------------------------------------------------------
    def _launch(self, plan: _Plan) -> None:
        kern, mm, bufs, a = self.kern, self.gemm.mm, plan.bufs, self.arch
        B, L, D, P = plan.rows, a.latent, self.dim, self.P
        Pk, Gk = self.Pk, self.Gk
        k, s, p, sizes = a.kernel, a.stride, a.padding, a.sizes
        C0, H0, W0 = a.image_shape
        nchw = (C0 * H0 * W0, W0, 1, H0 * W0)  # element strides (n, h, w, c) of an NCHW image
        vae = a.kind == "vae"
        b = lambda flat, name: self._view(flat, f"{name}.b")  # noqa: E731
        m3 = lambda arr, r, c: arr.reshape(1, r, c)  # noqa: E731

        kern.gather_index(self.params, self.pack_idx, Pk, P)
        if vae:
            kern.normal_philox(bufs["eps"], B * L, self.rng_counter, self.key_dev, STREAM_EPS)
        kern.gather_rows(self.data, self.perm, self.state, bufs["x"], B, D, self.binarize, self.key_dev)

        # encoder: im2col + GEMM + bias and ReLU; the first layer reads the NCHW image
        src, strides = bufs["x"], nchw
        for i, (name, cin, cout) in enumerate(a.enc_layers):
            (H, W), (Ho, Wo) = sizes[i], sizes[i + 1]
            n, cols, out = B * Ho * Wo, bufs["cols"][i], bufs["enc"][i]
            kern.im2col_nhwc(src, *strides, B, H, W, cin, k, s, p, Ho, Wo, cols)
            mm(m3(cols, n, k * k * cin), self._mat(Pk, f"{name}.W"), m3(out, n, cout), tb=True)
            kern.bias_act(out, b(Pk, name), P, 1, n, cout, True)
            src, strides = out, (Ho * Wo * cout, Wo * cout, cout, 1)
        F, hw = a.flat_dim, a.head_width
        top = bufs["enc"][-1]
        mm(m3(top, B, F), self._view(Pk, "head.W", (1, F, hw)), m3(bufs["head"], B, hw))
        kern.bias_act(bufs["head"], b(Pk, "head"), P, 1, B, hw, False)
        if vae:
            kern.reparam(bufs["head"], bufs["eps"], bufs["z"], B, L)
        mm(m3(bufs["z"], B, L), self._view(Pk, "fc.W", (1, L, F)), m3(bufs["fc"], B, F))
        kern.bias_act(bufs["fc"], b(Pk, "fc"), P, 1, B, F, True)

        # decoder: GEMM + col2im with bias (and ReLU); the last writes NCHW logits
        dec = a.dec_layers
        src = bufs["fc"]
        for j, (name, cin, cout, _) in enumerate(dec):
            (H, W), (Ho, Wo) = sizes[len(sizes) - 1 - j], sizes[len(sizes) - 2 - j]
            last = j == len(dec) - 1
            n = B * H * W
            dcols = bufs["dcols"][: n * k * k * cout]
            mm(m3(src, n, cin), self._mat(Pk, f"{name}.W"), m3(dcols, n, k * k * cout))
            out = bufs["logits"] if last else bufs["dec"][j]
            ostr = nchw if last else (Ho * Wo * cout, Wo * cout, cout, 1)
            kern.col2im_nhwc(dcols, B, Ho, Wo, cout, k, s, p, H, W, b(Pk, name), 1 if last else 2, None, out, *ostr)
            src = out

        # likelihood and its gradient; per-channel sums give the last layer's bias gradient
        last = dec[-1][0]
        logistic = a.likelihood == "logistic"
        kern.pixel_nll_grad(bufs["logits"], bufs["x"], self._view(Pk, "out.logscale") if logistic else None,
                            bufs["dlogits"], bufs["part"], C0, H0 * W0, LIKELIHOOD_CODES[a.likelihood], 1.0 / B)
        kern.pixel_finish(bufs["part"], bufs["rowloss"], self._view(Gk, "out.logscale") if logistic else None,
                          b(Gk, last), B, C0)

        # decoder backward: im2col of d(out) (NCHW for the last layer), dW, dx, then the ReLU mask of the
        # layer below with its bias gradient
        for j in range(len(dec) - 1, -1, -1):
            name, cin, cout, _ = dec[j]
            (H, W), (Ho, Wo) = sizes[len(sizes) - 1 - j], sizes[len(sizes) - 2 - j]
            n = B * H * W
            dcols = bufs["dcols"][: n * k * k * cout]
            d, dstr = (bufs["dlogits"], nchw) if j == len(dec) - 1 else \
                (bufs["ddec"][j], (Ho * Wo * cout, Wo * cout, cout, 1))
            kern.im2col_nhwc(d, *dstr, B, Ho, Wo, cout, k, s, p, H, W, dcols)
            x_rows, dx_rows = (bufs["dec"][j - 1], bufs["ddec"][j - 1]) if j > 0 else (bufs["fc"], bufs["dfc"])
            mm(m3(x_rows, n, cin), m3(dcols, n, k * k * cout), self._mat(Gk, f"{name}.W"), ta=True)
            mm(m3(dcols, n, k * k * cout), self._mat(Pk, f"{name}.W"), m3(dx_rows, n, cin), tb=True)
            if j > 0:
                kern.relu_back_bias_grad(dx_rows, x_rows, b(Gk, dec[j - 1][0]), P, n, cin, 1)
        kern.relu_back_bias_grad(bufs["dfc"], bufs["fc"], b(Gk, "fc"), P, B, F, 1)
        mm(m3(bufs["z"], B, L), m3(bufs["dfc"], B, F), self._view(Gk, "fc.W", (1, L, F)), ta=True)
        mm(m3(bufs["dfc"], B, F), self._view(Pk, "fc.W", (1, L, F)), m3(bufs["dz"], B, L), tb=True)
        if vae:
            kern.latent_backward(bufs["head"], bufs["eps"], bufs["dz"], bufs["dhead"], bufs["klrow"], self.betas,
                                 self.state, B, B, L)

        # encoder backward: head, then each convolution: dW from its columns, dx by GEMM + col2im into the
        # columns' buffer, then the ReLU mask and bias gradient of the layer below
        kern.relu_back_bias_grad(bufs["dhead"], None, b(Gk, "head"), P, B, hw, 1)
        mm(m3(top, B, F), m3(bufs["dhead"], B, hw), self._view(Gk, "head.W", (1, F, hw)), ta=True)
        enc = a.enc_layers
        dtop = bufs["denc"][-1]
        mm(m3(bufs["dhead"], B, hw), self._view(Pk, "head.W", (1, F, hw)), m3(dtop, B, F), tb=True)
        Ht, Wt = sizes[-1]
        kern.relu_back_bias_grad(dtop, top, b(Gk, enc[-1][0]), P, B * Ht * Wt, enc[-1][2], 1)
        for i in range(len(enc) - 1, -1, -1):
            name, cin, cout = enc[i]
            (H, W), (Ho, Wo) = sizes[i], sizes[i + 1]
            n, cols, d = B * Ho * Wo, bufs["cols"][i], bufs["denc"][i]
            mm(m3(d, n, cout), m3(cols, n, k * k * cin), self._mat(Gk, f"{name}.W"), ta=True)
            if i == 0:
                break
            mm(m3(d, n, cout), self._mat(Pk, f"{name}.W"), m3(cols, n, k * k * cin))
            dx = bufs["denc"][i - 1]
            kern.col2im_nhwc(cols, B, H, W, cin, k, s, p, Ho, Wo, None, 0, None, dx, H * W * cin, W * cin, cin, 1)
            kern.relu_back_bias_grad(dx, bufs["enc"][i - 1], b(Gk, enc[i - 1][0]), P, B * H * W, cin, 1)

        kern.finish_step(bufs["rowloss"], bufs["klrow"], self.betas, self.state, self.sums, self.loss, B, 1)
        kern.gather_index(Gk, self.unpack_idx, self.grads, P)
        kern.adam_flat(self.params, self.grads, self.m, self.v, P, self.state, self.lr, self.beta1, self.beta2,
                       self.eps)
        kern.advance(self.state, self.rng_counter, B)
