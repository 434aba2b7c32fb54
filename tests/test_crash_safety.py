"""SIGKILL at random moments, including mid checkpoint write, never leaves a checkpoint that fails to load."""

import random
import signal
import subprocess
import sys
import time

import pytest

from cuvae.engine.checkpoint import CHECKPOINT, load_checkpoint
from conftest import ROOT


def _lines(run):
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.slow
def test_sigkill_never_damages_the_checkpoint(offline_env, tmp_path):
    run = tmp_path / "run"
    # a wide model on few examples: each epoch is mostly a ~10 MB checkpoint write, so kills often land inside one
    base = [sys.executable, "-m", "cuvae.train", "--hidden", "1024", "512", "--latent", "4", "--train-size", "100",
            "--test-size", "100", "--batch-size", "100", "--epochs", "100000", "--device", "cpu", "--json"]
    rng = random.Random(1234)
    kills, mid_write, epochs = 0, 0, []
    while kills < 20 or (mid_write < 3 and kills < 80):
        args = base + (["--resume", str(run)] if (run / CHECKPOINT).exists() else ["--out", str(run)])
        lines = _lines(run)
        proc = subprocess.Popen(args, env=offline_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # wait until this process has finished an epoch (it is now writing or about to write a
        # checkpoint, then training on), and kill it at a random moment after that
        deadline = time.time() + 30
        while time.time() < deadline and proc.poll() is None and _lines(run) <= lines:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        mid_write += (run / f".{CHECKPOINT}.tmp-{proc.pid}").exists()
        if (run / CHECKPOINT).exists():
            ckpt = load_checkpoint(run)  # raises if damaged
            epochs.append(ckpt.epoch)
    print(f"kills {kills}, mid-write {mid_write}, epochs {epochs}")
    assert kills >= 20
    assert mid_write >= 1, "no kill landed inside a checkpoint write; the test did not test what it claims"
    assert epochs == sorted(epochs) and epochs[-1] >= 1  # progress is never lost or rolled back
    # and the run can still be resumed and finished cleanly
    r = subprocess.run(base[:-5] + ["--epochs", str(epochs[-1] + 1), "--device", "cpu", "--resume", str(run)],
                       env=offline_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not list(run.glob(f".{CHECKPOINT}.tmp-*"))
