"""scripts/gpu_checks.sh and scripts/gpu_report.py without a GPU: arguments, the plan, the time budget,
and the arithmetic of the figures and targets (the torch probe is in test_bench_smoke.py)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_checks.sh"
SUBSET = ROOT / "cuvae" / "data" / "datasets" / "mnist-subset"
sys.path.insert(0, str(ROOT / "scripts"))

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def sh(*args, **env):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, **env})


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_plans_every_step_within_the_budget(tmp_path):
    r = sh("--dry-run", "--out", str(tmp_path), "--data", str(SUBSET))
    assert r.returncode == 0, r.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [s["name"] for s in plan["steps"]] == ["env", "doctor", "tests", "bench", "bench_conv", "train", "bench_tf32"]
    assert plan["data"] == str(SUBSET) and plan["budget_s"] <= 8 * 60 - 10
    cmd = {s["name"]: s["command"] for s in plan["steps"]}
    assert cmd["doctor"][1:] == ["-m", "cuvae.doctor", "--device", "gpu", "--gradcheck", "--json"]
    train = cmd["train"][1:]
    assert train[:10] == ["-m", "cuvae.train", "--latent", "8", "--device", "gpu", "--recipe", "chapter", "--epochs", "10"]
    assert train[train.index("--data-dir") + 1] == str(SUBSET)
    for name in ("bench", "bench_tf32"):
        b = cmd[name]
        assert b[b.index("--batches") + 1:b.index("--batches") + 4] == ["100", "1000", "10000"]
    assert "--tf32" in cmd["bench_tf32"] and "--tf32" not in cmd["bench"]
    conv = cmd["bench_conv"]
    assert conv[1] == "scripts/bench_conv_gpu.py" and conv[conv.index("--data-dir") + 1] == str(SUBSET)
    assert conv[conv.index("--batches") + 1:conv.index("--batches") + 3] == ["100", "1000"] and "--json" in conv
    bench = cmd["bench"]
    assert bench[bench.index("--models") + 1:bench.index("--models") + 4] == ["1", "4", "16"]
    assert not (tmp_path / "steps.jsonl").exists()  # nothing ran


def test_bad_arguments_exit_2(tmp_path):
    for args in (["--bogus"], ["--budget", "ten"], ["--data", str(tmp_path / "absent")]):
        r = sh(*args, "--out", str(tmp_path))
        assert r.returncode == 2 and r.stderr.startswith("error: "), (args, r.stderr)
    assert sh("--help").stdout.startswith("Every GPU figure")


def test_out_of_time_skips_each_step_and_still_reports(tmp_path):
    r = sh("--budget", "5", "--out", str(tmp_path), "--data", str(SUBSET))
    assert r.returncode == 0, r.stderr
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    assert len(steps) == 7 and all(s["skipped"] == "out of time" for s in steps)
    fig = json.loads((tmp_path / "figures.json").read_text())
    assert [t["met"] for t in fig["targets"]] == [None, None, None]
    assert "step train: skipped (out of time)" in r.stdout


def _row(framework, batch, ms, **kw):
    return json.dumps({"framework": framework, "batch": batch, "ms_per_step": ms, **kw})


def test_report_computes_the_targets_from_the_same_run(tmp_path):
    import gpu_report

    (tmp_path / "bench_fp32.jsonl").write_text("\n".join([
        "note: not JSON",
        _row("cuvae k=1 (cuBLAS (ctypes), no graph)", 100, 0.30, models=1),
        _row("cuvae k=1 (cuBLAS (ctypes), graph)", 100, 0.10, models=1),
        _row("cuvae k=4 (cuBLAS (ctypes), graph)", 100, 0.05, models=4),
        _row("cuvae k=1 (cuBLAS (ctypes), graph)", 10000, 1.5, models=1),
        _row("pytorch CUDA graph, fused Adam", 10000, 3.6),
        '{"torn": ',
    ]))
    epochs = [{"epoch": e, "seconds": s, "examples_per_s": 60_000 / s, "test_loss": 30.0 - e}
              for e, s in ((1, 0.5), (2, 0.09), (3, 0.12))]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(e) for e in epochs))
    (tmp_path / "tests.xml").write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="t" name="a"/><testcase classname="t" name="b"><failure/></testcase>'
        '</testsuite></testsuites>')
    (tmp_path / "bench_conv.jsonl").write_text("\n".join([
        _row("cuvae conv (cuBLAS (ctypes), graph)", 100, 0.5, examples_per_s=200_000, x_pytorch_eager=4.0,
             x_pytorch_graph=1.5),
        _row("cuvae conv (cuBLAS (ctypes), no graph)", 100, 1.0, examples_per_s=100_000, x_pytorch_eager=2.0),
        _row("pytorch conv eager, fused Adam", 100, 2.0, examples_per_s=50_000),
        _row("cuvae conv (cuBLAS (ctypes), graph)", 1000, 2.0, examples_per_s=500_000)]))
    fig = gpu_report.report(tmp_path)
    assert fig["conv"] == [{"batch": 100, "cuvae_examples_per_s": 200_000, "x_pytorch_eager": 4.0, "x_pytorch_graph": 1.5},
                           {"batch": 1000, "cuvae_examples_per_s": 500_000, "x_pytorch_eager": None,
                            "x_pytorch_graph": None}]
    lines = gpu_report.summary_lines(fig)
    assert "conv step, batch 100: 200,000 examples/s (4.00x PyTorch eager, 1.50x PyTorch graph)" in lines
    assert "conv step, batch 1000: 500,000 examples/s (no PyTorch figures)" in lines
    b100, epoch, b10k = fig["targets"]
    assert b100["measured_ms"] == 0.10 and b100["met"] is True and b100["ratio_to_target"] == pytest.approx(0.10 / 0.12)
    assert epoch["measured_s"] == 0.09 and epoch["met"] is True  # epoch 1 (compile, capture) left out
    assert b10k["speedup"] == pytest.approx(3.6 / 1.5) and b10k["met"] is True
    assert fig["train"]["train_images"] == 60_000 and fig["train"]["final_test_loss"] == 27.0
    assert fig["tests"] == {**fig["tests"], "passed": 2, "failures": 1, "skipped": 1, "failed_names": ["t::b"]}
    # the subset: no full-MNIST epoch figure, and a slower cuvae misses the batch-10000 target
    epochs = [{**e, "examples_per_s": 10_000 / e["seconds"]} for e in epochs]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(e) for e in epochs))
    (tmp_path / "bench_fp32.jsonl").write_text("\n".join([
        _row("cuvae k=1 (cuBLAS (ctypes), graph)", 10000, 2.0, models=1), _row("pytorch CUDA graph", 10000, 3.6)]))
    _, epoch, b10k = gpu_report.targets(gpu_report.read_jsonl(tmp_path / "bench_fp32.jsonl"),
                                        gpu_report.train_figures(gpu_report.read_jsonl(tmp_path / "train.jsonl"), None))
    assert epoch["met"] is None and "full 60,000" in epoch["note"]
    assert b10k["speedup"] == pytest.approx(1.8) and b10k["met"] is False
