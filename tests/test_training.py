"""Training end to end on the NumPy backend: learning, resume equality, NaN stop, CLI errors."""

import json

import numpy as np
import pytest

from cuvae.engine.checkpoint import load_checkpoint
from cuvae.cli.train import main
from conftest import TINY, run_cli


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def strip_times(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "examples_per_s")} for r in rows]


def test_short_run_lowers_the_loss_and_writes_everything(offline_env, tmp_path):
    run = tmp_path / "run"
    assert main([*TINY, "--epochs", "3", "--out", str(run)]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_recon", "train_kl", "test_loss", "test_recon", "test_kl", "seconds", "examples_per_s"):
        assert all(np.isfinite(r[key]) for r in rows), key
    # a model that learns: the mean-image baseline's BCE is ~ 206 nats on MNIST; training gets well below it
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] - 5
    assert rows[-1]["test_loss"] < 200
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 3 and ckpt.adam_step == 3 * 40
    assert json.loads((run / "config.json").read_text())["latent"] == 4
    for png in ("reconstructions.png", "samples.png"):
        assert (run / png).stat().st_size > 500


def test_resumed_run_prints_the_same_losses(offline_env, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main([*TINY, "--epochs", "3", "--out", str(whole), "--binarize", "dynamic"]) == 0
    assert main([*TINY, "--epochs", "1", "--out", str(parts), "--binarize", "dynamic"]) == 0
    assert main(["--resume", str(parts), "--epochs", "3"]) == 0
    assert strip_times(read_metrics(whole)) == strip_times(read_metrics(parts))
    assert np.array_equal(load_checkpoint(whole).params, load_checkpoint(parts).params)


def test_interrupted_with_ctrl_c_keeps_checkpoint_and_resumes(offline_env, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "cuvae.train", *TINY, "--train-size", "10000", "--epochs", "50", "--out", str(run)]
    proc = subprocess.Popen(args, env=offline_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with: cuvae-train --resume" in err
    epoch = load_checkpoint(run).epoch
    assert 1 <= epoch < 50
    assert len(read_metrics(run)) >= epoch


def test_nan_stops_training_and_keeps_last_good_checkpoint(offline_env, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "--out", str(run), "--likelihood", "gaussian"]) == 0
    good = load_checkpoint(run).params.copy()
    assert main(["--resume", str(run), "--epochs", "3", "--lr", "1e6"]) == 1
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "--lr" in err
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 1 and np.array_equal(ckpt.params, good)


def test_checkpoint_of_another_model_is_refused(offline_env, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "--out", str(run)]) == 0
    from cuvae.engine.options import run_main

    assert run_main(main, ["--resume", str(run), "--latent", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: checkpoint") and "latent=4" in err and "latent=2" in err and "--latent 4" in err
    assert run_main(main, [*TINY, "--out", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_float64_training_runs(offline_env, tmp_path):
    run = tmp_path / "run"
    assert main([*TINY, "--epochs", "1", "--out", str(run), "--dtype", "float64", "--model", "ae"]) == 0
    assert load_checkpoint(run).params.dtype == np.float64


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--epochs", "0"], "--epochs: expected a positive integer, got 0"),
        (["--lr", "abc"], "--lr: expected a positive number, got 'abc'"),
        (["--lr", "-1"], "--lr: expected a positive number"),
        (["--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_flags_give_one_clear_line(flags, needle, offline_env):
    r = run_cli(["-m", "cuvae.train", *flags], env=offline_env)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_help_documents_every_option(offline_env):
    r = run_cli(["-m", "cuvae.train", "--help"], env=offline_env)
    assert r.returncode == 0
    for flag in ("--latent", "--hidden", "--likelihood", "--beta", "--kl-warmup", "--recipe", "--epochs", "--batch-size",
                 "--lr", "--seed", "--dataset", "--data-dir", "--out", "--resume", "--json", "--device", "--binarize",
                 "--train-size", "--test-size", "--clip-norm"):
        assert flag in r.stdout, flag


def test_gpu_without_cupy_or_device_is_a_clear_error(offline_env, tmp_path):
    r = run_cli(["-m", "cuvae.train", *TINY[:-2], "--device", "gpu", "--out", str(tmp_path / "r")], env=offline_env)
    try:
        import cupy

        if cupy.is_available():
            pytest.skip("a GPU is present")
    except ImportError:
        pass
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --device gpu:") and ("cuvae[cuda12]" in last or "nvidia-smi" in last)
    assert "Traceback" not in r.stderr


def test_json_mode_prints_metrics_lines_on_stdout(offline_env, tmp_path):
    r = run_cli(["-m", "cuvae.train", *TINY, "--epochs", "2", "--json", "--out", str(tmp_path / "r")], env=offline_env)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(s) for s in r.stdout.splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
