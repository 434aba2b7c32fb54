"""Snapshot tests (pytest-textual-snapshot) of the main screen at 80x24, 120x40 and 200x60, and the help screen.

Deterministic: a finished tiny run is opened read-only (--open), so nothing moves; its
timing fields (seconds, examples/s) are set to fixed values, since they differ per run.
Update after an intended change with: pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_textual_snapshot")

TINY = ["--hidden", "64", "--train-size", "1000", "--test-size", "100", "--lr", "3e-3", "--device", "cpu"]
ENV = {"CUVAE_MIRRORS": "http://127.0.0.1:9/"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from cuvae.cli.train import main

    root = tmp_path_factory.mktemp("snap")
    run = root / "tiny-z2"
    env = {**ENV, "XDG_CACHE_HOME": str(root / "cache")}
    with mock.patch.dict(os.environ, env):
        os.environ.pop("CUVAE_DATA_DIR", None)
        assert main(["--out", str(run), *TINY, "--latent", "2", "--epochs", "3", "--json"]) == 0
    path = run / "metrics.jsonl"
    lines = [json.loads(s) for s in path.read_text().splitlines()]
    for m in lines:
        m["seconds"], m["examples_per_s"] = 1.5, 200.0
    path.write_text("".join(json.dumps(m) + "\n" for m in lines))
    return run


def make(run: Path, *extra: str):
    from cuvae_tui.app import make_app

    return make_app(["--open", str(run), *extra])


async def ready(pilot) -> None:
    app = pilot.app
    for _ in range(400):
        if app.view is not None:
            break
        await pilot.pause(0.05)
    assert app.view is not None
    for _ in range(400):  # the diagnostics (IWAE included) come from a worker
        if app.diagnosis is not None and app.diagnosis.iwae_nll is not None:
            break
        await pilot.pause(0.05)
    await app.workers.wait_for_complete()
    await pilot.pause(0.2)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CUVAE_DATA_DIR", raising=False)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)], ids=["80x24", "120x40", "200x60"])
def test_main_screen(snap_compare, finished_run, offline, size):
    assert snap_compare(make(finished_run), terminal_size=size, run_before=ready)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_help_screen(snap_compare, finished_run, offline, size):
    async def open_help(pilot):
        await ready(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.1)

    assert snap_compare(make(finished_run), terminal_size=size, run_before=open_help)


def test_main_screen_ascii(snap_compare, finished_run, offline):
    assert snap_compare(make(finished_run, "--ascii"), terminal_size=(80, 24), run_before=ready)
