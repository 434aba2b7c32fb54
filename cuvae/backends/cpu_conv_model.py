"""The conv VAE's forward and backward on the fused NHWC layers: :class:`FastConv`.

:class:`cuvae.nn.conv_model.ConvVAE` is the specification (NCHW, the reference ops). When its
ops object offers ``conv_engine`` (:class:`NumbaConvOps`, the CPU backend's ops, does), the model
hands its passes to the engine made here, which computes the same function with the same
parameters in PyTorch's layouts; ``tests/test_cpu_conv_model.py`` checks losses and every
gradient against the reference model.

Inside, activations are NHWC rows, so the only layout work left is at the two ends: the first
convolution reads the NCHW image through a strided view, the last transposed convolution writes
NCHW logits through one, and the flattening between the convolutions and the linear layers is
absorbed by permuting the rows of ``head.W`` and the columns of ``fc.W`` (and ``fc.b``) once a
step (NCHW flatten order -> NHWC order). Every buffer lives in the workspace of its batch size.
"""

from __future__ import annotations

import numpy as np

from cuvae.backends import cpu_conv as L
from cuvae.backends.cpu_logistic import LogisticBuffers, logistic_nll_and_grad
from cuvae.backends.cpu_ops import NumbaOps


class NumbaConvOps(NumbaOps):
    """NumbaOps plus the hook :class:`~cuvae.nn.conv_model.ConvVAE` looks for: ``conv_engine``."""

    def conv_engine(self, arch, dtype):
        """The fused engine for float32/float64 models (None otherwise: the reference path runs)."""
        if np.dtype(dtype) not in (np.float32, np.float64):
            return None
        return FastConv(arch, self, dtype)


class _Buffers:
    """Everything one batch size needs; made once per workspace."""

    def __init__(self, arch, batch, dtype, grads):
        B, k, dt = batch, arch.kernel, dtype
        sizes = arch.sizes
        self.enc, self.enc_rows, self.enc_grad, self.enc_partial = [], [], [], []
        for i, (_, cin, cout) in enumerate(arch.enc_layers):
            (H, W), (Ho, Wo) = sizes[i], sizes[i + 1]
            self.enc.append(L.ConvBuffers(B * Ho * Wo, cin * k * k, cout, cin * k * k, cout, dt))
            self.enc_rows.append(np.empty((B * Ho * Wo, cout), dt))
            if grads:
                self.enc_grad.append(np.empty((B * Ho * Wo, cout), dt))
                self.enc_partial.append(np.empty((B * Ho, cout), dt))  # col2im's per-row bias-gradient sums
        flat = arch.flat_dim
        self.Wh, self.Wfc, self.bfc = np.empty((flat, arch.head_width), dt), np.empty((arch.latent, flat), dt), \
            np.empty(flat, dt)
        self.fc_rows = np.empty((B, flat), dt)
        dec = arch.dec_layers
        # the transposed convolutions' column matrices are scratch (rewritten by the backward), so one
        # buffer, as large as the largest, serves them all
        widths = [(cout * k * k, B * sizes[len(sizes) - 1 - j][0] * sizes[len(sizes) - 1 - j][1])
                  for j, (_, _, cout, _) in enumerate(dec)]
        self.dec_cols = np.empty(max(w * r for w, r in widths), dt)
        self.dec, self.dec_rows, self.dec_grad = [], [], []
        for j, (_, cin, cout, _) in enumerate(dec):
            width, rows = widths[j]
            buf = L.ConvBuffers(0, 0, cin, width, cout, dt)
            buf.cols = self.dec_cols[: rows * width].reshape(rows, width)
            self.dec.append(buf)
            if j < len(dec) - 1:
                Ho, Wo = sizes[len(sizes) - 2 - j]
                self.dec_rows.append(np.empty((B * Ho * Wo, cout), dt))
        if grads:
            self.dWh, self.dWfc, self.dbfc = np.empty_like(self.Wh), np.empty_like(self.Wfc), np.empty_like(self.bfc)
            self.fc_grad = np.empty_like(self.fc_rows)
            self.dec_grad = [np.empty_like(r) for r in self.dec_rows]
            self.top_grad = np.empty_like(self.enc_rows[-1])
        self.lik = LogisticBuffers(B, arch.image_shape[0], dt)
        self.db_last = np.empty(arch.image_shape[0], dt)


class FastConv:
    """Encode, decode, likelihood and the training step of a ConvArch on NumPy arrays."""

    def __init__(self, arch, ops, dtype):
        self.arch, self.ops, self.dtype = arch, ops, np.dtype(dtype)
        C, h, w = arch.channels[-1], *arch.sizes[-1]
        # perm[(i, j, c)] = c*h*w + i*w + j: the NCHW flat index of each NHWC flat position
        self.perm = np.arange(C * h * w).reshape(C, h, w).transpose(1, 2, 0).reshape(-1).copy()

    def fits(self, *arrays):
        """Arrays the fused kernels take as they are: C-contiguous, of the model's dtype."""
        return all(a.dtype == self.dtype and a.flags.c_contiguous for a in arrays)

    def input(self, x):
        return x if self.fits(x) else np.ascontiguousarray(x, self.dtype)

    def _bufs(self, ws, grads=False):
        b = getattr(ws, "fast", None)
        if b is None or (grads and not b.enc_grad):
            b = _Buffers(self.arch, ws.batch, self.dtype, grads)
            ws.fast = b
        return b

    # ---- forward -----------------------------------------------------------------------------
    def encode(self, P, x, ws, grads=False):
        a, b = self.arch, self._bufs(ws, grads)
        B = x.shape[0]
        h4 = x.reshape(B, *a.image_shape).transpose(0, 2, 3, 1)  # NHWC view of the NCHW image
        for i, (name, _, cout) in enumerate(a.enc_layers):
            rows = b.enc_rows[i]
            L.conv2d_forward(h4, P[f"{name}.W"], P[f"{name}.b"], a.stride, a.padding, rows, b.enc[i], relu=True)
            h4 = rows.reshape(B, *a.sizes[i + 1], cout)
        np.take(P["head.W"], self.perm, axis=0, out=b.Wh)
        self.ops.linear(b.enc_rows[-1].reshape(B, -1), b.Wh, P["head.b"], ws.act["head"])
        return ws.act["head"]

    def decode(self, P, z, ws, grads=False):
        a, b = self.arch, self._bufs(ws, grads)
        B = z.shape[0]
        np.take(P["fc.W"], self.perm, axis=1, out=b.Wfc)
        np.take(P["fc.b"], self.perm, out=b.bfc)
        self.ops.relu(self.ops.linear(z, b.Wfc, b.bfc, b.fc_rows))
        rows, hw = b.fc_rows.reshape(-1, a.channels[-1]), a.sizes[-1]
        dec, out = a.dec_layers, ws.act["out"]
        for j, (name, _, cout, _) in enumerate(dec):
            last = j == len(dec) - 1
            size = a.sizes[len(a.sizes) - 2 - j]
            out4 = out.reshape(B, cout, *size).transpose(0, 2, 3, 1) if last else \
                b.dec_rows[j].reshape(B, *size, cout)
            L.conv_transpose2d_forward(rows, hw, P[f"{name}.W"], P[f"{name}.b"], a.stride, a.padding, out4, b.dec[j],
                                       relu=not last)
            if not last:
                rows, hw = b.dec_rows[j], size
        ws.logscale = P.get("out.logscale")
        return out

    def recon(self, logits, x, ws):
        """Per-example -log p(x | logits) (logistic only: the fused pass; scratch in ws.pixels)."""
        b = self._bufs(ws)
        return logistic_nll_and_grad(logits, x, ws.logscale, 1.0, ws.pixels, b.lik).copy()

    # ---- forward + backward ---------------------------------------------------------------
    def loss_and_grad(self, P, G, x, eps, beta, ws, model):
        a, ops = self.arch, self.ops
        b = self._bufs(ws, grads=True)
        B = x.shape[0]
        scale = 1.0 / B
        head = self.encode(P, x, ws, True)
        mean, logvar = model.split_head(head)
        z = model.sample_z(mean, logvar, eps, ws)
        logits = self.decode(P, z, ws, True)

        dout = ws.grad["out"]
        C = a.image_shape[0]
        if a.likelihood == "logistic":
            nll = logistic_nll_and_grad(logits, x, P["out.logscale"], scale, dout, b.lik, G["out.logscale"],
                                        b.db_last)
            recon = nll.sum() * scale
        else:
            recon = model.recon_per_example(logits, x, ws).sum() * scale
            (ops.bernoulli_nll_grad if a.likelihood == "bernoulli" else ops.sse_grad)(logits, x, scale, dout)
            np.sum(dout.reshape(B, C, -1), axis=(0, 2), out=b.db_last)

        # decoder, last transposed convolution first; each ReLU mask (and the bias gradient below
        # it) is one pass over the product's output
        dec, sizes = a.dec_layers, a.sizes
        db = b.db_last
        for j in range(len(dec) - 1, -1, -1):
            name, _, cout, _ = dec[j]
            size = sizes[len(sizes) - 2 - j]
            d4 = dout.reshape(B, cout, *size).transpose(0, 2, 3, 1) if j == len(dec) - 1 else \
                b.dec_grad[j].reshape(B, *size, cout)
            x_rows = b.dec_rows[j - 1] if j > 0 else b.fc_rows.reshape(-1, a.channels[-1])
            dx_rows = b.dec_grad[j - 1] if j > 0 else b.fc_grad.reshape(-1, a.channels[-1])
            hw = sizes[len(sizes) - 1 - j]
            G[f"{name}.b"][...] = db
            L.conv_transpose2d_backward(d4, x_rows, hw, P[f"{name}.W"], G[f"{name}.W"], G[f"{name}.b"], a.stride,
                                        a.padding, b.dec[j], dx_rows, db_done=True)
            if j > 0:
                db = G[dec[j - 1][0] + ".b"]
                L.mask_colsum(dx_rows, x_rows, db, b.dec[j - 1].partial)
        ops.relu_backward(b.fc_grad, b.fc_rows)
        ops.linear_backward(b.fc_grad, z, b.Wfc, b.dWfc, b.dbfc, ws.dz)
        G["fc.W"][:, self.perm] = b.dWfc
        G["fc.b"][self.perm] = b.dbfc

        kl = model.latent_backward(ws, mean, logvar, eps, beta, scale)
        dhead = ws.grad["head"]

        # encoder, head first
        enc = a.enc_layers
        top = b.enc_rows[-1]
        ops.linear_backward(dhead, top.reshape(B, -1), b.Wh, b.dWh, G["head.b"], b.top_grad.reshape(B, -1))
        G["head.W"][self.perm] = b.dWh
        L.mask_colsum(b.top_grad, top, G[enc[-1][0] + ".b"], b.enc[-1].partial)
        d = b.top_grad
        for i in range(len(enc) - 1, -1, -1):
            name, cin, _ = enc[i]
            if i > 0:
                below = b.enc_rows[i - 1]
                dx4 = b.enc_grad[i - 1].reshape(B, *sizes[i], cin)
                L.conv2d_backward(d, P[f"{name}.W"], G[f"{name}.W"], None, a.stride, a.padding, b.enc[i], dx4=dx4,
                                  mask4=below.reshape(dx4.shape), dx_partial=b.enc_partial[i - 1])
                np.sum(b.enc_partial[i - 1], axis=0, out=G[enc[i - 1][0] + ".b"])
                d = b.enc_grad[i - 1]
            else:
                L.conv2d_backward(d, P[f"{name}.W"], G[f"{name}.W"], None, a.stride, a.padding, b.enc[i])
        return recon + beta * kl, recon, kl
