"""Issue 12: runs that cannot silently change data or mix histories, one-line errors for I/O failures,
a bounded offline fallback, one evaluation seed. Tiny models on tiny data; in-process where possible."""

from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SUBSET
from cuvae.engine.checkpoint import CHECKPOINT, Checkpoint, load_checkpoint, save_checkpoint
from cuvae.engine.config import TrainConfig
from cuvae.errors import CheckpointError, CuvaeError, DataError

TINY = ["--hidden", "16", "--latent", "2", "--train-size", "200", "--test-size", "100", "--batch-size", "50",
        "--device", "cpu"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No network (a closed port), an empty cache, no $CUVAE_DATA_DIR: the bundled subset unless told."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CUVAE_MIRRORS", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CUVAE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def train(argv, capsys=None):
    """cuvae-train in this process: (exit code, stderr)."""
    from cuvae.cli.train import main
    from cuvae.engine.options import run_main

    try:
        code = run_main(main, list(map(str, argv)))
    except SystemExit as exit:  # argparse
        code = exit.code
    err = capsys.readouterr().err if capsys else ""
    return code, err


def idx(arr: np.ndarray) -> bytes:
    magic = 0x803 if arr.ndim == 3 else 0x801
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def write_mnist(folder: Path, n_train=200, n_test=100, seed=1) -> Path:
    """A hand-made folder of the four IDX files (other digits than the subset's)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(idx(rng.integers(0, 256, (n, 28, 28))))
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(idx(rng.integers(0, 10, n)))
    return folder


# ---- data provenance ------------------------------------------------------------------------------
def test_resume_reads_the_runs_own_data_and_refuses_other_data(tmp_path, capsys):
    mine = write_mnist(tmp_path / "mine")
    other = write_mnist(tmp_path / "other", seed=2)
    run = tmp_path / "run"
    code, err = train(TINY + ["--epochs", "1", "--out", run, "--data-dir", mine], capsys)
    assert code == 0, err
    record = json.loads((run / "config.json").read_text())["data"]
    assert record["path"] == str(mine.resolve()) and record["train"] == 200 and record["test"] == 100
    assert len(record["sha256"]) == 64 and load_checkpoint(run).data == record
    # no --data-dir: today's lookup would give the bundled subset; the run reads its own data instead
    code, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0, err
    assert f"from {mine.resolve()}" in err and "bundled subset" not in err
    # pointed at other data: refused in one line naming both, nothing trained
    code, err = train(["--resume", run, "--epochs", "3", "--data-dir", other], capsys)
    assert code == 2 and err.count("error:") == 1 and err.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in err
    assert str(mine.resolve()) in err and str(other.resolve()) in err and record["sha256"][:12] in err
    assert load_checkpoint(run).epoch == 2
    # pointed elsewhere at the same data: accepted
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in mine.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    code, err = train(["--resume", run, "--epochs", "3", "--data-dir", copy], capsys)
    assert code == 0, err
    assert load_checkpoint(run).data["path"] == str(copy.resolve())  # the record follows the data
    # the data moved away: one line saying so
    copy.rename(tmp_path / "moved")
    code, err = train(["--resume", run, "--epochs", "4"], capsys)
    assert code == 2 and "is gone" in err and "--data-dir" in err


def test_subset_runs_resume_on_the_subset_even_when_full_data_appears(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(TINY + ["--epochs", "1", "--out", run], capsys)[0] == 0
    assert json.loads((run / "config.json").read_text())["data"]["subset"] is True
    monkeypatch.setenv("CUVAE_DATA_DIR", str(write_mnist(tmp_path / "full", n_train=300)))
    code, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0 and "bundled MNIST subset" in err, err


def test_checkpoints_without_a_data_record_still_load_and_resume(tmp_path, capsys):
    run = tmp_path / "old"
    assert train(TINY + ["--epochs", "1", "--out", run], capsys)[0] == 0
    ck = load_checkpoint(run)
    ck.data = None  # as written before the record existed
    save_checkpoint(run, ck)
    cfg = json.loads((run / "config.json").read_text())
    assert "data" not in cfg
    assert load_checkpoint(run).data is None
    code, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 0, err


# ---- one writer per run directory -----------------------------------------------------------------
HOLD = "import sys, time; from cuvae.engine import runlock; runlock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.perf_counter()
        code, err = train(TINY + ["--epochs", "1", "--out", run], capsys)
        assert code == 2 and f"pid {holder.pid}" in err and "in use by another cuvae process" in err, err
        assert time.perf_counter() - t0 < 30 and "epoch" not in err.split("error:")[0]  # refused before training
        assert not (run / "metrics.jsonl").exists()
        # the sweep and the UI go through Trainer.run, which takes the same lock
        from cuvae.cli.sweep import RunSpec, run_one

        row = run_one(RunSpec(str(run), TrainConfig(hidden=(16,), latent=2, epochs=1, train_size=200,
                                                     test_size=100, batch_size=50).to_dict(), device="cpu"))
        assert row["status"] == "failed" and "in use" in row["error"]
        from cuvae.data import load_dataset
        from cuvae.backends.backend import get_backend
        from cuvae.engine.trainer import Trainer

        data = load_dataset("mnist", train_size=200, test_size=100, log=None)
        trainer = Trainer(TrainConfig(hidden=(16,), latent=2, epochs=1, batch_size=50), get_backend("cpu"), data, run)
        with pytest.raises(CuvaeError, match="in use"):
            trainer.run()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock
        holder.wait()
    code, err = train(TINY + ["--epochs", "1", "--out", run], capsys)
    assert code == 0, err


def test_two_writers_at_once_never_mix_histories(tmp_path):
    run = tmp_path / "same"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cuvae.train", *TINY, "--epochs", "3", "--out", str(run)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    errs = [e for _, e in outs]
    # one trains; the other is refused (or, if it came second, finds the checkpoint and says so)
    assert codes == [0, 2], errs
    assert any("in use by another cuvae process" in e or "already holds a checkpoint" in e for e in errs), errs
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


# ---- stopping before the first epoch, NaN -------------------------------------------------------------
def test_ctrl_c_in_epoch_one_prints_a_resume_command_that_works(tmp_path, monkeypatch, capsys):
    from cuvae.engine.trainer import Trainer

    real = Trainer._warm_up
    monkeypatch.setattr(Trainer, "_warm_up", lambda self: (real(self), self.stop()))  # as if Ctrl-C came at once
    run = tmp_path / "run"
    code, err = train(TINY + ["--epochs", "2", "--seed", "5", "--out", run], capsys)
    assert code == 130 and "no epoch finished yet" in err
    assert not (run / CHECKPOINT).exists() and (run / "config.json").exists()
    command = err.split("Resume with: ")[1].split(" (")[0].split()
    assert command[:2] == ["cuvae-train", "--resume"]
    monkeypatch.setattr(Trainer, "_warm_up", real)
    code, err = train(command[1:], capsys)
    assert code == 0, err
    ck = load_checkpoint(run)
    assert ck.epoch == 2 and ck.config.seed == 5 and ck.config.hidden == (16,)


def test_nan_on_a_fresh_run_names_no_checkpoint_that_does_not_exist(tmp_path):
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.engine.trainer import Trainer

    data = load_dataset("mnist", train_size=100, test_size=50, log=None)
    trainer = Trainer(TrainConfig(hidden=(16,), latent=2, epochs=1, batch_size=50), get_backend("cpu"), data,
                      tmp_path / "r")
    message = trainer._diverged(1).message
    assert "epoch 0" not in message and "nothing was saved" in message


# ---- sweeps --------------------------------------------------------------------------------------
def test_a_refused_sweep_rerun_keeps_the_good_rows_and_evaluation_uses_the_runs_seed(tmp_path, capsys):
    from cuvae.cli import sweep
    from cuvae.cli.evaluate import evaluate_run

    out = tmp_path / "sw"
    args = ["--hidden", "16", "--train-size", "200", "--test-size", "100", "--batch-size", "50", "--epochs", "1",
            "--recipe", "chapter"]
    rows = sweep.run_sweep(out, latents=(2,), seeds=(3,), train_args=args, device="cpu", iwae_k=3, pictures=False)
    assert rows[0]["status"] == "trained", rows
    good = (out / "results.csv").read_text()
    # one evaluation seed everywhere: the sweep's row is the training log's last test figure
    last = json.loads((out / "vae-z2-s3" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rows[0]["eval_seed"] == 3 and rows[0]["test_loss"] == pytest.approx(last["test_loss"], rel=1e-9)
    ev = evaluate_run(out / "vae-z2-s3", iwae_k=2, pictures=False, progress=False)
    assert ev["eval_seed"] == 3 and ev["test_loss"] == pytest.approx(last["test_loss"], rel=1e-9)
    assert "bundled subset (first 200 of 10,000 train / first 100 of 2,000 test)" in rows[0]["data"]
    results = json.loads((out / "results.json").read_text())
    assert results["data"] == [rows[0]["data"]]
    assert "Gaussian (SSE) runs" in (out / "results.md").read_text()
    # the same sweep with a conflicting option: every run refused, the good row stays beside the failure
    again = sweep.run_sweep(out, latents=(2,), seeds=(3,), train_args=args + ["--lr", "0.01"], device="cpu", iwae_k=3,
                            pictures=False)
    assert again[0]["status"] == "failed" and "lr=0.01" in again[0]["error"]
    lines = (out / "results.csv").read_text().splitlines()
    assert good.splitlines()[1].split(",")[5] in lines[1] and "earlier" in lines[1] and "failed" in lines[2]
    md = (out / "results.md").read_text()
    assert "| vae | 2 | 1 |" in md and "- failed: vae-z2-s3" in md
    assert sweep.main(["--latent", "2", "--seeds", "3", "--out", str(out), "--iwae-k", "3", "--no-pictures",
                       "--device", "cpu", *args, "--lr", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "data: MNIST bundled subset" in err


def test_evaluate_prints_its_figures_before_a_picture_failure(tmp_path, monkeypatch, capsys):
    from cuvae.cli import evaluate, show
    from cuvae.engine.options import run_main
    from PIL import Image

    run = tmp_path / "run"
    assert train(TINY + ["--epochs", "1", "--out", run, "--recipe", "chapter"], capsys)[0] == 0

    def read_only(self, fp, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(fp))

    monkeypatch.setattr(Image.Image, "save", read_only)
    before = (run / "samples.png").read_bytes()
    code = run_main(evaluate.main, [str(run), "--iwae-k", "2", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and "test negative ELBO" in out and "Traceback" not in err
    assert "cannot write the picture" in err and "Read-only file system" in err and "--no-pictures" in err
    assert "evaluation seed: 0 (the run" in err and "784/2 ln pi" in err and "392 ln pi" not in err
    assert (run / "samples.png").read_bytes() == before and not list(run.glob(".*.tmp"))
    code = run_main(show.main, [str(run), "samples", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot write the picture" in err


def test_gaussian_note_uses_the_images_own_dimension(tmp_path, capsys):
    from PIL import Image
    from cuvae.cli import evaluate
    from cuvae.engine.options import run_main

    folder = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)).save(folder / split / c / f"{i}.png")
    run = tmp_path / "g"
    code, err = train(["--dataset", f"folder:{folder}", "--likelihood", "gaussian", "--hidden", "8", "--latent", "2",
                       "--batch-size", "20", "--epochs", "1", "--device", "cpu", "--out", run], capsys)
    assert code == 0, err
    assert run_main(evaluate.main, [str(run), "--iwae-k", "2", "--device", "cpu", "--no-pictures"]) == 0
    err = capsys.readouterr().err
    assert f"SSE + 30/2 ln pi = SSE + {15 * np.log(np.pi):.3f}" in err


# ---- one-line errors --------------------------------------------------------------------------------
def test_out_that_cannot_be_written_fails_at_once(tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = train(TINY + ["--epochs", "1", "--out", afile], capsys)
    assert code == 2 and "is a file" in err and "Traceback" not in err
    code, err = train(TINY + ["--epochs", "1", "--out", afile / "run"], capsys)
    assert code == 2 and "cannot create the run directory" in err
    real_open = os.open

    def ro_open(path, flags, *a, **k):  # a read-only folder, as root sees one: permissions do not stop root
        if str(path).startswith(str(tmp_path / "ro")) and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", ro_open)
    code, err = train(TINY + ["--epochs", "1", "--out", tmp_path / "ro"], capsys)
    assert code == 2 and "Read-only file system" in err and "epoch   1" not in err and "Traceback" not in err


def _tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_real_read_only_and_full_disks(tmp_path, capsys):
    ro, full = tmp_path / "ro", tmp_path / "full"
    if not _tmpfs(ro, "ro,size=1m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        code, err = train(TINY + ["--epochs", "1", "--out", ro / "run"], capsys)
        assert code == 2 and "Read-only file system" in err and "Traceback" not in err
        assert _tmpfs(full, "size=64k")  # room for config.json and metrics, not for a checkpoint
        code, err = train(TINY + ["--epochs", "1", "--out", full / "run"], capsys)
        assert code == 2 and "No space left on device" in err and "no checkpoint was written" in err, err
        assert "Traceback" not in err and not [p for p in (full / "run").iterdir() if ".tmp" in p.name]
    finally:
        for m in (ro, full):
            subprocess.run(["umount", str(m)], capture_output=True)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    import cuvae.engine.checkpoint as ck

    run = tmp_path / "run"
    assert train(TINY + ["--epochs", "1", "--out", run], capsys)[0] == 0
    before = (run / CHECKPOINT).read_bytes()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.np, "savez", full)
    code, err = train(["--resume", run, "--epochs", "2"], capsys)
    assert code == 2 and "No space left on device" in err and "the checkpoint of epoch 1 is intact" in err, err
    assert f"cuvae-train --resume {run}" in err and "Traceback" not in err
    assert (run / CHECKPOINT).read_bytes() == before and not list(run.glob(".*tmp*"))
    monkeypatch.undo()
    _offline_again = train(["--resume", run, "--epochs", "2"], capsys)
    assert _offline_again[0] == 0 and load_checkpoint(run).epoch == 2


def test_bad_values_get_one_line(tmp_path, monkeypatch, capsys):
    code, err = train(TINY + ["--seed", "-1", "--out", tmp_path / "a"], capsys)
    assert code == 2 and "expected an integer >= 0, got -1" in err
    with pytest.raises(CuvaeError, match="--seed"):
        TrainConfig(seed=-1)
    t0 = time.perf_counter()
    code, err = train(["--hidden", "100000", "100000", "--epochs", "1", "--device", "cpu", "--train-size", "100",
                       "--out", tmp_path / "big"], capsys)
    assert code == 2 and "would need at least" in err and "GiB" in err and "Traceback" not in err
    assert time.perf_counter() - t0 < 10
    import cuvae.backends.backend as backend

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "get_backend", interrupted)
    code, err = train(TINY + ["--out", tmp_path / "c"], capsys)
    assert code == 130 and err.strip() == "interrupted before training started; nothing was changed"


def _npz(path: Path, meta, **arrays):
    np.savez(path, meta=np.array(meta if isinstance(meta, str) else json.dumps(meta)), **arrays)


def test_malformed_checkpoints_are_named(tmp_path):
    cfg = TrainConfig(hidden=(4,), latent=2)
    n = cfg.arch.layout().size
    good = {"format": 1, "config": cfg.to_dict(), "epoch": 1, "adam_step": 3}
    f = np.zeros(n, np.float32)
    cases = [
        (good, dict(params=np.float32(1.0), adam_m=f, adam_v=f), "params array of shape ()"),
        (good, dict(params=np.array(["a"] * n), adam_m=f, adam_v=f), "params array of dtype <U1"),
        (good, dict(params=f, adam_m=np.zeros((n - 1, 1), np.float32), adam_v=f),
         f"adam_m array of shape ({n - 1}, 1), but its config"),
        ([1, 2], dict(params=f, adam_m=f, adam_v=f), "JSON list"),
        ({**good, "epoch": "one"}, dict(params=f, adam_m=f, adam_v=f), "'epoch' of type str"),
        ({**good, "config": {**cfg.to_dict(), "hidden": "x"}}, dict(params=f, adam_m=f, adam_v=f), "config that cuvae"),
    ]
    for i, (meta, arrays, needle) in enumerate(cases):
        path = tmp_path / f"c{i}.npz"
        _npz(path, meta, **arrays)
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(path)
        assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)
    path = tmp_path / "pickled.npz"
    np.savez(path, meta=np.array(json.dumps(good)), params=np.array([{"x": 1}], dtype=object), adam_m=f, adam_v=f)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    assert "allow_pickle" not in str(exc.value) and "never loads" in str(exc.value)


def test_image_zips_and_cifar_batches_are_refused_by_name(tmp_path, monkeypatch):
    from PIL import Image
    from cuvae.data.images import load_folder, read_cifar_batch
    import io

    def png(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("train/a/0.png", png(np.zeros((28, 28), np.uint8)))
        zf.writestr("train/a/1.png", b"not an image at all")
        zf.writestr("test/a/0.png", png(np.zeros((28, 28), np.uint8)))
    with pytest.raises(DataError) as exc:
        load_folder(z, log=lambda *_: None)
    assert "train/a/1.png" in str(exc.value) and "BytesIO" not in str(exc.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 784 pixels > 2x the limit: Pillow calls it a bomb
    with pytest.raises(DataError, match=r"train/a/0.png is too large to decode safely"):
        load_folder(z, log=lambda *_: None)
    raw = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": ["cat", "dog"]}, protocol=2)
    with pytest.raises(DataError, match="labels must be whole numbers"):
        read_cifar_batch(raw, "batch")


# ---- downloads and the offline fallback --------------------------------------------------------------
@pytest.fixture
def silent_mirror():
    """127.0.0.1: accepts connections, counts them, and never answers a byte."""
    import threading

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    s.settimeout(0.1)
    held, stop = [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                held.append(s.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{s.getsockname()[1]}/", held
    stop.set()
    t.join()
    for c in held:
        c.close()
    s.close()


def test_a_mirror_that_never_answers_is_given_up_quickly_and_remembered(silent_mirror, monkeypatch, tmp_path):
    from cuvae.data import download, load_dataset

    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 0.6)
    monkeypatch.setattr(download, "DEADLINE_S", 1.0)
    monkeypatch.setattr(download, "WAIT_NOTICE_S", 0.2)
    url, held = silent_mirror
    monkeypatch.setenv("CUVAE_MIRRORS", f"{url},{url}x/,{url}y/")
    logs = []
    t0 = time.perf_counter()
    data = load_dataset("mnist", train_size=100, test_size=50, progress=False, log=logs.append)
    first = time.perf_counter() - t0
    assert data.is_subset and first < 6.0, (first, logs)  # 2 x 0.6 s would do; the rest is a busy machine
    assert len(held) == 2  # the third mirror was skipped: the 1 s deadline had passed
    assert any(m.startswith("waiting for 127.0.0.1") and "giving up after" in m for m in logs), logs
    fallback = [m for m in logs if m.startswith("no local MNIST")][0]
    assert "first 100 of 10,000 train / first 50 of 2,000 test" in fallback and fallback.endswith("network access")
    assert "no network (127.0.0.1" in fallback and "..." not in fallback
    load_dataset("mnist", train_size=100, test_size=50, progress=False, log=logs.append)
    assert len(held) == 2  # the next load in this process knows the network is down: no new connection
    empty = tmp_path / "nothing-here"  # an explicit folder: an error, and no empty folder left behind
    with pytest.raises(DataError):
        load_dataset("mnist", data_dir=empty, progress=False, log=logs.append)
    assert not empty.exists()


def test_a_full_disk_during_a_download_is_one_line(monkeypatch, tmp_path):
    import http.server
    import threading

    from cuvae.data import download

    body = gzip.compress(b"x" * 1000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    try:
        def full(fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(download.os, "write", full)
        dest = tmp_path / "dl"
        with pytest.raises(DataError, match="No space left on device; free some disk space"):
            download.download_file("f.gz", [f"http://127.0.0.1:{srv.server_address[1]}/"], dest, "0" * 64,
                                   progress=False, log=lambda *_: None)
        assert not dest.exists() or not list(dest.iterdir())
    finally:
        srv.shutdown()
        srv.server_close()


# ---- wording -----------------------------------------------------------------------------------------
def test_start_up_and_end_lines(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = train(TINY + ["--epochs", "1", "--out", run], capsys)
    assert code == 0 and err.count(str(run)) == 3  # the training line, "model in", "evaluate with"
    assert "trained 1 epoch;" in err and "1 epochs" not in err
    code, err = train(["--resume", run, "--epochs", "1"], capsys)
    assert "already trained for 1 epoch;" in err
    code, err = train(["--resume", run, "--train-size", "300"], capsys)
    assert code == 2 and "--resume keeps the run's --train-size 200;" in err and "train_size" not in err


def test_collapse_advice_fits_the_run():
    from cuvae.engine.trainer import COLLAPSE_MIN_STEPS, collapse_advice

    chapter = TrainConfig.from_recipe("chapter", lr=0.01)
    assert "0.01 collapses this network" in collapse_advice(chapter)
    calm = collapse_advice(TrainConfig.from_recipe("chapter", kl_warmup=5))
    assert "--lr" not in calm and "0.01" not in calm
    conv = collapse_advice(TrainConfig(arch_type="conv", kl_warmup=3))
    assert "--lr" not in conv and "--channels" in conv
    assert COLLAPSE_MIN_STEPS >= 200


def test_no_collapse_warning_after_a_few_steps(tmp_path, capsys):
    code, err = train(TINY + ["--epochs", "1", "--latent", "8", "--beta", "50", "--out", tmp_path / "r"], capsys)
    assert code == 0 and "posterior collapse" not in err  # 4 steps: too early to tell


def test_readme_examples_work_offline_and_say_how_to_run_them():
    readme = (ROOT / "README.md").read_text()
    train_section = readme.split("## Train", 1)[1].split("##", 1)[0]
    first = [line for line in train_section.splitlines() if line.startswith("$ cuvae-train")][0]
    assert "--data-dir" not in first
    assert ".venv/bin/activate" in readme
    sweeps = readme.split("## Sweeps", 1)[1].split("\n## ", 1)[0]
    assert "ray start --head" in sweeps and "--ray auto" in sweeps
    assert "392" not in readme.split("## Evaluate", 1)[1].split("\n## ", 1)[0]


def test_a_run_that_never_started_leaves_no_folder(tmp_path, capsys):
    code, err = train(["--hidden", "100000", "100000", "--epochs", "1", "--device", "cpu", "--train-size", "100",
                       "--out", tmp_path / "big"], capsys)
    assert code == 2 and not (tmp_path / "big").exists()
    (tmp_path / "kept").mkdir()  # a folder the user made stays
    train(["--hidden", "100000", "100000", "--device", "cpu", "--train-size", "100", "--out", tmp_path / "kept"], capsys)
    assert (tmp_path / "kept").is_dir()


def test_a_full_disk_for_a_picture_during_training_says_what_is_kept(tmp_path, monkeypatch, capsys):
    from PIL import Image

    def full(self, fp, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)
    run = tmp_path / "run"
    code, err = train(TINY + ["--epochs", "2", "--out", run], capsys)
    assert code == 2 and "cannot write the picture" in err and "the checkpoint holds epoch 1" in err, err
    assert load_checkpoint(run).epoch == 1 and "Traceback" not in err


def test_collapse_warning_comes_once_after_enough_steps(tmp_path, monkeypatch, capsys):
    import cuvae.engine.trainer as trainer

    monkeypatch.setattr(trainer, "COLLAPSE_MIN_STEPS", 8)  # 4 steps per epoch: epoch 2 is the first to qualify
    code, err = train(TINY + ["--epochs", "3", "--latent", "8", "--beta", "50", "--out", tmp_path / "r"], capsys)
    assert code == 0 and err.count("posterior collapse") == 1, err
    line = [x for x in err.splitlines() if "posterior collapse" in x][0]
    assert "after 8 steps" in line and "smaller --beta than 50" in line and "0.01" not in line
    assert err.index("epoch   2") < err.index("posterior collapse") < err.index("epoch   3")


def test_the_ui_resumes_a_run_on_its_own_data_and_takes_the_lock(tmp_path, monkeypatch, capsys):
    from cuvae_tui.options import parse_args
    from cuvae_tui.session import Session

    session = Session(parse_args(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "1"]))
    prepared, job = session.prepare(2)
    assert job.build([]).run().reason == "completed"
    assert "bundled subset" in prepared.data_source
    monkeypatch.setenv("CUVAE_DATA_DIR", str(write_mnist(tmp_path / "full", n_train=300)))  # other data appear
    again = Session(parse_args(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "2"]))
    prepared, job = again.prepare(2)
    assert "bundled subset" in prepared.data_source and prepared.resumed_epoch == 1
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(prepared.run_dir)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CuvaeError, match=f"pid {holder.pid}"):
            job.build([]).run()
    finally:
        holder.kill()
        holder.wait()
