"""Evaluation: the JSON contract, the IWAE bound, bounded memory, damaged checkpoints."""

import json

import numpy as np
import pytest

from cuvae.measure import evaluation
from cuvae.engine.checkpoint import load_checkpoint
from cuvae.errors import CheckpointError
from cuvae.cli.train import main as train_main
from conftest import TINY, run_cli


@pytest.fixture
def trained(offline_env, tmp_path):
    run = tmp_path / "run"
    assert train_main([*TINY, "--epochs", "2", "--out", str(run)]) == 0
    return run


def test_evaluate_json_keys_and_bounds(trained, offline_env):
    r = run_cli(["-m", "cuvae.evaluate", str(trained), "--iwae-k", "64", "--json", "--device", "cpu"], env=offline_env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("test_loss", "test_recon", "test_kl", "iwae_nll", "iwae_k", "active_units"):
        assert key in out
    assert out["iwae_k"] == 64
    assert out["test_loss"] == pytest.approx(out["test_recon"] + out["test_kl"])
    # the importance-weighted bound is tighter than the ELBO (by a clear margin for a young model)
    assert out["iwae_nll"] < out["test_loss"]
    assert out["test_loss"] - out["iwae_nll"] < 0.5 * out["test_loss"]
    metrics = [json.loads(s) for s in (trained / "metrics.jsonl").read_text().splitlines()]
    assert out["test_loss"] == pytest.approx(metrics[-1]["test_loss"], rel=1e-6)  # same seed, same eps


def test_iwae_with_k1_is_the_elbo_in_expectation(trained):
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.data.base import prepare_images

    ckpt = load_checkpoint(trained)
    model = ckpt.config.build_model(get_backend("cpu").ops)
    P = model.layout.views(ckpt.params)
    x = prepare_images(load_dataset(test_size=200, train_size=1, log=None).test_x, "none", np.float32)
    k1 = np.mean([evaluation.iwae_nll(model, P, x, k=1, seed=s) for s in range(8)])
    elbo = evaluation.elbo(model, P, x, seed=0)["test_loss"]
    assert k1 == pytest.approx(elbo, rel=0.02)
    # chunking over samples does not change the estimate
    a = evaluation.iwae_nll(model, P, x[:10], k=50, seed=3, max_rows=10_000)
    b = evaluation.iwae_nll(model, P, x[:10], k=50, seed=3, max_rows=50)
    assert a == pytest.approx(b, rel=1e-5)


def test_gaussian_output_says_sse_is_unnormalised(offline_env, tmp_path):
    run = tmp_path / "g"
    assert train_main([*TINY, "--epochs", "1", "--likelihood", "gaussian", "--out", str(run)]) == 0
    r = run_cli(["-m", "cuvae.evaluate", str(run), "--iwae-k", "8", "--device", "cpu"], env=offline_env)
    assert r.returncode == 0, r.stderr
    assert "unnormalised" in r.stderr and "784/2 ln pi" in r.stderr


def test_iwae_memory_stays_bounded_for_k_5000(trained, offline_env):
    code = (
        "import resource, sys; from cuvae.cli.evaluate import evaluate_run;"
        f"r = evaluate_run({str(trained)!r}, iwae_k=5000, test_size=40, device='cpu', pictures=False, progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    r = run_cli(["-c", code], env=offline_env, timeout=300)
    assert r.returncode == 0, r.stderr
    peak_mb = int(r.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 2048, f"peak RSS {peak_mb:.0f} MB"


def test_damaged_checkpoint_is_a_clear_error(trained, offline_env):
    path = trained / "checkpoint.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(trained)
    r = run_cli(["-m", "cuvae.evaluate", str(trained)], env=offline_env)
    assert r.returncode == 2 and r.stderr.startswith("error: checkpoint") and "Traceback" not in r.stderr


def test_missing_run_dir_is_a_clear_error(offline_env, tmp_path):
    r = run_cli(["-m", "cuvae.evaluate", str(tmp_path / "nope")], env=offline_env)
    assert r.returncode == 2 and "no checkpoint at" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_into_a_log_file_prints_progress_lines(trained, offline_env):
    """No terminal, no bar: a long IWAE run still says how far it is, a line per tenth, never twice."""
    r = run_cli(["-m", "cuvae.evaluate", str(trained), "--iwae-k", "1000", "--test-size", "200", "--device", "cpu",
                 "--no-pictures"], env=offline_env)
    assert r.returncode == 0, r.stderr
    lines = [s for s in r.stderr.splitlines() if s.startswith("importance-weighted NLL: ")]
    assert 3 <= len(lines) <= 9, r.stderr
    shown = [int(s.split(": ")[1].split("%")[0]) for s in lines]
    assert shown == sorted(set(shown)) and all(p % 10 == 0 for p in shown) and "s left" in lines[-1]
