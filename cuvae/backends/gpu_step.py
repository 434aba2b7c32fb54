"""The device-resident training step: data, shuffle, noise, forward, backward and Adam on the GPU,
captured in one CUDA graph and replayed.

:class:`DeviceStep` trains ``k`` models of one :class:`~cuvae.nn.model.Arch` at once (k = 1 for the
trainer; :mod:`cuvae.multi` uses k > 1): parameters, gradients and Adam moments are flat (k * P,
model i at offset i * P), GEMMs are batched over the models, every elementwise chain is one fused
kernel, and the per-step scalars (step in epoch, batch offset, Adam's step, the RNG counter) live in
device memory, advanced by the last kernel of the step. Nothing is allocated inside a step.

The same orchestration runs on two engines:
- ``cuda``: CuPy arrays, the kernels of ``kernels/step.cu`` and cuBLAS through ctypes; captured in a
  CUDA graph unless ``graph=False`` or capture fails (then it says why in one line and runs uncaptured);
- ``twin``: NumPy arrays, the kernels' NumPy twins and ``np.matmul``: the CPU specification of the
  step, tested against :class:`~cuvae.nn.model.VAE` so the orchestration is checked without a GPU.

Randomness: epoch e of seed s keys Philox with (s, e); the shuffle, the eps of step t (counter t)
and dynamic binarisation are pure functions of (s, e, t), so a resumed run replays an epoch exactly.
The key, like the counters, lives in device memory, so a graph captured once serves every epoch.

Streams: the step runs on its own non-blocking stream, which waits (:meth:`DeviceStep.wait_for_caller`)
for the work queued on the caller's current stream when the step is built and at every
:meth:`~DeviceStep.start_epoch`: the caller's writes to parameters, moments and data come first.
Call ``wait_for_caller`` after writing them at any other time, and :meth:`~DeviceStep.close`
(idempotent; it synchronises first) before freeing or saving what the step writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cuvae.backends.kernels import twins
from cuvae.nn.model import Arch

STREAM_EPS, STREAM_SHUFFLE = 1, 2


class TwinKernels:
    """The NumPy twins behind :class:`cuvae.backends.cuda_ops.CudaKernels`' interface."""

    xp = np

    def compile(self):
        pass

    def __getattr__(self, name):
        return getattr(twins, name)


def philox_key(seed: int, epoch: int) -> tuple[int, int]:
    return int(seed) & 0xFFFFFFFF, (int(epoch) * 0x9E3779B1 + (int(seed) >> 32)) & 0xFFFFFFFF


class ArrayGemm:
    """:class:`cuvae.backends.cuda_ops.CublasGemm`'s interface on ``xp.matmul`` (CuPy uncaptured, or NumPy).

    ``mm(A, B, C, ta, tb)``: C[i] = op(A[i]) @ op(B[i]) for 3-D views (k, rows, cols).
    """

    def __init__(self, xp):
        self.xp = xp

    def mm(self, A, B, C, ta=False, tb=False):
        a = A.transpose(0, 2, 1) if ta else A
        b = B.transpose(0, 2, 1) if tb else B
        self.xp.matmul(a, b, out=C)

    def close(self):
        pass


@dataclass
class _Plan:
    rows: int
    bufs: dict
    graph: object = None


class DeviceStep:
    """k models' training step on device-resident data; see the module doc.

    ``params``, ``grads``, ``m``, ``v``: flat (k * P,) float32 arrays on the engine's device (the
    caller's, updated in place). ``data``: (N, D) float32 images in [0, 1] on the device.
    """

    def __init__(self, arch: Arch, params, grads, m, v, data, *, k: int = 1, seed: int = 0, lr: float = 1e-3,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, binarize: bool = False,
                 engine: str = "cuda", graph: bool = True, tf32: bool = False, log=None):
        self.arch, self.k, self.seed = arch, int(k), int(seed)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.binarize, self.log = binarize, log or (lambda msg: None)
        self.layout = arch.layout()
        self.P = self.layout.size
        self.offsets, off = {}, 0
        for name, shape in self.layout.entries:
            self.offsets[name] = off
            off += int(np.prod(shape))
        if engine == "cuda":
            import cupy

            from cuvae.backends.cuda_ops import CublasGemm, CublasUnavailable

            self.xp = cupy
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.kern = self._new_kernels("cuda")
            self.use_graph = graph
            try:
                self.gemm, self.gemm_kind = CublasGemm(self.stream, tf32=tf32), "cuBLAS (ctypes)"
            except (CublasUnavailable, OSError) as err:
                self.gemm, self.gemm_kind = ArrayGemm(cupy), "cupy.matmul"
                if graph:
                    self.log(f"CUDA graph off: {err}; running the step uncaptured (cupy.matmul cannot be captured)")
                self.use_graph = False
            if tf32 and self.gemm_kind == "cupy.matmul":
                self.log("--tf32 needs the ctypes cuBLAS path; GEMMs run in fp32")
        elif engine == "twin":
            self.xp, self.stream, self.kern, self.use_graph = np, None, self._new_kernels("twin"), False
            self.gemm, self.gemm_kind = ArrayGemm(np), "np.matmul"
        else:
            raise ValueError(f"engine must be 'cuda' or 'twin', got {engine!r}")
        xp = self.xp
        self.params, self.grads, self.m, self.v, self.data = params, grads, m, v, data
        self.n, self.dim = data.shape
        with self._on_stream():
            self.state = xp.zeros(4, np.int64)
            self.rng_counter = xp.zeros(1, np.int64)
            self.sums = xp.zeros(3 * self.k, np.float64)
            self.loss = xp.zeros(3 * self.k, np.float32)
            self.perm = xp.zeros(self.n, np.int64)
            self._keys = xp.zeros(self.n, np.uint32)
            self.betas = xp.ones(1, np.float32)
            self.key = philox_key(self.seed, 0)
            self.key_dev = xp.asarray(np.array(self.key, np.uint32))  # read by the kernels (and the graph)
        self._plans: dict[int, _Plan] = {}
        self.graph_failed = None
        self._n_betas = self._host_step = self._host_offset = 0
        self._closed = False
        try:
            self.kern.compile()  # CuPy compiles on first use: fail here, where the trainer falls back
        except Exception:
            self.gemm.close()
            raise
        self.wait_for_caller()

    # ---- helpers ----------------------------------------------------------------------------------------
    def _new_kernels(self, engine: str):
        """The kernels the step launches: step.cu's on ``cuda``, their twins on ``twin``."""
        if engine == "twin":
            return TwinKernels()
        from cuvae.backends.cuda_ops import CudaKernels

        return CudaKernels()

    def wait_for_caller(self) -> None:
        """Order the step's stream after the work queued so far on the caller's current stream."""
        if self.stream is not None:
            ev = self.xp.cuda.Event(disable_timing=True)
            ev.record(self.xp.cuda.get_current_stream())
            self.stream.wait_event(ev)

    def _on_stream(self):
        if self.stream is None:
            from contextlib import nullcontext

            return nullcontext()
        return self.stream

    def _strided(self, flat, offset, shape, stride):
        """(k, *shape) view of ``flat`` starting at ``offset``, models ``stride`` elements apart."""
        lib = self.xp.lib.stride_tricks
        item = flat.itemsize
        base = flat[offset:]
        inner = [int(np.prod(shape[i + 1:])) * item for i in range(len(shape))]
        return lib.as_strided(base, shape=(self.k, *shape), strides=(stride * item, *inner))

    def W(self, flat, name):
        return self._strided(flat, self.offsets[f"{name}.W"], self.layout.shapes[f"{name}.W"], self.P)

    def b(self, flat, name):
        return flat[self.offsets[f"{name}.b"]:]

    def _plan(self, rows: int) -> _Plan:
        plan = self._plans.get(rows)
        if plan is None:
            xp, k, a = self.xp, self.k, self.arch
            with self._on_stream():
                bufs = {"x": xp.zeros((rows, self.dim), np.float32), "act": {}, "grad": {}}
                for name, _, fo in a.linears:
                    bufs["act"][name] = xp.zeros((k, rows, fo), np.float32)
                    bufs["grad"][name] = xp.zeros((k, rows, fo), np.float32)
                L = a.latent
                bufs["eps"] = xp.zeros((k, rows, L), np.float32)
                bufs["z"] = xp.zeros((k, rows, L), np.float32) if a.kind == "vae" else bufs["act"]["head"]
                bufs["dz"] = xp.zeros((k, rows, L), np.float32) if a.kind == "vae" else bufs["grad"]["head"]
                bufs["rowloss"] = xp.zeros(k * rows, np.float32)
                bufs["klrow"] = xp.zeros(k * rows, np.float32) if a.kind == "vae" else None
            plan = self._plans[rows] = _Plan(rows, bufs)
        return plan

    def x_shared(self, x):
        """The batch as a (k, rows, D) view with batch stride 0: the k models see the same images."""
        return self.xp.lib.stride_tricks.as_strided(x, shape=(self.k, *x.shape), strides=(0, *x.strides))

    # ---- the step, kernel by kernel ------------------------------------------------------------------------
    def _launch(self, plan: _Plan) -> None:
        kern, mm, bufs, a = self.kern, self.gemm.mm, plan.bufs, self.arch
        k, B, L, D, P = self.k, plan.rows, a.latent, self.dim, self.P
        act, grad = bufs["act"], bufs["grad"]
        Pp = self.params
        vae = a.kind == "vae"
        if vae:
            kern.normal_philox(bufs["eps"], k * B * L, self.rng_counter, self.key_dev, STREAM_EPS)
        kern.gather_rows(self.data, self.perm, self.state, bufs["x"], B, D, self.binarize, self.key_dev)
        x3 = self.x_shared(bufs["x"])

        enc = [f"enc{i + 1}" for i in range(len(a.hidden))]
        dec = [f"dec{i + 1}" for i in range(len(a.hidden))]
        # forward
        h = x3
        for name in [*enc, "head"]:
            mm(h, self.W(Pp, name), act[name])
            kern.bias_act(act[name], self.b(Pp, name), P, k, B, act[name].shape[2], name != "head")
            h = act[name]
        if vae:
            kern.reparam(act["head"], bufs["eps"], bufs["z"], k * B, L)
        h = bufs["z"]
        for name in [*dec, "out"]:
            mm(h, self.W(Pp, name), act[name])
            kern.bias_act(act[name], self.b(Pp, name), P, k, B, act[name].shape[2], name != "out")
            h = act[name]
        kern.recon_fwd_grad(act["out"], bufs["x"], grad["out"], bufs["rowloss"], B, D,
                            0 if a.likelihood == "bernoulli" else 1)
        # backward: decoder, latent, encoder; each layer: (ReLU mask +) bias grad, dW, dX
        chain = [("out", dec[-1] if dec else None, False)]
        chain += [(dec[i], dec[i - 1] if i else None, True) for i in reversed(range(len(dec)))]
        for name, below, relu in chain:
            self._layer_backward(name, act[below] if below else bufs["z"], grad[below] if below else bufs["dz"],
                                 act[name] if relu else None, plan)
        if vae:
            kern.latent_backward(act["head"], bufs["eps"], bufs["dz"], grad["head"], bufs["klrow"], self.betas,
                                 self.state, k * B, B, L)
        chain = [("head", enc[-1] if enc else None, False)]
        chain += [(enc[i], enc[i - 1] if i else None, True) for i in reversed(range(len(enc)))]
        for name, below, relu in chain:
            self._layer_backward(name, act[below] if below else x3, grad[below] if below else None,
                                 act[name] if relu else None, plan)
        kern.finish_step(bufs["rowloss"], bufs["klrow"], self.betas, self.state, self.sums, self.loss, B, k)
        kern.adam_flat(self.params, self.grads, self.m, self.v, k * P, self.state, self.lr, self.beta1, self.beta2,
                       self.eps)
        kern.advance(self.state, self.rng_counter, B)

    def _layer_backward(self, name, inp, dx, relu_out, plan):
        """dy = grad[name] (masked by the ReLU of ``relu_out``); db, dW = inp^T dy, and dx = dy W^T if wanted."""
        dy = plan.bufs["grad"][name]
        self.kern.relu_back_bias_grad(dy, relu_out, self.b(self.grads, name), self.P, plan.rows, dy.shape[2], self.k)
        self.gemm.mm(inp, dy, self.W(self.grads, name), ta=True)
        if dx is not None:
            self.gemm.mm(dy, self.W(self.params, name), dx, tb=True)

    # ---- epochs and steps ---------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, betas, adam_step: int) -> None:
        """Shuffle on the device, reset the counters, load the epoch's KL weights (one per step)."""
        xp = self.xp
        self.wait_for_caller()
        self.key = philox_key(self.seed, epoch)
        with self._on_stream():
            self.key_dev[...] = xp.asarray(np.array(self.key, np.uint32))
            self.kern.philox_keys(self._keys, self.n, self.key[0], self.key[1], STREAM_SHUFFLE)
            self.perm[...] = xp.argsort(self._keys, kind="stable") if xp is np else xp.argsort(self._keys)
            self.state[...] = xp.asarray(np.array([0, 0, adam_step, 0], np.int64))
            self.rng_counter[...] = 0
            self.sums[...] = 0
            betas = np.asarray(betas, np.float32)
            if self.betas.size != betas.size:
                self.betas = xp.asarray(betas)
                for plan in self._plans.values():  # a new buffer: captured graphs hold the old one's address
                    plan.graph = None
            else:
                self.betas[...] = xp.asarray(betas)
        self._n_betas, self._host_step, self._host_offset = betas.size, 0, 0

    def step(self, rows: int) -> None:
        """One training step on the next ``rows`` examples of the epoch's permutation."""
        if self._closed:
            raise RuntimeError("this DeviceStep is closed")
        if self._host_step >= self._n_betas or self._host_offset + rows > self.n:
            raise RuntimeError(f"step {self._host_step + 1} of an epoch of {self._n_betas} steps / {self.n} examples: "
                               "call start_epoch first")
        self._host_step += 1
        self._host_offset += rows
        plan = self._plan(rows)
        if not self.use_graph:
            with self._on_stream():
                self._launch(plan)
            return
        if plan.graph is None and self.graph_failed is None:
            self._capture(plan)
        if plan.graph is not None:
            plan.graph.launch(self.stream)
        else:
            with self._on_stream():
                self._launch(plan)

    def _capture(self, plan: _Plan) -> None:
        try:
            self.kern.compile()
            with self.stream:
                self.stream.begin_capture()
                try:
                    self._launch(plan)
                finally:
                    graph = self.stream.end_capture()
            plan.graph = graph
        except Exception as err:  # noqa: BLE001 - any capture failure: run uncaptured, say why once
            self.use_graph = False
            self.graph_failed = f"{type(err).__name__}: {err}"
            self.log(f"CUDA graph capture failed ({self.graph_failed}); running the step uncaptured")

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def read_sums(self) -> np.ndarray:
        """(k, 3) host copy of (loss, recon, kl) summed over the epoch's examples so far (a sync)."""
        self.synchronize()
        s = self.sums.get() if hasattr(self.sums, "get") else self.sums.copy()
        return s.reshape(self.k, 3)

    def close(self) -> None:
        """Wait for every queued step, then free the cuBLAS handle and the graphs; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.synchronize()
        self.gemm.close()
        self._plans.clear()
