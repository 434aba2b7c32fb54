"""cuvae-doctor on the CPU: the real run (exit 0, every CPU check, the GPU section skipped with its reason),
a failing check making the exit code 1, the --json shape, and the checks' own ability to fail."""

import json
import sys

import numpy as np
import pytest

from conftest import ROOT, run_cli
from cuvae.backends import cuda_env, selftest, selftest_gpu
from cuvae.backends.kernels import CONV_KERNELS
from cuvae.backends.selftest import Check, CheckFailed
from cuvae.cli import doctor
from cuvae.nn.model import Arch
from cuvae.nn.ops import NumpyOps

CPU_CHECKS = ["numba kernels vs NumPy ops", "training step vs NumpyOps", "time a step"]


def _gpu_visible():
    return bool(cuda_env.probe(full=False)["available"])


def test_doctor_json_on_this_machine():
    r = run_cli(["-m", "cuvae.doctor", "--json", "--device", "cpu"], timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) == {"environment", "checks", "summary"}
    env = report["environment"]
    assert env["python"] == ".".join(map(str, sys.version_info[:3])) and env["numpy"] == np.__version__
    assert {"cupy", "driver", "runtime", "nvrtc", "headers", "cublas", "devices"} <= set(env["cuda"])
    checks = {c["name"]: c for c in report["checks"]}
    for name in CPU_CHECKS:
        assert checks[name]["status"] == "ok" and checks[name]["section"] == "cpu", checks[name]
    assert checks["time a step"]["figures"]["ms_per_step"] > 0
    assert checks["GPU checks"]["status"] == "skipped" and checks["GPU checks"]["detail"] == "--device cpu"
    s = report["summary"]
    assert s == {**s, "passed": 3, "failed": 0, "skipped": 1, "ok": True}


def _fast_cpu(monkeypatch, extra=()):
    ok = Check("cpu", "fake ok", lambda: ("fine", {"x": 1}))
    monkeypatch.setattr(selftest, "cpu_checks", lambda gradcheck=False: [ok, *extra])


def test_a_failing_check_makes_the_exit_code_1(monkeypatch, capsys):
    def broken():
        raise CheckFailed("sigmoid differs from NumpyOps")

    _fast_cpu(monkeypatch, [Check("cpu", "fake failing", broken, "reinstall it")])
    assert doctor.main(["--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAILED  fake failing: sigmoid differs from NumpyOps" in out and "fix: reinstall it" in out
    assert "summary: 1 passed, 1 failed, 1 skipped" in out and "FAILED: fake failing" in out
    assert doctor.main(["--device", "cpu", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    failed = [c for c in report["checks"] if c["status"] == "failed"]
    assert failed == [{**failed[0], "name": "fake failing", "fix": "reinstall it"}]
    assert report["summary"]["ok"] is False and report["summary"]["failed"] == 1


def test_an_exception_in_a_check_is_a_failed_line_not_a_crash(monkeypatch, capsys):
    _fast_cpu(monkeypatch, [Check("cpu", "crashes", lambda: {}[0])])
    assert doctor.main(["--device", "cpu"]) == 1
    assert "FAILED  crashes: KeyError: 0" in capsys.readouterr().out


@pytest.mark.skipif(_gpu_visible(), reason="a GPU is visible here: the GPU checks run instead")
def test_without_a_gpu_the_gpu_section_is_one_skipped_line_or_a_failure_when_required(monkeypatch, capsys):
    _fast_cpu(monkeypatch)
    assert doctor.main([]) == 0
    out = capsys.readouterr().out
    gpu = out[out.index("GPU path"):].splitlines()
    assert len(gpu) == 3 and gpu[1].startswith("  skipped GPU checks: ") and "pip install 'cuvae[cuda" in gpu[1]
    assert doctor.main(["--device", "gpu"]) == 1
    assert "FAILED  GPU checks: no usable GPU" in capsys.readouterr().out


def test_cupy_without_a_gpu_names_what_is_missing(monkeypatch):
    info = {"cupy": "14.2.0", "cupy_major_cuda": 12, "available": False, "driver": None, "runtime": "12.9",
            "nvrtc": None, "headers": "/usr/local/cuda/include", "cublas": None, "devices": [], "device_error": None}
    reason = doctor.gpu_skip_reason({"cuda": info}, "auto")
    assert reason.startswith("missing an NVIDIA driver (libcuda), so no CUDA device; NVRTC") and "fix: " in reason
    assert "cuBLAS" in reason and "pip install 'cuvae[cuda12]'" in reason and "headers" not in reason
    assert doctor.gpu_skip_reason({"cuda": {**info, "available": True}}, "auto") is None
    hidden = doctor.gpu_skip_reason({"cuda": {**info, "driver": "12.9", "nvrtc": "/n", "cublas": "/c"}}, "auto")
    assert hidden == "missing a visible CUDA device; fix: check nvidia-smi and CUDA_VISIBLE_DEVICES"


# ---- the checks can fail -----------------------------------------------------------------------------------
class WrongSigmoid(NumpyOps):
    def sigmoid(self, logits, out):
        super().sigmoid(logits, out)
        out *= 1.0001
        return out


class WrongBiasGrad(NumpyOps):
    def linear_backward(self, dy, x, W, dW, db, dx=None):
        super().linear_backward(dy, x, W, dW, db, dx)
        db *= 1.001


def test_compare_ops_catches_a_wrong_op():
    detail, figures = selftest.compare_ops(NumpyOps())
    assert "14 ops agree" in detail
    with pytest.raises(CheckFailed, match="sigmoid"):
        selftest.compare_ops(WrongSigmoid())


def test_gradcheck_passes_and_catches_a_wrong_bias_gradient():
    arch = Arch(in_dim=10, hidden=(6, 5), latent=3, likelihood="gaussian")
    rows = selftest.gradcheck(NumpyOps(), arch=arch)
    assert [r[0] for r in rows] == list(arch.layout().shapes) and all(ok for *_, ok in rows)
    bad = {name: ok for name, _, _, ok in selftest.gradcheck(WrongBiasGrad(), arch=arch)}
    assert not any(bad[n] for n in bad if n.endswith(".b")) and all(bad[n] for n in bad if n.endswith(".W"))


def test_gpu_checks_harness_on_the_twins():
    """The GPU section's argument lists and comparisons, run with the twins in place of the kernels."""
    checks = [c for c in selftest_gpu.gpu_checks(engine="twin")
              if c.name.startswith(("compile", "kernel", "conv kernel", "CupyOps", "captured"))]
    assert len([c for c in checks if c.name.startswith("kernel")]) == len(selftest_gpu.kernel_cases()) == 16
    assert len([c for c in checks if c.name.startswith("conv kernel")]) == len(selftest_gpu.conv_kernel_cases()) == 11
    assert {c[1] for c in selftest_gpu.conv_kernel_cases()} == set(CONV_KERNELS)
    assert "captured conv step vs NumPy ConvVAE step" in [c.name for c in checks]
    results = [selftest.run(c) for c in checks]
    assert [r.status for r in results] == ["ok"] * len(results), [(r.name, r.detail) for r in results if r.status != "ok"]


def test_kernel_check_catches_an_off_by_one():
    env = selftest_gpu.Engine("twin")
    label, kernel, args, outputs = next(c for c in selftest_gpu.kernel_cases() if c[1] == "bias_act")

    def off_by_one(y, b, b_stride, k, rows, n, relu):  # a bound one short: the last row is left alone
        last = y[:, rows - 1].copy()
        selftest_gpu.twins.bias_act(y, b, b_stride, k, rows, n, relu)
        y[:, rows - 1] = last

    env._kern = type("Broken", (), {"bias_act": staticmethod(off_by_one)})()
    with pytest.raises(CheckFailed, match="argument 0 differs"):
        selftest_gpu.kernel_vs_twin(env, kernel, args, outputs)


def test_python_m_cuvae_doctor_help():
    r = run_cli(["-m", "cuvae.doctor", "--help"], cwd=ROOT)
    assert r.returncode == 0 and "--gradcheck" in r.stdout and "exit code" in r.stdout


def test_with_a_gpu_the_gpu_checks_run_and_report(monkeypatch, capsys):
    """The GPU section as it runs on a device, with the twins standing in for it."""
    _fast_cpu(monkeypatch)
    monkeypatch.setattr(doctor, "gpu_skip_reason", lambda env, device: None)
    twin = [c for c in selftest_gpu.gpu_checks(engine="twin") if c.name.startswith(("compile", "kernel advance"))]
    monkeypatch.setattr(selftest_gpu, "gpu_checks", lambda gradcheck=False: twin)
    assert doctor.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    gpu = [c for c in report["checks"] if c["section"] == "gpu"]
    assert [c["name"] for c in gpu] == ["compile the kernels", "kernel advance vs twin"]
    assert all(c["status"] == "ok" for c in gpu) and report["summary"]["gpu_skipped_reason"] is None

    def no_device(gradcheck=False):
        raise RuntimeError("cudaErrorNoDevice")

    monkeypatch.setattr(selftest_gpu, "gpu_checks", no_device)
    assert doctor.main([]) == 1
    assert "FAILED  set up the GPU checks: RuntimeError: cudaErrorNoDevice" in capsys.readouterr().out
