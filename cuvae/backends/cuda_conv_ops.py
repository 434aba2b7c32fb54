"""The conv step's kernels: :class:`ConvCudaKernels`, step.cu's :class:`~cuvae.backends.cuda_ops.CudaKernels`
plus the kernels of ``kernels/conv.cu`` behind their twins' signatures (:mod:`cuvae.backends.kernels.conv_twins`).

Grid and block are chosen here; the likelihood kernels' block size is the ``PIXEL_THREADS`` conv.cu
defines. Importing this module imports CuPy.
"""

from __future__ import annotations

import cupy
import numpy as np

from cuvae.backends.cuda_ops import _NULL, CudaKernels, _blocks
from cuvae.backends.kernels import CONV_KERNELS, OPTIONS, constants, source

GRID_STRIDE_BLOCKS = 1 << 16  # im2col / col2im loop over their elements: more blocks than this add nothing


def conv_source() -> str:
    return source("conv.cu")


def _strided_blocks(total, threads=256):
    return (int(max(1, min(GRID_STRIDE_BLOCKS, (total + threads - 1) // threads))),), (threads,)


def _i32(*vals):
    return tuple(np.int32(v) for v in vals)


class ConvCudaKernels(CudaKernels):
    """step.cu's kernels and conv.cu's, two modules compiled together by :meth:`compile`."""

    def __init__(self, code: str | None = None, conv_code: str | None = None):
        super().__init__(code)
        self.conv_code = conv_source() if conv_code is None else conv_code
        self.pixel_threads = constants(self.conv_code)["PIXEL_THREADS"]
        self._conv_module = None

    def compile(self) -> None:
        super().compile()
        for name in CONV_KERNELS:
            self._fn(name)

    def _fn(self, name):
        if name not in CONV_KERNELS:
            return super()._fn(name)
        fn = self._fns.get(name)
        if fn is None:
            if self._conv_module is None:
                self._conv_module = cupy.RawModule(code=self.conv_code, options=OPTIONS)
            fn = self._fns[name] = self._conv_module.get_function(name)
        return fn

    def im2col_nhwc(self, x, sN, sH, sW, sC, N, H, W, C, k, s, p, Ho, Wo, cols):
        self._fn("im2col_nhwc")(*_strided_blocks(N * Ho * Wo * k * k * C),
                                (x, *(np.int64(v) for v in (sN, sH, sW, sC)), *_i32(N, H, W, C, k, s, p, Ho, Wo), cols))

    def col2im_nhwc(self, cols, N, H, W, C, k, s, p, Ho, Wo, bias, mode, mask, out, oN, oH, oW, oC):
        self._fn("col2im_nhwc")(*_strided_blocks(N * H * W * C),
                                (cols, *_i32(N, H, W, C, k, s, p, Ho, Wo), _NULL if bias is None else bias,
                                 np.int32(mode), _NULL if mask is None else mask, out,
                                 *(np.int64(v) for v in (oN, oH, oW, oC))))

    def gather_index(self, src, idx, dst, n):
        self._fn("gather_index")(*_blocks(n), (src, idx, dst, np.int64(n)))

    def pixel_nll_grad(self, logits, x, logscale, dlogits, part, C, D, likelihood, scale):
        rows = logits.size // (C * D)
        self._fn("pixel_nll_grad")((rows * C,), (self.pixel_threads,),
                                   (logits, x, _NULL if logscale is None else logscale, dlogits, part,
                                    *_i32(C, D, likelihood), np.float32(scale)))

    def pixel_finish(self, part, rowloss, dlogscale, db, rows, C):
        self._fn("pixel_finish")((1,), (self.pixel_threads,),
                                 (part, rowloss, _NULL if dlogscale is None else dlogscale, db, *_i32(rows, C)))
