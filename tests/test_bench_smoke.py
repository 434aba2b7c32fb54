"""A tiny run of scripts/bench.py's CPU side: it runs, and its figures hang together (not a timing test)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SUBSET = ROOT / "cuvae" / "data" / "datasets" / "mnist-subset"


@pytest.mark.parametrize("mode", ["--same-process", "subprocesses"])
def test_bench_cpu_smoke(capsys, mode):
    import bench

    extra = [mode] if mode.startswith("--") else []
    rc = bench.main(["--device", "cpu", "--batches", "50", "--steps", "2", "--rounds", "1", *extra,
                     "--train-size", "500", "--data-dir", str(SUBSET), "--json"])
    assert rc == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    cuvae = [r for r in rows if r["framework"].startswith("cuvae")]
    assert len(cuvae) == 1
    r = cuvae[0]
    assert r["batch"] == 50 and r["ms_per_step"] > 0 and r["gemm_floor_ms"] > 0
    assert r["s_per_epoch"] == pytest.approx(r["ms_per_step"] * 60_000 / 50 / 1e3)
    assert r["x_floor"] == pytest.approx(r["ms_per_step"] / r["gemm_floor_ms"])
    assert r["tf32"] is False
    if not extra:  # a process per framework: its peak resident set is measured
        assert r["peak_mb"] > 0
    if any(x["framework"].startswith("pytorch") for x in rows):  # torch installed: the ratio is reported
        assert r["ratio"] > 0


def test_bench_profile_smoke(capsys):
    import bench

    assert bench.main(["--profile", "--batches", "20", "--steps", "2", "--train-size", "200",
                       "--data-dir", str(SUBSET), "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"linear", "linear_backward", "adam"} <= set(r["methods_ms"])
    assert 0 < r["matmul_share"]


def test_bench_rejects_batch_larger_than_data(capsys):
    import bench

    assert bench.main(["--batches", "1000", "--train-size", "100", "--data-dir", str(SUBSET)]) == 2
    assert "larger than" in capsys.readouterr().err


# ---- the GPU side's CPU logic: epoch arithmetic and the torch probe --------------------------------------
def test_epoch_plan_leaves_replays_to_time():
    import bench

    assert bench.epoch_plan(60_000, 100) == (600, 1)
    assert bench.epoch_plan(10_000, 1000) == (10, 1)
    steps, reps = bench.epoch_plan(10_000, 10_000)  # the bundled subset at batch 10000: one step an epoch
    assert steps >= 3 and reps == 3 and steps * 10_000 <= 10_000 * reps
    assert bench.epoch_plan(10_000, 4000) == (5, 2)  # 2 batches of 4000 would leave one replay: repeat
    with pytest.raises(ValueError):
        bench.epoch_plan(100, 1000)


def test_time_cuvae_gpu_with_one_batch_of_data(monkeypatch):
    """Batch == data size (one step an epoch) used to divide by steps - 1 = 0; on the NumPy twins here."""
    import numpy as np

    import bench

    x = np.random.default_rng(0).uniform(size=(40, 784)).astype(np.float32)
    ms, epoch_s, used, kind, notes, reps = bench.time_cuvae_gpu(x, 40, 1, False, False, epochs=1, engine="twin")
    assert ms > 0 and epoch_s > 0 and reps == 3 and "no graph" in kind


def _fake_torch(monkeypatch, available):
    import types

    def device_name():
        raise AssertionError("Torch not compiled with CUDA enabled")  # what a CPU build does

    def is_available():
        if isinstance(available, Exception):
            raise available
        return available

    cuda = types.SimpleNamespace(is_available=is_available,
                                 get_device_name=(lambda: "NVIDIA H200") if available is True else device_name)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.13.0+cpu", cuda=cuda))
    monkeypatch.setitem(sys.modules, "torch_reference", types.ModuleType("torch_reference"))


def test_torch_probe_on_a_cpu_build(monkeypatch):
    import bench

    _fake_torch(monkeypatch, False)
    tr, why = bench.torch_cuda_probe()
    assert tr is None and "no usable CUDA" in why and "2.13.0+cpu" in why


def test_torch_probe_with_cuda_and_broken_and_absent(monkeypatch):
    import bench

    _fake_torch(monkeypatch, True)
    tr, desc = bench.torch_cuda_probe()
    assert tr is sys.modules["torch_reference"] and desc == "torch 2.13.0+cpu, NVIDIA H200"
    _fake_torch(monkeypatch, RuntimeError("CUDA driver initialization failed"))
    tr, why = bench.torch_cuda_probe()
    assert tr is None and "RuntimeError: CUDA driver initialization failed" in why
    monkeypatch.setitem(sys.modules, "torch", None)
    tr, why = bench.torch_cuda_probe()
    assert tr is None and "not installed" in why
