"""The new keys and panels of cuvae-tui through Textual's pilot: zoom, drawing modes and their
fallback, plot views, diagnostics (equal to cuvae.measure on the same model), the compare screen
with queued sizes, the latent map's legend and axes, and the small fixes."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from cuvae_tui import pixels
from cuvae_tui.app import CuvaeApp, make_app
from cuvae_tui.layout import size_class
from cuvae_tui.widgets.digit_grid import DigitGrid

from test_tui import TINY, offline, sync, train_tiny_run, wait_for  # noqa: F401 - the fixture is used


def test_import_cuvae_loads_no_textual():
    code = "import sys, cuvae; assert not [m for m in sys.modules if m.split('.')[0] in ('textual', 'textual_image')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_forced_protocol_falls_back_to_half_blocks_without_a_terminal():
    assert pixels.resolve("kitty", None, tty=False)[0] == "halfblock"
    assert "no terminal graphics" in pixels.resolve("sixel", None, tty=False)[1]
    assert pixels.resolve("kitty", None, tty=True) == ("kitty", None)  # forced: detection misses some terminals
    assert pixels.resolve("auto", "sixel", tty=True) == ("sixel", None)
    assert pixels.resolve("auto", None, tty=True) == ("halfblock", None)
    assert pixels.cycle("kitty") == ["kitty", "halfblock", "ascii"] and pixels.cycle("halfblock") == ["halfblock", "ascii"]
    assert pixels.detect() is None  # pytest has no terminal


def test_metrics_line_fits_80_columns():
    from cuvae_tui.widgets.metrics_line import metrics_text

    m = dict(epoch=12, train_loss=101.234, test_loss=99.876, test_recon=80.123, test_kl=19.753, active_units=17,
             protocol="binarized")
    wide, narrow = metrics_text(m, 20, 200), metrics_text(m, 20, 46)  # 46: the chart column at 80x24
    assert "recon 80.12 + KL 19.75" in wide and len(narrow) <= 46 and "99.9" in narrow and "17/20" in narrow


def test_layout_classes():
    assert [size_class(*s) for s in ((80, 24), (120, 40), (200, 60))] == ["small", "medium", "large"]


@pytest.fixture(scope="module")
def tiny_z2(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("panels")
    old = dict(os.environ)
    os.environ.update(CUVAE_MIRRORS="http://127.0.0.1:9/", XDG_CACHE_HOME=str(root / "cache"))
    os.environ.pop("CUVAE_DATA_DIR", None)
    try:
        return train_tiny_run(root / "runs" / "default-mnist-vae-z2")
    finally:
        os.environ.clear()
        os.environ.update(old)


@sync
async def test_pixels_flag_in_the_app_and_the_a_cycle(tiny_z2):
    app = make_app(["--open", str(tiny_z2), "--pixels", "kitty"])
    assert app.protocol == "halfblock" and "no terminal graphics" in app.pixels_note
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the opened run")
        assert "half-blocks" in str(app.query_one("#drawing").render())
        await pilot.press("a")
        assert app.protocol == "ascii" and {g.protocol for g in app.query(DigitGrid)} == {"ascii"}
        assert "ASCII" in str(app.query_one("#drawing").render())
        await pilot.press("a")
        assert app.protocol == "halfblock"
        await pilot.press("q")


@sync
async def test_pixel_mode_draws_through_textual_image(tiny_z2):
    from textual_image.widget import TGPImage

    from cuvae_tui.options import parse_args

    args = parse_args(["--open", str(tiny_z2)])
    app = CuvaeApp(open_dir=args.open, protocol="kitty")  # as if the terminal had answered
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the opened run")
        await pilot.pause(0.3)
        recon = app.query_one("#recon", DigitGrid)
        assert recon.mode == "pixels" and isinstance(recon._image, TGPImage)
        w, h = recon._image.image.size
        assert (w, h) == (57, 28)  # one pair: two 28-pixel digits and a 1-pixel gap
        await pilot.press("a")  # kitty -> half-blocks: the picture goes
        await pilot.pause(0.2)
        assert recon._image is None and "half-blocks" in str(app.query_one("#drawing").render())
        await pilot.press("q")


@sync
async def test_true_resolution_layout_zoom_and_plot_views(tiny_z2):
    app = make_app(["--open", str(tiny_z2)])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the opened run")
        recon = app.query_one("#recon", DigitGrid)
        await wait_for(pilot, lambda: recon.shown == 1, what="the digit drawn")
        # 80x24: one whole reconstruction beside a usable chart; the pair stays whole for zoom and export
        assert recon.rows == slice(1, 2) and recon.visible().shape == (2, 1, 28, 28)
        assert app.query_one("#plot").size.width >= 45 and app.query_one("#metrics").size.height == 1
        await pilot.resize_terminal(200, 60)
        await wait_for(pilot, lambda: recon.shown == 4, what="four pairs")
        assert app.has_class("-large") and recon.rows == slice(None)
        assert app.query_one("#samples", DigitGrid).shown == 4
        await pilot.press("z")
        assert type(app.screen).__name__ == "ZoomScreen"
        await pilot.pause(0.3)
        grid = app.screen.query_one(DigitGrid)
        assert grid.zoom >= 2 and grid.shown >= 1
        first = grid.start
        await pilot.press("n")
        assert grid.start != first or app.screen.part == "samples"
        await pilot.press("escape")
        views = []
        for _ in range(3):
            await pilot.press("g")
            views.append(app.query_one("#plot").view)
        assert views == ["log", "recent", "fit"]
        await pilot.press("q")


@sync
async def test_diagnostics_equal_cuvae_measure(tiny_z2):
    from cuvae.measure.analysis import elbo_surgery, encode_gaussians
    from cuvae.measure.evaluation import iwae_nll

    app = make_app(["--open", str(tiny_z2)])
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_for(pilot, lambda: app.diagnosis is not None, what="the diagnostics")
        d, view, x = app.diagnosis, app.view, app.prepared.eval_x
        means, logvars = encode_gaussians(view.model, view.P, x)
        np.testing.assert_allclose(d.kl_per_dim, (0.5 * (means ** 2 + np.exp(logvars) - 1 - logvars)).mean(0))
        np.testing.assert_allclose(d.variances, means.var(0))
        s = elbo_surgery(view.model, view.P, x)
        assert d.mutual_info == pytest.approx(s["mutual_info"]) and d.marginal_kl == pytest.approx(s["marginal_kl"])
        assert d.iwae_nll == pytest.approx(iwae_nll(view.model, view.P, x, k=100))
        assert d.protocol == "continuous" and d.examples == len(x) == 60
        text = str(app.query_one("#diag").render())
        assert "IWAE NLL (k=100" in text and "[continuous data]" in text and "active units:" in text
        await pilot.press("d")
        assert type(app.screen).__name__ == "DiagnosticsScreen"
        assert "KL per dimension" in str(app.screen.query_one("#diag-full").render())
        await pilot.press("escape", "q")


@sync
async def test_map_legend_axes_and_export_into_the_run(tiny_z2):
    app = make_app(["--open", str(tiny_z2)])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view is not None, what="the opened run")
        await pilot.press("m")
        caption = str(app.screen.query_one("#map-caption").render())
        assert caption.startswith("z0 left->right, z1 bottom->top")
        grid = app.screen.query_one(DigitGrid)
        assert grid.grid.shape[2:] == (28, 28) and grid.size.width == 28 * grid.grid.shape[1]
        assert "9" in str(app.screen.query_one("#map-legend").render())
        await pilot.press("escape", "plus", "e")
        await pilot.press("q")
    assert [p.name for p in tiny_z2.glob("cuvae-z2-epoch2-main-T1.1*.png")] == ["cuvae-z2-epoch2-main-T1.1.png"]


def test_fashion_class_names_in_the_legend():
    from cuvae_tui.screens.latent_map import legend

    from cuvae_tui.classes import class_names

    assert "Ankle boot" in legend(class_names("fashion-mnist")).plain
    assert class_names("mnist")[3] == "3"


@sync
async def test_status_keeps_brackets_and_q_after_an_error_exits_non_zero(tmp_path):
    # a long run: a finished one may post its own "done" line over the error on a slow machine
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "100000"])
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.prepared is not None, what="the run")
        app.post_message(__import__("cuvae_tui.messages", fromlist=["Failed"]).Failed(
            "pip install 'cuvae[cuda12]' for the GPU", app.generation))
        await wait_for(pilot, lambda: app.error is not None, what="the error")
        assert "[cuda12]" in str(app.query_one("#message").render())
        await pilot.press("q")
    assert app.return_code == 1


@sync
async def test_compare_screen_fills_in_and_queued_sizes_train(tmp_path):
    runs = tmp_path / "runs"
    app = make_app(["--runs", str(runs), *TINY, "--epochs", "1", "--latent", "3"])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.finished is not None, what="z=3 to finish")
        t0 = app.elapsed
        await pilot.press("l")
        assert any(z == 3 for z, _ in app.screen.choices)  # a trained size that is no preset
        await pilot.press("escape")
        await pilot.press("c")
        screen = app.screen
        assert type(screen).__name__ == "CompareScreen"
        await wait_for(pilot, lambda: 3 in screen.rows, what="z=3 in the table")
        await pilot.click("#compare-queue")
        await pilot.press("2", "space", "4", "enter")
        await wait_for(pilot, lambda: {2, 3, 4} <= set(screen.rows), timeout=60, what="the queued sizes")
        table = screen.query_one("#compare-table").render()
        assert table is not None and all((runs / f"default-mnist-vae-z{z}" / "checkpoint.npz").exists() for z in (2, 4))
        assert len(screen.query(DigitGrid)) == 1 + 3 * 2  # the test digits, then recon + samples per size
        await pilot.press("escape")
        assert app.elapsed_by_latent[3] == pytest.approx(t0)  # the clock of z=3 was kept
        await pilot.press("q")


def test_training_child_stops_when_the_ui_is_gone(tmp_path):
    """The trainer runs in a child process; if the UI dies (kill -9), the closed pipe stops it after
    its current step, leaving the last complete epoch's checkpoint."""
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.engine.events import EpochEnded
    from cuvae_tui.options import parse_args
    from cuvae_tui.session import Session
    from cuvae_tui.training import TrainingProcess

    session = Session(parse_args(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "100000"]))
    prepared, job = session.prepare(8)
    process = TrainingProcess(job)
    process.start()
    for kind, *payload in process.messages():
        if kind == "epoch":
            assert isinstance(payload[0], EpochEnded) and payload[1].dtype == np.float32
            break
        assert kind == "event", payload
    process._conn.close()  # what the UI's death looks like from the child
    process.process.join(30)
    assert process.exitcode == 0
    assert load_checkpoint(prepared.run_dir).epoch >= 1


def test_binned_train_curve_keeps_its_shape_and_is_short():
    from cuvae_tui.widgets.loss_plot import binned

    steps = [(i / 100, 200 - i / 10, 150 - i / 20, 10 + i / 1000) for i in range(2000)]
    b = binned(steps, 100)
    assert len(b) == 100
    assert [s[0] for s in b] == sorted(s[0] for s in b)
    assert steps[0][0] <= b[0][0] and b[-1][0] <= steps[-1][0]
    for col in range(1, 4):  # equal bins of equal counts: the mean of the bin means is the mean
        assert np.mean([s[col] for s in b]) == pytest.approx(np.mean([s[col] for s in steps]), rel=1e-3)
    assert b[0][1] == pytest.approx(np.mean([s[1] for s in steps[:20]]), rel=1e-6)  # each bin averages its steps
    assert binned(steps[:50], 100) == steps[:50]  # short curves are drawn as they are


@sync
async def test_ui_stays_responsive_while_the_training_child_starts(tmp_path, monkeypatch, offline):  # noqa: F811
    """Spawning sends the job, the whole training set, down a pipe (seconds on full MNIST): it must not
    happen under the lock the redraw tick takes to read app.trainer."""
    import threading

    from cuvae_tui import training, workers

    entered, release = threading.Event(), threading.Event()
    real_start = training.TrainingProcess.start

    def slow_start(self):
        entered.set()
        assert release.wait(30)
        real_start(self)

    monkeypatch.setattr(workers.TrainingProcess, "start", slow_start)
    app = make_app(["--runs", str(tmp_path / "runs"), *TINY, "--epochs", "1"])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, entered.is_set, what="the child's start")
        t0 = time.monotonic()
        await pilot.pause(0.5)  # redraw ticks run meanwhile
        assert app.trainer is not None and time.monotonic() - t0 < 5
        assert app._lock.acquire(timeout=1)
        app._lock.release()
        release.set()
        await wait_for(pilot, lambda: app.finished is not None, what="training to finish")
        await pilot.press("q")


def test_train_curve_is_the_recent_mean_not_the_epochs_running_mean():
    """StepMetrics carry running means over the epoch so far; drawn as they come they are flat within an
    epoch (stairs). The curve gets the mean of the steps since the previous report instead."""
    from cuvae_tui.widgets.loss_plot import Curves

    per_step = {e: 200 - 20 * e - np.arange(1, 601) * 0.05 for e in (1, 2)}  # falling within each epoch
    c = Curves()
    for e in (1, 2):
        for s in range(50, 601, 50):
            run = per_step[e][:s].mean()
            c.add_report(e, s, 600, run, run - 10, 10.0)
    assert len(c.steps) == 24
    for k, (x, loss, recon, kl) in enumerate(c.steps):
        e, s = divmod(k, 12)
        want = per_step[e + 1][50 * s:50 * s + 50].mean()
        assert loss == pytest.approx(want) and recon == pytest.approx(want - 10) and kl == pytest.approx(10.0)
        assert x == pytest.approx(e + (50 * s + 25) / 600)
    assert c.steps[11][1] < c.steps[0][1] - 20  # it falls within an epoch, where the running mean lags


def cells(strip):
    """A strip as (character, style) per cell: equal however its segments are split."""
    return [(ch, seg.style) for seg in strip for ch in seg.text]


@sync
async def test_charts_drawn_from_the_matrix_equal_textual_plotexts_own_path(tiny_z2):
    """The charts skip plotext's ANSI text and Rich's parse of it (plot_strips): every cell must come out
    as textual-plotext's path draws it, in each view, and a rebuild for a new size keeps the curves."""
    from textual.strip import Strip
    from textual_plotext import PlotextPlot

    app = make_app(["--open", str(tiny_z2)])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.curves.epochs, what="the opened run's curves")
        for view in ("fit", "log", "recent"):
            for plot in (app.query_one("#plot"), app.query_one("#parts")):
                plot.view = view
                plot.replot()
                ours = plot.build_strips()
                base, width = plot.visual_style.rich_style, plot.size.width
                plot.redraw_figure()
                text = PlotextPlot.render(plot)  # textual-plotext: ANSI from plotext, parsed by Rich
                theirs = [Strip(line.render(app.console), line.cell_len).apply_style(base).crop_extend(0, width, base)
                          for line in text.split("\n")]
                assert len(ours) == plot.size.height and len(ours) <= len(theirs)
                assert [cells(s) for s in ours] == [cells(s) for s in theirs[:len(ours)]], (view, plot.id)
                assert any(seg.style.color is not None for s in ours for seg in s)  # the curves' colours came through
                again = [cells(s) for s in plot.build_strips()]  # a second build (as for a new size)
                assert again == [cells(s) for s in ours], (view, plot.id)
        await pilot.press("q")


def test_a_chart_never_lands_in_the_frame_of_new_pictures():
    from cuvae_tui.widgets.loss_plot import Charts

    drawn = []

    class Plot:
        display = True
        parent = type("P", (), {"display": True})()

        def __init__(self, i):
            self.i = i

        def replot(self):
            drawn.append(self.i)

    charts = Charts(Plot(0), Plot(1), every=4.0)
    charts.changed()
    charts.tick(10.0)
    assert drawn == [1]  # the turn alternates; 2 s apart
    charts.defer(11.0)  # new pictures drawn at 11 s
    charts.tick(12.5)
    assert drawn == [1]  # 12.5 s would be due after 10 s, not after the pictures at 11 s
    charts.tick(13.0)
    assert drawn == [1, 0]


def test_a_hidden_chart_takes_no_turns():
    """At 80x24 the second chart is hidden: the one on screen redraws every turn, not every other."""
    from cuvae_tui.widgets.loss_plot import Charts

    drawn = []

    class Plot:
        def __init__(self, i, shown):
            self.i, self.display = i, shown
            self.parent = type("P", (), {"display": True})()

        def replot(self):
            drawn.append(self.i)

    charts = Charts(Plot(0, True), Plot(1, False), every=4.0)
    for t in (10.0, 12.0, 14.0):
        charts.changed()
        charts.tick(t)
    assert drawn == [0, 0, 0]
