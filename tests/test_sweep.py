"""cuvae.sweep: results files, skip/resume (also after an interruption), failure isolation, workers, axes
over any option, the run lock. Ray: tests/test_sweep_cluster.py (a real two-node cluster; its rows are
also checked against a sweep run without Ray).

Tiny models on the bundled MNIST subset: --hidden 16, 200 training examples, 1-2 epochs.
"""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from cuvae.cli import sweep
from cuvae.engine.checkpoint import CHECKPOINT, load_checkpoint
from cuvae.data import SUBSET_DIR

TINY = ["--hidden", "16", "--train-size", "200", "--test-size", "60", "--batch-size", "50"]
VALUE_KEYS = ("test_loss", "test_recon", "test_kl", "iwae_nll", "active_units", "sharpness", "sharpness_samples",
              "mutual_info", "marginal_kl")


def sweep_rows(out, epochs=1, **kw):
    kw.setdefault("latents", (2, 3))
    kw.setdefault("seeds", (1,))
    return sweep.run_sweep(out, train_args=TINY + ["--epochs", str(epochs)], device="cpu", data_dir=SUBSET_DIR,
                           iwae_k=5, **kw)


def same_values(a, b, rtol=1e-5):
    """Rows agree on every evaluation figure (timings aside); rtol covers BLAS thread-count rounding."""
    assert [(r["model"], r["latent"], r["seed"]) for r in a] == [(r["model"], r["latent"], r["seed"]) for r in b]
    for ra, rb in zip(a, b):
        for k in VALUE_KEYS:
            if ra[k] is None:
                assert rb[k] is None, k
            else:
                assert rb[k] == pytest.approx(ra[k], rel=rtol, abs=1e-6), (ra["run_dir"], k)


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "s"
    rows = sweep_rows(out, models=("vae", "ae"))
    return out, rows


def test_results_files(first_sweep):
    out, rows = first_sweep
    assert [(r["model"], r["latent"], r["status"]) for r in rows] == \
        [("vae", 2, "trained"), ("vae", 3, "trained"), ("ae", 2, "trained"), ("ae", 3, "trained")]
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    for col in ("latent", "seed", "test_loss", "iwae_nll", "active_units", "sharpness"):
        assert col in table[0]
    assert len(table) == 4
    assert float(table[0]["test_loss"]) == pytest.approx(rows[0]["test_loss"])
    assert table[2]["iwae_nll"] == ""  # the autoencoder has no likelihood bound
    for r in rows:
        assert r["test_loss"] > 0 and 0 < r["sharpness"] < 5 and r["epochs"] == 1
        assert (out / sweep.run_name(r["model"], r["latent"], r["seed"]) / CHECKPOINT).exists()
    vae = rows[0]
    # ELBO surgery: MI + marginal KL estimate the average KL; MI <= log N
    assert vae["mutual_info"] + vae["marginal_kl"] == pytest.approx(vae["test_kl"], abs=0.5)
    assert vae["mutual_info"] <= np.log(60) + 1e-6
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 4 and len(data["summary"]) == 4 and data["iwae_k"] == 5
    md = (out / "results.md").read_text()
    assert "| vae | 2 |" in md and "IWAE NLL (k=5)" in md and "| ae | 3 |" in md
    assert table[0]["protocol"] == "continuous" and "Protocol: continuous." in md
    with Image.open(out / "latent_comparison.png") as im:
        # rows: data + 4 reconstructions + 2 VAE prior rows; 10 digit classes; scale 2 (56 px + 2 pad)
        assert im.height == 16 + 7 * 58 + 2
        from cuvae.data import load_dataset

        labels = load_dataset("mnist", data_dir=SUBSET_DIR, train_size=1, test_size=60, progress=False,
                              log=lambda *_: None).test_y
        classes = len(set(labels.tolist()))  # one column per digit class present
        assert classes * 58 + 2 < im.width < classes * 58 + 2 + 120


def test_second_run_skips_finished(first_sweep):
    out, rows = first_sweep
    stamp = {r["run_dir"]: os.stat(os.path.join(r["run_dir"], CHECKPOINT)).st_mtime_ns for r in rows}
    again = sweep_rows(out, models=("vae", "ae"), pictures=False)
    assert [r["status"] for r in again] == ["skipped"] * 4
    assert {r["run_dir"]: os.stat(os.path.join(r["run_dir"], CHECKPOINT)).st_mtime_ns for r in again} == stamp
    same_values(rows, again, rtol=0)


def test_more_epochs_resumes_and_matches_a_straight_run(tmp_path, first_sweep):
    out, _ = first_sweep
    resumed = sweep_rows(out, epochs=2, latents=(2,), pictures=False)
    assert resumed[0]["status"] == "resumed" and resumed[0]["epochs"] == 2
    straight = sweep_rows(tmp_path / "straight", epochs=2, latents=(2,), pictures=False)
    same_values(straight, resumed, rtol=0)
    a = load_checkpoint(out / "vae-z2-s1").params
    b = load_checkpoint(tmp_path / "straight" / "vae-z2-s1").params
    assert np.array_equal(a, b)


def test_run_interrupted_mid_way_is_resumed(tmp_path):
    """A sweep killed during epoch 2 of 2 left a checkpoint of epoch 1: the next sweep finishes it."""
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.engine.events import EpochEnded
    from cuvae.cli.train import build_parser, config_from_args
    from cuvae.engine.trainer import Trainer

    args = build_parser().parse_args(TINY + ["--epochs", "2", "--latent", "2", "--seed", "1"])
    config = config_from_args(args)
    data = load_dataset("mnist", data_dir=SUBSET_DIR, train_size=200, test_size=60, progress=False, log=lambda *_: None)
    run_dir = tmp_path / "sweep" / "vae-z2-s1"
    trainer = Trainer(config, get_backend("cpu"), data, run_dir)
    trainer.listeners.append(lambda e: trainer.stop() if isinstance(e, EpochEnded) else None)
    assert trainer.run().reason == "stopped"
    assert load_checkpoint(run_dir).epoch == 1
    rows = sweep_rows(tmp_path / "sweep", epochs=2, latents=(2,), pictures=False)
    assert rows[0]["status"] == "resumed" and rows[0]["epochs"] == 2
    straight = sweep_rows(tmp_path / "straight", epochs=2, latents=(2,), pictures=False)
    assert np.array_equal(load_checkpoint(run_dir).params, load_checkpoint(tmp_path / "straight" / "vae-z2-s1").params)
    same_values(straight, rows, rtol=0)


def test_a_failed_run_does_not_stop_the_others(tmp_path):
    bad = tmp_path / "s" / "vae-z2-s1"
    bad.mkdir(parents=True)
    (bad / CHECKPOINT).write_bytes(b"not a zip file")
    rows = sweep_rows(tmp_path / "s", pictures=False)
    assert [r["status"] for r in rows] == ["failed", "trained"]
    assert "damaged" in rows[0]["error"]
    assert "failed: vae-z2-s1" in (tmp_path / "s" / "results.md").read_text()
    assert [r["latent"] for r in sweep.summarise(rows)] == [3]


def test_changed_options_are_refused_for_an_existing_run(first_sweep):
    out, _ = first_sweep
    rows = sweep.run_sweep(out, latents=(3,), seeds=(1,), train_args=TINY + ["--epochs", "1", "--lr", "0.01"],
                           device="cpu", data_dir=SUBSET_DIR, iwae_k=5, pictures=False)
    assert rows[0]["status"] == "failed" and "lr=0.01" in rows[0]["error"] and "new --out" in rows[0]["error"]


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(tmp_path, first_sweep):
    _, rows = first_sweep
    parallel = sweep_rows(tmp_path / "p", jobs=2, pictures=False)
    assert [r["status"] for r in parallel] == ["trained"] * 2
    same_values(rows[:2], parallel)


def test_cli_errors(tmp_path, capsys):
    from cuvae.cli.sweep import cli, main

    def run(*argv):
        import sys

        old = sys.argv
        try:
            code = sweep.run_main(main, list(argv))
        finally:
            sys.argv = old
        return code, capsys.readouterr().err

    code, err = run("--out", str(tmp_path), "--seed", "3")
    assert code == 2 and "--seeds 3" in err
    code, err = run("--out", str(tmp_path), "--resume", "x")
    assert code == 2 and "same command" in err
    code, err = run("--out", str(tmp_path), "--jobs", "2", "--ray", "auto")
    assert code == 2 and "one of --jobs" in err
    (tmp_path / "file").write_text("x")
    code, err = run("--out", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--latent", "0"])


def test_cli_end_to_end(tmp_path, capsys):
    code = sweep.main(["--out", str(tmp_path / "c"), "--latent", "2", "--epochs", "1", "--data-dir", str(SUBSET_DIR),
                       "--device", "cpu", "--iwae-k", "3", "--json", "--no-pictures", *TINY])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runs"][0]["latent"] == 2 and data["runs"][0]["iwae_k"] == 3
    assert not (tmp_path / "c" / "latent_comparison.png").exists()


def test_a_sweep_file_varies_any_option_and_resumes_only_missing_runs(tmp_path, first_sweep, capsys):
    """latent x lr from a file: 4 runs named by both axes, a column per axis, one summary row per
    (latent, lr); the lr=0.001 runs are the plain sweep's runs; a second start trains only what is missing."""
    import shutil

    out = tmp_path / "ax"
    (tmp_path / "ax.toml").write_text(f"""
out = "{out}"
[axes]
latent = [2, 3]
lr = [0.001, 0.003]
[training]
epochs = 1
hidden = [16]
train_size = 200
test_size = 60
batch_size = 50
[run]
device = "cpu"
data_dir = "{SUBSET_DIR}"
iwae_k = 5
no_pictures = true
json = true
""")
    assert sweep.main(["--config", str(tmp_path / "ax.toml")]) == 0
    captured = capsys.readouterr()
    assert "4 runs (vae x latent [2, 3] x lr [0.001, 0.003] x seeds [1])" in captured.err
    rows = json.loads(captured.out)["runs"]
    names = ["vae-z2-lr_0.001-s1", "vae-z2-lr_0.003-s1", "vae-z3-lr_0.001-s1", "vae-z3-lr_0.003-s1"]
    assert [os.path.basename(r["run_dir"]) for r in rows] == names
    for r in rows:
        cfg = json.loads((out / os.path.basename(r["run_dir"]) / "config.json").read_text())
        assert (cfg["latent"], cfg["lr"]) == (r["latent"], r["lr"]) and r["status"] == "trained"
    same_values(first_sweep[1][:2], [rows[0], rows[2]], rtol=0)  # lr 0.001 is the plain sweep's default
    assert rows[1]["test_loss"] != rows[0]["test_loss"]
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:4] == ["model", "latent", "lr", "seed"]
    assert [(t["latent"], t["lr"]) for t in table] == [("2", "0.001"), ("2", "0.003"), ("3", "0.001"), ("3", "0.003")]
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert [(s["latent"], s["lr"], s["seeds"]) for s in summary] == [(2, 0.001, [1]), (2, 0.003, [1]), (3, 0.001, [1]),
                                                                     (3, 0.003, [1])]
    assert "| model | latent | lr | seeds |" in (out / "results.md").read_text()

    shutil.rmtree(out / names[1])  # as if the sweep had been stopped before that run
    assert sweep.main(["--config", str(tmp_path / "ax.toml"), "--latent", "2", "--seeds", "1", "2"]) == 0
    again = {os.path.basename(r["run_dir"]): r["status"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert again == {names[0]: "skipped", names[1]: "trained", **{n.replace("-s1", "-s2"): "trained" for n in names[:2]}}
    summary = json.loads((out / "results.json").read_text())["summary"]
    # seeds grouped within each (latent, lr); the z3 runs this start did not touch are kept in the tables
    assert [(s["latent"], s["lr"], s["seeds"]) for s in summary] == [(2, 0.001, [1, 2]), (2, 0.003, [1, 2]),
                                                                     (3, 0.001, [1]), (3, 0.003, [1])]


def test_single_valued_options_pass_through_and_bad_combinations_stop_before_training(tmp_path, capsys):
    """Every training option reaches the runs (activation, objective, ... were once dropped), and a
    combination that cannot train fails at planning, naming the run, before anything is written."""
    from cuvae.engine.options import run_main

    args = sweep.build_parser().parse_args(["--out", "x", "--activation", "tanh", "--objective", "iwae", "--samples",
                                            "3", "--hidden", "32", "16", "--adam-eps", "1e-4", "--lr", "0.01", "0.02"])
    axes, fixed = sweep.split_axes(args)
    assert axes == {"lr": [0.01, 0.02]}
    assert fixed == {"hidden": [32, 16], "activation": "tanh", "objective": "iwae", "samples": 3, "adam_eps": 1e-4}
    code = run_main(sweep.main, ["--out", str(tmp_path / "s"), "--arch", "conv", "--activation", "relu", "tanh",
                                 "--latent", "2", "--device", "cpu"])
    assert code == 2 and not (tmp_path / "s").exists()
    assert "error: the run vae-z2-activation_tanh-s1: " in capsys.readouterr().err


def test_a_run_locked_by_another_process_is_neither_trained_nor_evaluated(first_sweep):
    """The sweep takes the run lock for training and evaluation alike (a finished run is only evaluated)."""
    import subprocess
    import sys

    out, rows = first_sweep
    run = out / "vae-z2-s1"
    result = (run / "result.json").read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from cuvae.engine import runlock; "
                               f"runlock.acquire({str(run)!r}); print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        (run / "result.json").unlink()  # so that the run would be evaluated again
        again = sweep_rows(out, latents=(2,), pictures=False)
        written = sorted(p.name for p in run.glob("result*"))
    finally:
        holder.communicate("", timeout=30)
        (run / "result.json").write_bytes(result)
    assert again[0]["status"] == "failed" and "in use by another cuvae process" in again[0]["error"]
    assert written == []


TOGETHER = ["--hidden", "16", "--train-size", "1000", "--test-size", "60", "--batch-size", "50", "--lr", "3e-3"]


def test_seeds_trained_together_write_separate_runs(tmp_path):
    """--seeds-together yes on the CPU (the k-model step's NumPy twins): each seed's run directory is a
    complete run; resumed together, both end exactly where cuvae.multi's MultiModel ends (the design's
    promise: model i is its seed's init, all see the first seed's batches); and they learn as much as
    separate runs of the same seeds."""
    from cuvae.backends.multi import MultiModel
    from cuvae.data import load_dataset
    from cuvae.data.base import prepare_images
    from cuvae.engine.config import TrainConfig

    def run(out, epochs, mode):
        return sweep.run_sweep(out, latents=(2,), seeds=(1, 2), train_args=TOGETHER + ["--epochs", str(epochs)],
                               device="cpu", data_dir=SUBSET_DIR, iwae_k=5, pictures=False, seeds_together=mode)

    first = run(tmp_path / "t", 1, "yes")
    together = run(tmp_path / "t", 2, "yes")
    assert [r["status"] for r in first] == ["trained"] * 2 and [r["status"] for r in together] == ["resumed"] * 2
    assert all(r["note"] == "seeds 1,2 of vae-z2 trained together as 2 models in one step, in seed 1's data order"
               for r in first + together)
    config = TrainConfig.from_dict(json.loads((tmp_path / "t" / "vae-z2-s1" / "config.json").read_text()))
    data = load_dataset("mnist", data_dir=SUBSET_DIR, train_size=1000, test_size=60, progress=False, log=lambda *_: None)
    multi = MultiModel(config.arch, [1, 2], prepare_images(data.train_x, "none", np.float32), batch=50, lr=3e-3,
                       init="pytorch", seed=1, engine="twin")
    for epoch in (1, 2):
        multi.train_epoch(epoch)
    for i, r in enumerate(together):
        ckpt = load_checkpoint(r["run_dir"])
        assert ckpt.epoch == 2 and ckpt.adam_step == 40
        np.testing.assert_allclose(ckpt.params, multi.params(i), rtol=1e-5, atol=1e-6)

    apart = run(tmp_path / "a", 2, "no")
    assert all(not r.get("note") for r in apart)
    for t, a in zip(together, apart):
        assert t["test_loss"] == pytest.approx(a["test_loss"], rel=0.06) and t["test_loss"] < 0.6 * 543  # untrained: ln 2 * 784
        tdir, adir = (os.path.dirname(r["run_dir"] + "/") for r in (t, a))
        assert sorted(os.listdir(tdir)) == sorted(os.listdir(adir) + ["together.json"])
        for name in ("config.json", "train.log"):
            assert (len(open(os.path.join(tdir, name)).read().splitlines())
                    == len(open(os.path.join(adir, name)).read().splitlines()))
        assert open(os.path.join(tdir, "config.json")).read() == open(os.path.join(adir, "config.json")).read()
        lines = [json.loads(s) for s in open(os.path.join(tdir, "metrics.jsonl"))]
        assert [sorted(m) for m in lines] == [sorted(json.loads(s)) for s in open(os.path.join(adir, "metrics.jsonl"))]
        assert [m["epoch"] for m in lines] == [1, 2] and lines[1]["test_loss"] == t["test_loss"]


def test_seeds_the_k_model_step_cannot_train_go_one_by_one_and_say_why(tmp_path):
    rows = sweep.run_sweep(tmp_path / "s", latents=(2,), seeds=(1, 2), device="cpu", data_dir=SUBSET_DIR, iwae_k=5,
                           train_args=TINY + ["--epochs", "1", "--activation", "tanh"], pictures=False,
                           seeds_together="yes")
    assert [r["status"] for r in rows] == ["trained"] * 2
    assert [r.get("note") for r in rows] == ["seeds 1,2 of vae-z2 trained one by one: the k-model step cannot train "
                                             "--activation tanh", None]
    assert not list((tmp_path / "s").glob("*/together.json"))
