import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT / "cuvae" / "data" / "datasets" / "mnist-subset"
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there: downloads fail at once


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    """No network, an empty cache, and the bundled subset as $CUVAE_DATA_DIR (fast, real digits)."""
    monkeypatch.setenv("CUVAE_MIRRORS", _closed_port_url())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CUVAE_DATA_DIR", str(SUBSET))
    return os.environ.copy()


TINY = ["--hidden", "32", "--latent", "4", "--train-size", "2000", "--test-size", "200", "--batch-size", "50", "--lr", "3e-3",
        "--device", "cpu"]


def run_cli(args, env=None, timeout=120, **kw):
    import subprocess

    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=kw.get("cwd", ROOT))


@pytest.fixture(autouse=True)
def _forget_network_state():
    """A test that found the network "down" (a closed port) must not make the next one skip its download."""
    yield
    import sys as _sys

    dl = _sys.modules.get("cuvae.data.download")
    if dl is not None:
        dl.reset_network_state()


@pytest.fixture(scope="session")
def emu_cache(tmp_path_factory):
    """The emulated GPU's build cache (tests/emulated_gpu): each variant of each source compiles once a session."""
    return tmp_path_factory.mktemp("emulated-gpu")


def _emulator_variants():
    from emulated_gpu import build

    no_fma = build.fma_ftz_supported()
    return ["ieee", pytest.param("fma-ftz", marks=pytest.mark.skipif(no_fma is not None, reason=no_fma or ""))]


EMU_VARIANTS = _emulator_variants()


@pytest.fixture(params=EMU_VARIANTS)
def emu(request, monkeypatch, emu_cache):
    """The emulated device in each build (IEEE, and FMA + flush-to-zero where g++ has it); its guards checked."""
    from emulated_gpu import start

    shim = start(monkeypatch, emu_cache, request.param)
    yield shim
    shim.check_guards()


@pytest.fixture
def emu_ieee(monkeypatch, emu_cache):
    from emulated_gpu import start

    shim = start(monkeypatch, emu_cache)
    yield shim
    shim.check_guards()
