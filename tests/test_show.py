"""cuvae-show: every view writes a PNG of the expected size whose digits are the model's pixels; errors are one line."""

import numpy as np
import pytest
from PIL import Image

from cuvae.cli import show
from cuvae.measure import views
from cuvae.data import SUBSET_DIR
from cuvae.measure.render import PALETTE, to_uint8
from cuvae.cli.train import main as train_main

TINY = ["--hidden", "16", "--train-size", "200", "--test-size", "60", "--batch-size", "50", "--epochs", "1",
        "--device", "cpu", "--data-dir", str(SUBSET_DIR)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    out = {}
    for latent in (2, 3):
        assert train_main(TINY + ["--latent", str(latent), "--out", str(base / f"z{latent}")]) == 0
        out[latent] = base / f"z{latent}"
    return out


def cli(*argv):
    return show.run_main(show.main, [str(a) for a in argv])


def png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def cell(img, scale, h=28, pad=2, label_w=0, title_h=16, row=0, col=0):
    y, x = title_h + pad + row * (h * scale + pad), label_w + pad + col * (h * scale + pad)
    return img[y:y + h * scale, x:x + h * scale]


def test_samples_png_holds_the_models_pixels(runs, tmp_path):
    out = tmp_path / "s.png"
    assert cli(runs[2], "samples", "--n", "16", "--seed", "5", "--temperature", "0.7", "--out", out, "--device", "cpu",
               "--data-dir", SUBSET_DIR) == 0
    img = png(out)
    assert img.shape == (16 + 2 * 86 + 2, 8 * 86 + 2, 3)  # 2 rows of 8, 28 px x3 + 2 px gaps, a title line
    run = show.load_run(runs[2], device="cpu", data_dir=SUBSET_DIR)
    expected = views.samples(run.model, run.P, 16, seed=5, temperature=0.7)
    tile = cell(img, 3, row=1, col=2)
    want = np.kron(to_uint8(expected[10]), np.ones((3, 3), np.uint8))  # nearest-neighbour x3
    assert np.array_equal(tile[..., 0], want) and np.array_equal(tile[..., 1], want)  # grey: R = G = B


@pytest.mark.parametrize("view, args", [
    ("reconstructions", ["--index", "0", "1", "2"]),
    ("manifold", ["--n", "5"]),
    ("interpolate", ["--labels", "1", "1", "--steps", "6"]),
    ("traverse", ["--index", "3", "--steps", "5"]),
])
def test_digit_views(runs, view, args):
    assert cli(runs[3], view, *args, "--device", "cpu", "--data-dir", SUBSET_DIR) == 0
    img = png(runs[3] / f"show-{view}.png")
    rows, cols = {"reconstructions": (2, 3), "manifold": (5, 5), "interpolate": (3, 6), "traverse": (3, 5)}[view]
    scale = 2 if view == "manifold" else 3
    assert img.shape[0] == 16 + rows * (28 * scale + 2) + 2
    label_w = img.shape[1] - (cols * (28 * scale + 2) + 2)
    assert 0 < label_w < 120  # labelled rows
    run = show.load_run(runs[3], device="cpu", data_dir=SUBSET_DIR)
    first = {  # the array the top-left tile shows
        "reconstructions": lambda: views.reconstructions(run.model, run.P, run.x[:1])[0][0],
        "manifold": lambda: views.manifold(run.model, run.P, 5, x=run.x)[0, 0],
        "interpolate": lambda: run.backend.to_host(run.x[int(np.flatnonzero(run.labels == 1)[0])]).reshape(28, 28),
        "traverse": lambda: views.traverse(run.model, run.P, run.x[3], steps=5)[0, 0],
    }[view]()
    want = np.kron(to_uint8(first), np.ones((scale, scale), np.uint8))
    assert np.array_equal(cell(img, scale, label_w=label_w)[..., 0], want)
    assert (img[..., 0] == img[..., 2]).all()  # grey-scale throughout (text and tiles)


def test_scatter_is_coloured_by_label_with_a_legend(runs, tmp_path):
    out = tmp_path / "scatter.png"
    assert cli(runs[3], "scatter", "--out", out, "--device", "cpu", "--data-dir", SUBSET_DIR) == 0
    img = png(out)
    assert img.shape[0] > 500 and img.shape[1] > 500
    run = show.load_run(runs[3], device="cpu", data_dir=SUBSET_DIR)
    present = sorted(set(run.labels.tolist()))
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    for label in present:
        assert PALETTE[label] in colours, label
    assert len(present) >= 5


def test_interpolate_both_modes_share_their_ends(runs):
    run = show.load_run(runs[3], device="cpu", data_dir=SUBSET_DIR)
    lin = views.interpolate(run.model, run.P, run.x[0], run.x[1], 5, mode="linear")
    sl = views.interpolate(run.model, run.P, run.x[0], run.x[1], 5, mode="slerp")
    assert np.allclose(lin[0], sl[0], atol=1e-6) and np.allclose(lin[-1], sl[-1], atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["samples"], "does not exist"),
    (["traverse", "--index", "99999"], "out of range"),
    (["reconstructions", "--index", "5", "60"], "--index 60 is out of range"),
    (["interpolate", "--labels", "3", "11"], "no test digit"),
    (["traverse", "--dims", "7"], "has 3 latent dims"),
    (["samples", "--out", "/nonexistent/dir/x.png"], "does not exist"),
])
def test_cli_errors_are_one_line(runs, tmp_path, capsys, argv, message):
    run_dir = tmp_path / "missing" if argv == ["samples"] else runs[3]
    assert cli(run_dir, *argv, "--device", "cpu", "--data-dir", SUBSET_DIR) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_view_and_empty_run_dir(runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(runs[3], "histogram")
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert cli(tmp_path, "samples") == 2
    assert "no checkpoint" in capsys.readouterr().err
