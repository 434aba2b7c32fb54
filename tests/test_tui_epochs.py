"""scripts/tui_epochs.py: which epochs are headless, the block ratios, and a tiny run in tmux (it runs and
its figures hang together; not a timing test)."""

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
SUBSET = ROOT / "cuvae" / "data" / "datasets" / "mnist-subset"

import tui_epochs  # noqa: E402


def test_blocks_start_headless_after_the_skipped_epochs():
    args = SimpleNamespace(skip=2, block=2)
    kinds = ["H" if tui_epochs.headless(e, args) else "U" for e in range(1, 13)]
    assert "".join(kinds) == "UUHHUUHHUUHH"


def test_each_ui_block_is_measured_against_the_headless_blocks_around_it():
    """A UI costing 10% under a steady drift: every ratio is 0.9 (a ratio to one neighbour would not be)."""
    args = SimpleNamespace(skip=0, block=2)
    counted = [{"epoch": e, "ui": not tui_epochs.headless(e, args)} for e in range(1, 11)]
    rate = {r["epoch"]: (1000 + 50 * r["epoch"]) * (0.9 if r["ui"] else 1.0) for r in counted}
    ratios = tui_epochs.block_ratios(counted, rate, 2)
    assert len(ratios) == 2 and ratios == pytest.approx([0.9, 0.9])


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tui_epochs.py runs the UI in tmux, which is not installed")
def test_a_tiny_run_in_tmux(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "tui_epochs.py"), "--epochs", "7", "--skip", "1",
                          "--block", "2", "--train-size", "300", "--data-dir", str(SUBSET), "--size", "80x24"],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    kinds = [line.split()[2] for line in lines if line.startswith("epoch ")]
    assert kinds == ["headless", "headless", "UI", "UI", "headless", "headless"]
    frozen = [line for line in lines if line.startswith("epoch ") and "headless" in line]
    assert all("UI 0.00" in line for line in frozen), frozen  # a frozen UI spends nothing
    assert any("UI blocks (2 epochs) over their headless neighbours: median" in line for line in lines)


def test_bad_size_is_one_line_exit_2():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "tui_epochs.py"), "--size", "big"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "COLSxROWS" in out.stderr
