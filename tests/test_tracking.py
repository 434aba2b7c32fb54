"""--tensorboard and --mlflow: what a run logs, read back with TensorBoard's and MLflow's own readers and
compared with metrics.jsonl; resume continues the same logs; a failing logger never stops training."""

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cuvae.cli import train
from cuvae.engine.options import run_main
from conftest import SUBSET

pytest.importorskip("tensorboardX", reason="the tracking extras are not installed (pip install -e '.[test]')")

TINY = ["--device", "cpu", "--data-dir", str(SUBSET), "--hidden", "16", "--latent", "3", "--train-size", "200",
        "--test-size", "50", "--batch-size", "20", "--json"]


def metrics_lines(run_dir):
    return [json.loads(s) for s in (run_dir / "metrics.jsonl").read_text().splitlines()]


def accumulator(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_match_metrics_jsonl_and_resume_continues(tmp_path, capsys):
    run, tb = tmp_path / "run", tmp_path / "tb"
    assert train.main([*TINY, "--out", str(run), "--epochs", "2", "--tensorboard", str(tb)]) == 0
    assert train.main([*TINY, "--resume", str(run), "--epochs", "3", "--tensorboard", str(tb)]) == 0
    assert [p.name for p in tb.iterdir()] == ["run"]  # one run name per run directory, resumed or not
    acc = accumulator(tb / "run")
    lines = metrics_lines(run)
    assert [m["epoch"] for m in lines] == [1, 2, 3]
    steps_per_epoch = 200 // 20
    tags = acc.Tags()
    for key in ("train_loss", "train_kl", "test_loss", "test_recon", "test_kl", "active_units", "examples_per_s", "beta"):
        events = acc.Scalars(f"epoch/{key}")
        assert [e.step for e in events] == [m["epoch"] * steps_per_epoch for m in lines], key
        assert [e.value for e in events] == pytest.approx([m[key] for m in lines], rel=1e-6), key
    for key in ("loss", "recon", "kl", "examples_per_s", "lr"):
        events = acc.Scalars(f"train_step/{key}")
        assert events and all(0 < e.step <= 3 * steps_per_epoch for e in events)
    # the epoch's last step report is the epoch's training mean of metrics.jsonl
    last = {e.step: e.value for e in acc.Scalars("train_step/loss")}
    assert [last[m["epoch"] * steps_per_epoch] for m in lines] == pytest.approx([m["train_loss"] for m in lines], rel=1e-6)
    assert [e.value for e in acc.Scalars("train_step/lr")] == pytest.approx([1e-3] * len(acc.Scalars("train_step/lr")))
    # latent dimension i's KL is bucket i; the dimensions' KL adds up to the test KL
    hists = acc.Histograms("latent/kl_per_dim")
    assert len(hists) == 3
    for h, m in zip(hists, lines):
        counts = list(h.histogram_value.bucket)
        assert len(counts) == 3 and min(counts) >= 0
        assert sum(counts) == pytest.approx(m["test_kl"], rel=1e-5)
        assert list(h.histogram_value.bucket_limit) == [0.5, 1.5, 2.5]
    from PIL import Image

    with Image.open(run / "samples.png") as png:
        size = png.size
    images = acc.Images("pictures/samples")
    assert images and (images[-1].width, images[-1].height) == size
    assert "pictures/reconstructions" in tags["images"]
    text = acc.Tensors("test_protocol/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "first 50 test examples" in text
    assert "warning" not in capsys.readouterr().err


def test_tensorboard_failures_never_stop_training(tmp_path, capsys):
    (tmp_path / "tb").write_text("a file where the log folder should be")
    run = tmp_path / "run"
    assert train.main([*TINY, "--out", str(run), "--epochs", "1", "--tensorboard", str(tmp_path / "tb")]) == 0
    err = capsys.readouterr().err
    assert err.count("TensorBoard logging to") == 1 and "training goes on" in err
    assert len(metrics_lines(run)) == 1

    # a disk that fills up after the first epoch: the OS's own ENOSPC, from /dev/full
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.engine.events import EpochEnded
    from cuvae.engine.tracking.tensorboard import TensorBoardLogger
    from cuvae.engine.trainer import Trainer

    args = train.build_parser().parse_args([*TINY, "--epochs", "3"])
    config = train.config_from_args(args)
    data = load_dataset("mnist", data_dir=SUBSET, train_size=200, test_size=50, progress=False, log=lambda *_: None)
    warnings = []
    logger = TensorBoardLogger(tmp_path / "tb2", tmp_path / "run2", warnings.append)

    def fill_disk(event):
        if isinstance(event, EpochEnded) and event.epoch == 1:
            logger.writer._py_recordio_writer._writer = open("/dev/full", "wb")

    trainer = Trainer(config, get_backend("cpu"), data, tmp_path / "run2", listeners=[logger, fill_disk])
    assert trainer.run().reason == "completed"
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    assert "failed at the pictures of epoch 1" in warnings[0] and "holds epochs up to 1" in warnings[0], warnings[0]
    assert len(metrics_lines(tmp_path / "run2")) == 3
    assert [e.value for e in accumulator(tmp_path / "tb2" / "run2").Scalars("epoch/test_loss")] == \
        pytest.approx([metrics_lines(tmp_path / "run2")[0]["test_loss"]], rel=1e-6)


@pytest.mark.parametrize("store", ["sqlite", "file"])
def test_mlflow_run_params_metrics_artifacts_and_resume(tmp_path, store, capsys):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    # MLflow creates its SQLite schema in ~40 fsync'd migrations: in memory-backed /dev/shm that takes
    # about a second, on a busy disk 20 s
    db_dir = Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else tmp_path
    uri = f"sqlite:///{db_dir / 'mlflow.db'}" if store == "sqlite" else (tmp_path / "mlruns").as_uri()
    run = tmp_path / "run"
    assert train.main([*TINY, "--out", str(run), "--epochs", "1", "--mlflow", uri, "--mlflow-experiment", "toolbox"]) == 0
    assert train.main([*TINY, "--resume", str(run), "--epochs", "2", "--mlflow", uri, "--mlflow-experiment", "toolbox"]) == 0
    assert "warning" not in capsys.readouterr().err
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("toolbox")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed run continued the same MLflow run
    r = runs[0]
    assert r.info.run_id == json.loads((run / "mlflow.json").read_text())["run_id"]
    assert r.info.run_name == "run" and r.info.status == "FINISHED"
    config = json.loads((run / "config.json").read_text())
    assert r.data.params["latent"] == "3" and r.data.params["hidden"] == "[16]" and r.data.params["lr"] == str(config["lr"])
    lines = metrics_lines(run)
    for key in ("test_loss", "test_kl", "train_loss", "active_units"):
        history = client.get_metric_history(r.info.run_id, key)
        assert [(h.step, h.value) for h in history] == [(m["epoch"], pytest.approx(m[key])) for m in lines], key
    steps = client.get_metric_history(r.info.run_id, "step/loss")
    assert steps and max(h.step for h in steps) == 2 * 10
    names = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"checkpoint.npz", "samples.png", "reconstructions.png", "config.json", "metrics.jsonl"} <= names
    local = client.download_artifacts(r.info.run_id, "checkpoint.npz", str(tmp_path / "dl"))
    assert open(local, "rb").read() == (run / "checkpoint.npz").read_bytes()
    if store == "sqlite":  # artifacts beside the database, not in the working folder
        assert (db_dir / "mlartifacts").is_dir() and not os.path.exists("mlruns")
        shutil.rmtree(db_dir)


def test_mlflow_store_lost_mid_run_never_stops_training(tmp_path):
    pytest.importorskip("mlflow")
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.engine.events import EpochEnded
    from cuvae.engine.tracking.mlflow import MlflowLogger
    from cuvae.engine.trainer import Trainer

    store = tmp_path / "mlruns"
    args = train.build_parser().parse_args([*TINY, "--epochs", "3"])
    data = load_dataset("mnist", data_dir=SUBSET, train_size=200, test_size=50, progress=False, log=lambda *_: None)
    warnings = []
    logger = MlflowLogger(store.as_uri(), tmp_path / "run", warnings.append)

    def lose_store(event):
        if isinstance(event, EpochEnded) and event.epoch == 1:
            store.rename(tmp_path / "moved")
            store.write_text("not a folder any more")

    trainer = Trainer(train.config_from_args(args), get_backend("cpu"), data, tmp_path / "run", listeners=[logger, lose_store])
    assert trainer.run().reason == "completed"
    assert len(warnings) == 1 and "MLflow logging to" in warnings[0] and "holds epochs up to 1" in warnings[0], warnings
    assert len(metrics_lines(tmp_path / "run")) == 3


def test_missing_library_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    assert run_main(train.main, [*TINY, "--out", str(tmp_path / "r"), "--tensorboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'cuvae[tensorboard]'" in err
    assert not (tmp_path / "r").exists()


def test_a_sweep_logs_each_run_under_its_own_name(tmp_path):
    from cuvae.cli import sweep

    rows = sweep.run_sweep(tmp_path / "s", latents=(2,), seeds=(1, 2), device="cpu", data_dir=SUBSET, iwae_k=2,
                           train_args=["--hidden", "16", "--train-size", "100", "--test-size", "20", "--batch-size", "50",
                                       "--epochs", "1"], pictures=False, tracking={"tensorboard": str(tmp_path / "tb")})
    assert [r["status"] for r in rows] == ["trained", "trained"]
    for r in rows:
        name = os.path.basename(r["run_dir"])
        events = accumulator(tmp_path / "tb" / "s" / name).Scalars("epoch/test_loss")
        assert [e.value for e in events] == pytest.approx([metrics_lines(Path(r["run_dir"]))[0]["test_loss"]], rel=1e-6)


def test_mlflow_from_a_resume_on_gets_the_earlier_epochs_too(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri, run = (tmp_path / "mlruns").as_uri(), tmp_path / "run"
    assert train.main([*TINY, "--out", str(run), "--epochs", "1"]) == 0
    assert train.main([*TINY, "--resume", str(run), "--epochs", "2", "--mlflow", uri]) == 0
    client = MlflowClient(tracking_uri=uri)
    (r,) = client.search_runs([client.get_experiment_by_name("cuvae").experiment_id])
    history = client.get_metric_history(r.info.run_id, "test_loss")
    assert [(h.step, h.value) for h in history] == [(m["epoch"], pytest.approx(m["test_loss"])) for m in metrics_lines(run)]
