"""Issue 13: the binarised-test protocol, the schedules, the new options, and old runs still loading."""

import json

import numpy as np
import pytest

from cuvae.cli.evaluate import evaluate_run
from cuvae.cli.train import main as train_main
from cuvae.data.protocol import TEST_SEED, protocol, evaluation_images
from cuvae.engine import schedules
from cuvae.engine.checkpoint import load_checkpoint
from conftest import TINY, run_cli

U8 = np.random.default_rng(0).integers(0, 256, size=(50, 784), dtype=np.uint8)


def test_binarised_runs_share_one_fixed_test_sample():
    dyn = evaluation_images(U8, "dynamic", "auto", np.float32)
    assert set(np.unique(dyn)) <= {0.0, 1.0}
    np.testing.assert_array_equal(dyn, evaluation_images(U8, "static", "auto", np.float32))  # static and dynamic: the same
    np.testing.assert_array_equal(dyn, evaluation_images(U8.copy(), "dynamic", None, np.float32))  # every run: the same
    # the documented recipe: one uniform draw per pixel from default_rng(TEST_SEED)
    want = np.random.default_rng(TEST_SEED).random(U8.shape, dtype=np.float32) < U8 / np.float32(255)
    np.testing.assert_array_equal(dyn, want)
    np.testing.assert_array_equal(dyn[:20], evaluation_images(U8[:20], "dynamic", "auto", np.float32))  # --test-size
    # a mean of 0/1 samples is near the grey levels' mean: it is a sample of those pixels, not a threshold
    assert abs(dyn.mean() - U8.mean() / 255) < 0.01
    grey = evaluation_images(U8, "none", "auto", np.float32)
    np.testing.assert_allclose(grey, U8 / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(evaluation_images(U8, "dynamic", "none", np.float32), grey)
    np.testing.assert_array_equal(evaluation_images(U8, "none", "fixed", np.float32), dyn)


def test_protocol_names():
    assert protocol("none", "auto") == "continuous"
    assert protocol("dynamic", "auto") == f"binarized (dynamic train, fixed test sample, seed {TEST_SEED})"
    assert protocol("static", "auto").startswith("static")
    assert protocol("dynamic", "none") == "continuous test (dynamic train)"


def test_burda_schedule_full_and_shortened():
    # the full schedule, one rate per pass: 3^i passes at 1e-3 * 10^(-i/7)
    rates = [schedules.lr_at("burda", 1e-3, (e - 1) / 3280) for e in range(1, 3281)]
    for i in range(8):
        assert rates.count(pytest.approx(1e-3 * 10 ** (-i / 7))) == 3**i
    # shortened to 20 epochs of 3000 steps: each stage keeps its share of the steps
    steps = [schedules.burda_stage(schedules.progress(e, s, 3000, 20)) for e in range(1, 21) for s in range(3000)]
    shares = np.bincount(steps, minlength=8) / len(steps)
    np.testing.assert_allclose(shares, [3**i / 3280 for i in range(8)], atol=2e-5)
    assert schedules.lr_at("cosine", 1e-3, 0.0) == pytest.approx(1e-3)
    assert schedules.lr_at("cosine", 1e-3, 0.5) == pytest.approx(5e-4)
    assert schedules.lr_at("constant", 2e-3, 0.9) == 2e-3


def test_recipe_trains_with_the_protocol_and_evaluates_with_its_error(offline_env, tmp_path):
    run = tmp_path / "iwae"
    args = ["--recipe", "burda-iwae", "--hidden", "24", "24", "--latent", "4", "--samples", "3", "--epochs", "2",
            "--train-size", "400", "--test-size", "100", "--device", "cpu", "--out", str(run)]
    assert train_main(args) == 0
    cfg = load_checkpoint(run).config
    assert (cfg.activation, cfg.objective, cfg.samples, cfg.adam_eps, cfg.schedule, cfg.binarize, cfg.batch_size) == \
        ("tanh", "iwae", 3, 1e-4, "burda", "dynamic", 20)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r["protocol"] == protocol("dynamic", "auto") for r in rows)
    assert rows[-1]["lr"] == pytest.approx(1e-4)  # the last stage of the shortened schedule
    out = evaluate_run(run, iwae_k=50, device="cpu", pictures=False, progress=False)
    assert out["protocol"] == protocol("dynamic", "auto")
    assert out["test_loss"] == pytest.approx(rows[-1]["test_loss"], rel=1e-6)  # the same fixed test sample
    assert 0 < out["iwae_se"] < 5 and out["iwae_seconds"] > 0
    grey = evaluate_run(run, iwae_k=5, device="cpu", pictures=False, progress=False, test_binarize="none")
    assert grey["protocol"] == "continuous test (dynamic train)" and grey["test_loss"] != out["test_loss"]


def test_old_run_without_protocol_loads_and_evaluates_as_before(offline_env, tmp_path):
    run = tmp_path / "old"
    assert train_main([*TINY, "--epochs", "1", "--binarize", "dynamic", "--out", str(run)]) == 0
    before = evaluate_run(run, iwae_k=5, device="cpu", pictures=False, progress=False, test_binarize="none")
    # rewrite the checkpoint as an older cuvae wrote it: no protocol, objective or activation keys
    with np.load(run / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    for key in ("test_binarize", "activation", "objective", "samples", "adam_eps", "schedule"):
        meta["config"].pop(key)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(run / "checkpoint.npz", **arrays)
    out = evaluate_run(run, iwae_k=5, device="cpu", pictures=False, progress=False)
    assert out["protocol"] == "continuous test (dynamic train)"
    assert out["test_loss"] == pytest.approx(before["test_loss"], rel=1e-9)


def test_bad_combinations_are_one_line_errors(offline_env, tmp_path):
    for extra, words in ((["--objective", "iwae", "--model", "ae"], "--model vae"),
                         (["--arch", "conv", "--activation", "tanh"], "--arch mlp")):
        r = run_cli(["-m", "cuvae.train", *TINY, "--epochs", "1", "--out", str(tmp_path / "x"), *extra], env=offline_env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_results_table_names_the_protocol_and_old_rows_read_as_continuous():
    from cuvae.cli.sweep_results import markdown_table, summarise

    base = {"model": "vae", "latent": 2, "seed": 0, "status": "trained", "test_loss": 100.0}
    rows = [{**base, "protocol": protocol("dynamic", "auto")}, {**base, "latent": 3}]  # the second: an old cached row
    md = markdown_table(summarise(rows), rows, 5)
    assert f"Protocol: {protocol('dynamic', 'auto')}; continuous." in md
