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
