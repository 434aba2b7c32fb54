"""scripts/bench_conv_gpu.py without a GPU: cuvae's conv step timed on the NumPy twins, PyTorch's conv model
eager on the CPU, and the rows' ratios (a smoke test of the script's code, not a timing test)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_conv_gpu as B  # noqa: E402

TINY = dict(shape=(1, 8, 8), channels=(2, 3), latent=2)


def test_cuvae_conv_step_is_timed_on_the_twins():
    x = np.random.default_rng(0).uniform(size=(8, 64)).astype(np.float32)
    ms, kind = B.time_cuvae_conv(x, B.conv_arch(**TINY), 4, graph=False, rounds=1, engine="twin")
    assert ms > 0 and kind == "np.matmul, no graph"


def test_pytorch_conv_model_is_timed_eager_on_the_cpu():
    pytest.importorskip("torch")
    x = np.random.default_rng(0).uniform(size=(8, 64)).astype(np.float32)
    assert B.time_torch_conv(x, B.conv_arch(**TINY), 4, "eager", device="cpu", steps=2, warmup=1) > 0
    with pytest.raises(ValueError, match="graph on CUDA only"):
        B.time_torch_conv(x, B.conv_arch(**TINY), 4, "graph", device="cpu")


def test_rows_give_cuvae_as_a_multiple_of_each_pytorch_mode():
    rows = B.rows_for_batch([("cuBLAS (ctypes), graph", 2.0)], {"eager": ("pytorch conv eager", 8.0),
                                                                 "graph": ("pytorch conv CUDA graph", 3.0)},
                            100, B.conv_arch(), "GPU", False)
    cu, eager, graph = rows
    assert cu["framework"] == "cuvae conv (cuBLAS (ctypes), graph)" and cu["examples_per_s"] == 50_000
    assert cu["x_pytorch_eager"] == 4.0 and cu["x_pytorch_graph"] == 1.5
    assert eager["examples_per_s"] == 12_500 and graph["framework"] == "pytorch conv CUDA graph"
    assert "4.00x PyTorch eager, 1.50x PyTorch graph" in B.fmt(cu)
