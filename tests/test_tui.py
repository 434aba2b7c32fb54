"""The terminal UI through Textual's headless pilot: start, press keys, check the widgets changed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("textual")
pytest.importorskip("textual_plotext")

from cuvae.errors import CuvaeError  # noqa: E402
from cuvae_tui.app import CuvaeApp, make_app  # noqa: E402
from cuvae_tui.widgets.digit_grid import DigitGrid  # noqa: E402

TINY = ["--hidden", "16", "--train-size", "300", "--test-size", "60", "--batch-size", "50", "--device", "cpu"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no shared data: MNIST comes from the bundled subset."""
    monkeypatch.setenv("CUVAE_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CUVAE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def sync(test):
    """Run an async test with asyncio.run (no pytest async plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return wrapper


async def wait_for(pilot, cond, timeout=30.0, what="condition"):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def train_tiny_run(out: Path, latent: int = 2) -> Path:
    from cuvae.cli.train import main

    assert main(["--out", str(out), *TINY, "--latent", str(latent), "--epochs", "2", "--json"]) == 0
    return out


@sync
async def test_trains_samples_pauses_and_quits(tmp_path):
    runs = tmp_path / "runs"
    app = make_app(["--runs", str(runs), *TINY, "--epochs", "100000"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the first epoch")
        await pilot.press("space")
        assert app.trainer.paused and app.status.fields["state"] == "paused"
        await pilot.pause(0.3)  # let the last queued messages land
        samples = app.query_one("#samples", DigitGrid)
        before, version = samples.grid.copy(), samples.version
        await pilot.press("s")
        assert samples.version == version + 1 and app.sample_seed == 1
        assert not np.allclose(before, samples.grid), "s must draw new samples"
        assert "seed 1" in str(app.query_one("#samples-box").border_title)
        await pilot.press("space")
        assert not app.trainer.paused and app.status.fields["state"] == "training"

        await pilot.press("a")
        assert {g.mode for g in app.query(DigitGrid)} == {"ascii"}
        await pilot.press("a")
        assert {g.mode for g in app.query(DigitGrid)} == {"halfblock"}

        await pilot.press("plus")
        assert app.temperature == pytest.approx(1.1)
        status = app.status.fields
        assert status["latent"] == 8 and "CPU" in status["device"] and "bundled subset" in status["data"]
        assert "300 train" in status["data"]  # the trainer's own count (RunStarted.train_examples)
        await pilot.press("q")
    run_dir = runs / "default-mnist-vae-z8"
    assert (run_dir / "checkpoint.npz").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert 1 <= len(lines) < 100000  # stopped early; the checkpoint holds the last complete epoch

    # starting again resumes that run
    app = make_app(["--runs", str(runs), *TINY, "--epochs", "100000"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.prepared is not None, what="the resumed run")
        assert app.prepared.resumed_epoch == len(lines)
        await wait_for(pilot, lambda: "300 train" in app.status.fields["data"], what="the resumed run's count")
        await wait_for(pilot, lambda: app.view is not None, timeout=10, what="pictures from the checkpoint")
        await pilot.press("q")


@sync
async def test_fast_epochs_are_drawn_every_few_seconds_and_the_last_at_the_end(tmp_path):
    """Eight epochs of a tiny set end within a second: the first is drawn at once, the last when the run
    ends, those between at most every PICTURES_EVERY seconds (each drawing would cost the UI's CPU)."""
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "8"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.finished is not None, what="training to finish")
        await wait_for(pilot, lambda: app.pictured_epoch == 8, what="the last epoch's pictures")
        assert app.query_one("#samples", DigitGrid).version <= 3  # drawn 2 times (3 on a slow machine), not 8
        assert "epoch 8" in str(app.query_one("#samples-box").border_title)
        await pilot.press("q")


@sync
async def test_pause_draws_the_newest_epoch_at_once(tmp_path):
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "100000"])
    async with app.run_test(size=(80, 24)) as pilot:
        app.epoch_pictures.every = 3600.0  # after the first epoch, nothing is due while training
        await wait_for(pilot, lambda: app.pictured_epoch == 1 and len(app.curves.epochs) >= 3,
                       what="the first epoch's pictures and three epochs")
        seen = app.curves.epochs[-1]["epoch"]
        await pilot.press("space")
        await wait_for(pilot, lambda: app.pictured_epoch >= seen, timeout=10, what="the newest epoch's pictures")
        await pilot.press("q")


@sync
async def test_diagnostics_run_while_shown_and_when_training_is_over(tmp_path):
    """At 120x40 the diagnostics panel is not on screen: nothing is computed for it until d opens it; a
    completed run gets its last epoch's, IWAE included."""
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "100000"])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.pictured_epoch >= 1 and len(app.curves.epochs) >= 3,
                       what="the first pictures and three epochs")
        await pilot.pause(0.5)
        assert app.diagnosis is None
        await pilot.press("d")
        await wait_for(pilot, lambda: app.diagnosis is not None, what="the diagnostics, once shown")
        assert app.diagnosis.epoch >= 1 and app.screen.query_one("#diag-full").diagnosis is app.diagnosis
        await pilot.press("escape", "q")
    app = make_app(["--runs", str(tmp_path / "runs2"), *TINY, "--epochs", "2"])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.diagnosis is not None and app.diagnosis.iwae_epoch == 2,
                       what="the last epoch's diagnostics")
        assert app.finished is not None and app.diagnosis.epoch == 2 and app.diagnosis.iwae_nll is not None
        await pilot.press("q")


@sync
async def test_latent_switch_starts_a_new_run_and_switching_back_resumes(tmp_path):
    runs = tmp_path / "runs"
    app = make_app(["--runs", str(runs), *TINY, "--epochs", "1", "--latent", "8"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.finished is not None, what="z=8 to finish")
        await pilot.press("l")
        await pilot.press(*"20", "enter")  # typed size
        await wait_for(pilot, lambda: app.prepared is not None and app.prepared.latent == 20, what="the z=20 run")
        assert app.status.fields["latent"] == 20
        await wait_for(pilot, lambda: app.finished is not None, what="z=20 to finish")
        assert (runs / "default-mnist-vae-z20" / "checkpoint.npz").exists()

        await pilot.press("l")
        await wait_for(pilot, lambda: app.screen.__class__.__name__ == "LatentScreen", what="the picker")
        assert any("trained 1 epochs" in note for z, note in app.screen.choices if z == 8)
        await pilot.press("up", "enter")  # the list starts on the current z=20; one up is z=8
        await wait_for(pilot, lambda: app.prepared is not None and app.prepared.latent == 8, what="back to z=8")
        assert app.prepared.resumed_epoch == 1
        await wait_for(pilot, lambda: app.view is not None, timeout=10, what="pictures from the checkpoint")
        await pilot.press("q")


@sync
async def test_keys_before_the_first_epoch_do_not_crash(tmp_path):
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "1"])
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("s", "i", "m", "e", "a", "space", "plus", "minus", "question_mark")
        await pilot.press("escape")
        await pilot.resize_terminal(60, 20)
        await pilot.resize_terminal(120, 40)
        if app.trainer is not None and app.trainer.paused:  # space paused the run (its child may already exist)
            await pilot.press("space")
        await wait_for(pilot, lambda: app.finished is not None, what="training to finish")
        assert app.error is None
        await pilot.press("q")


@sync
async def test_open_is_read_only_and_has_the_views(tmp_path):
    run = train_tiny_run(tmp_path / "tiny-z2")
    app = make_app(["--open", str(run)])
    assert isinstance(app, CuvaeApp) and app.read_only
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the opened run")
        assert app.status.fields["state"] == "read-only" and app.status.fields["epoch"] == "2/2"
        assert "300 train" in app.status.fields["data"]  # from the run's data record
        assert app.query_one("#recon", DigitGrid).grid.shape == (2, 8, 28, 28)
        await pilot.press("space")
        assert app.trainer is None
        await pilot.press("l")
        assert app.screen.__class__.__name__ != "LatentScreen"

        await pilot.press("i")
        assert app.screen.__class__.__name__ == "InterpolationScreen"
        grid = app.screen.query_one(DigitGrid)
        first = grid.grid.copy()
        assert first.shape == (1, 10, 28, 28)
        await pilot.press("n")
        assert not np.allclose(first, grid.grid)
        await pilot.press("e")
        await pilot.press("escape")

        await pilot.press("m")
        assert app.screen.__class__.__name__ == "LatentMapScreen"
        n = app.screen.query_one(DigitGrid).grid.shape[0]
        assert app.screen.query_one(DigitGrid).grid.shape == (n, n, 28, 28)
        await pilot.press("escape")
        await pilot.press("e")
        await pilot.press("q")
    exported = sorted(p.name for p in run.glob("cuvae-z2-epoch2-*.png"))  # into the run directory
    assert exported == ["cuvae-z2-epoch2-interpolation-T1.0.png", "cuvae-z2-epoch2-main-T1.0.png"]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2  # untouched


@sync
async def test_missing_data_is_shown_in_the_ui(tmp_path, monkeypatch):
    import cuvae.data.mnist

    monkeypatch.setattr(cuvae.data.mnist, "SYSTEM_DIRS", {})
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--dataset", "fashion-mnist"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.error is not None, what="the data error")
        assert "Fashion-MNIST was not found" in app.error
        assert app.status.fields["state"] == "error"
        assert "error:" in str(app.query_one("#message").render())
        await pilot.press("s", "i", "space")  # still alive
        await pilot.press("q")


def test_command_line_errors_are_one_line(tmp_path):
    with pytest.raises(CuvaeError, match="--runs"):
        make_app(["--out", str(tmp_path)])
    with pytest.raises(CuvaeError, match="no checkpoint"):
        make_app(["--open", str(tmp_path)])
