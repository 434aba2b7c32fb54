"""The CUDA extras bring what CuPy compiles with, and ``--device gpu`` names the extra that fixes it."""

import sys
import tomllib
import types
from pathlib import Path

import pytest

from cuvae.backends import backend, cuda_env
from cuvae.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent


def test_cuda_extras_bring_the_toolkit_and_doctor_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # the plain wheels have no NVRTC, headers or cuBLAS: [ctk] pulls cuda-toolkit[cublas,cudart,nvrtc,...]
    assert [d.split(">")[0] for d in extras["cuda12"]] == ["cupy-cuda12x[ctk]"]
    assert [d.split(">")[0] for d in extras["cuda13"]] == ["cupy-cuda13x[ctk]"]
    assert project["scripts"]["cuvae-doctor"] == "cuvae.cli.doctor:cli"


def _fake_cupy(monkeypatch, available, info):
    fake = types.SimpleNamespace(is_available=lambda: available, __version__="14.2.0")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cuda_env, "probe", lambda full=True: info)


def test_gpu_error_without_cupy_names_both_extras(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(BackendError) as err:
        backend.get_backend("gpu")
    msg = str(err.value)
    assert "pip install 'cuvae[cuda12]'" in msg and "'cuvae[cuda13]'" in msg and "--device cpu" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("major", [12, 13])
def test_gpu_error_without_nvrtc_names_the_matching_extra(monkeypatch, major):
    _fake_cupy(monkeypatch, True, {"cupy_major_cuda": major, "nvrtc": None, "headers": "/x/include"})
    with pytest.raises(BackendError) as err:
        backend.get_backend("gpu")
    msg = str(err.value)
    assert "NVRTC" in msg and f"pip install 'cuvae[cuda{major}]'" in msg and f"cupy-cuda{major}x[ctk]" in msg


def test_gpu_error_without_device_says_what_else_is_missing(monkeypatch):
    _fake_cupy(monkeypatch, False, {"cupy_major_cuda": 12, "nvrtc": None, "headers": None})
    with pytest.raises(BackendError) as err:
        backend.get_backend("gpu")
    msg = str(err.value)
    assert "no CUDA device" in msg and "NVRTC" in msg and "headers" in msg and "cuvae[cuda12]" in msg
    # auto falls back to the CPU and says so in one line
    lines = []
    assert backend.get_backend("auto", log=lines.append).name == "cpu" and len(lines) == 1


def test_missing_lists_each_part_with_its_fix():
    assert cuda_env.missing({"cupy": None})[0][0] == "CuPy (not installed)"
    parts = cuda_env.missing({"cupy": "14.2.0", "cupy_major_cuda": 13, "driver": None, "available": False,
                              "nvrtc": None, "headers": None, "cublas": None})
    text = " ".join(what for what, _ in parts)
    for word in ("driver", "device", "NVRTC", "headers", "cuBLAS"):
        assert word in text
    assert all("cuvae[cuda13]" in fix for what, fix in parts if what.startswith(("NVRTC", "the CUDA", "cuBLAS")))
    ready = {"cupy": "14", "cupy_major_cuda": 12, "driver": "12.9", "available": True, "nvrtc": "/n", "headers": "/h",
             "headers_version": "12.9", "cublas": "/c"}
    assert cuda_env.missing(ready) == []
    other = cuda_env.missing({**ready, "headers_version": "13.0"})
    assert len(other) == 1 and other[0][0].startswith("CUDA 12 headers (found CUDA 13.0's in /h")


def test_headers_version_reads_cudart_version(tmp_path):
    (tmp_path / "cuda_runtime_api.h").write_text("/* x */\n#define CUDART_VERSION  12090\n")
    assert cuda_env.headers_version(tmp_path) == "12.9"
    assert cuda_env.headers_version(tmp_path / "absent") is None and cuda_env.headers_version(None) is None
