"""``cuvae-show RUN_DIR VIEW``: pictures of a trained model, as labelled, scaled-up PNGs.

Views: samples, reconstructions, manifold, scatter, interpolate, traverse. Each writes
``RUN_DIR/show-<view>.png`` (or ``--out FILE``). The arrays come from :mod:`cuvae.measure.views`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from cuvae.cli.runs import Loaded, load_run as _load_run
from cuvae.engine.options import nonneg_int, positive_float, positive_int, run_main, stderr_console
from cuvae.errors import CuvaeError

VIEWS = ("samples", "reconstructions", "manifold", "scatter", "interpolate", "traverse")

EPILOG = """\
examples:
  cuvae-show runs/RUN samples --n 32 --temperature 0.8
  cuvae-show runs/RUN reconstructions --index 0 1 2 3
  cuvae-show runs/RUN manifold --n 20             # the chapter's 2-D map (two most active dims otherwise)
  cuvae-show runs/RUN scatter                     # encoder means coloured by digit
  cuvae-show runs/RUN interpolate --labels 3 8 --mode both
  cuvae-show runs/RUN traverse --index 7 --span 3
"""


def load_run(run_dir, *, device="auto", data_dir=None, test_size=None) -> Loaded:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CuvaeError(f"run directory {run_dir} does not exist; pass a folder written by cuvae-train or cuvae-sweep")
    return _load_run(run_dir, device=device, data_dir=data_dir, test_size=test_size)


# ---- the pictures (each returns a PIL image) -----------------------------------------------------
def picture_samples(run: Loaded, n=32, seed=0, temperature=1.0, scale=3):
    from cuvae.measure import views
    from cuvae.measure.render import grid

    imgs = views.samples(run.model, run.P, n, seed=seed, temperature=temperature, shape=run.shape)
    cols = 8
    return grid([imgs[i:i + cols] for i in range(0, n, cols)], scale=scale,
                title=f"{n} samples from the prior, temperature {temperature:g}, seed {seed} - {run.title}")


def picture_reconstructions(run: Loaded, index, scale=3):
    from cuvae.measure import views
    from cuvae.measure.render import grid

    orig, rec = views.reconstructions(run.model, run.P, run.x[np.asarray(index)], shape=run.shape)
    rows, labels, cols = [], [], 8
    for i in range(0, len(index), cols):
        rows += [orig[i:i + cols], rec[i:i + cols]]
        labels += [f"data #{index[i]}+", "recon"]
    return grid(rows, labels, scale=scale, title=f"test digits (row label: first index) and reconstructions - {run.title}")


def picture_manifold(run: Loaded, n=15, scale=2):
    from cuvae.measure import views
    from cuvae.measure.render import grid

    a, b = views.manifold_dims(run.model, run.P, run.x)
    imgs = views.manifold(run.model, run.P, n, x=run.x, shape=run.shape)
    q = views.quantile_grid(n)
    labels = [f"{v:+.2f}" for v in q[::-1]]
    which = "" if run.model.arch.latent == 2 else f" (the two most active of {run.model.arch.latent}; others 0)"
    return grid(list(imgs), labels, scale=scale,
                title=f"latent map: z{a} left->right, z{b} bottom->top (row label), Gaussian quantiles "
                      f"{q[0]:+.2f}..{q[-1]:+.2f}{which} - {run.title}")


def picture_scatter(run: Loaded, n=5000):
    from cuvae.measure import views
    from cuvae.measure.render import scatter_plot

    n = min(n, run.x.shape[0])
    pts = views.latent_scatter(run.model, run.P, run.x[:n])
    axes = ("z0", "z1") if run.model.arch.latent == 2 else ("PC1", "PC2")
    how = "" if run.model.arch.latent == 2 else f", first two principal components of {run.model.arch.latent}"
    return scatter_plot(pts, run.labels[:n], axes=axes,
                        title=f"encoder means of {n:,} test digits by label{how} - {run.title}")


def picture_interpolate(run: Loaded, a: int, b: int, steps=10, mode="both", scale=3):
    from cuvae.measure import views
    from cuvae.measure.render import grid

    modes = ("linear", "slerp") if mode == "both" else (mode,)
    xa, xb = run.x[a:a + 1], run.x[b:b + 1]
    rows = [views.interpolate(run.model, run.P, xa, xb, steps, mode=m, shape=run.shape) for m in modes]
    originals = run.backend.to_host(run.x[np.asarray([a, b])]).reshape((2, *run.shape))
    data_row = [originals[0]] + [None] * (steps - 2) + [originals[1]]
    return grid([data_row, *rows], ["data", *modes], scale=scale,
                title=f"test #{a} (digit {run.labels[a]}) to #{b} (digit {run.labels[b]}) between encoder means - {run.title}")


def picture_traverse(run: Loaded, index: int, steps=7, span=3.0, dims=None, scale=3):
    from cuvae.measure import views
    from cuvae.measure.render import grid

    L = run.model.arch.latent
    dims = list(range(L)) if dims is None else dims
    imgs = views.traverse(run.model, run.P, run.x[index:index + 1], steps=steps, span=span, dims=dims, shape=run.shape)
    return grid(list(imgs), [f"z{d}" for d in dims], scale=scale,
                title=f"each latent dim from {-span:g} to {span:g}, others at test #{index}'s code - {run.title}")


# ---- the sweep's figure ---------------------------------------------------------------------------
def latent_comparison(sweep_dir, rows, *, device="auto", data_dir=None, scale=2):
    """SWEEP_DIR/latent_comparison.png: one test digit per class, reconstructed by each latent size
    (first seed of each), the originals on top, then a row of prior samples per VAE latent size."""
    from cuvae.measure.render import grid, save_png
    from cuvae.measure import views

    done = sorted((r for r in rows if r["status"] != "failed"), key=lambda r: (r["model"] != "vae", r["latent"], r["seed"]))
    first = {}
    for r in done:
        first.setdefault((r["model"], r["latent"]), r)
    if not first:
        return None
    runs = {k: load_run(r["run_dir"], device=device, data_dir=data_dir) for k, r in first.items()}
    ref = next(iter(runs.values()))
    pick = [int(np.flatnonzero(ref.labels == d)[0]) for d in range(10) if (ref.labels == d).any()]
    out_rows = [ref.backend.to_host(ref.x[np.asarray(pick)]).reshape((-1, *ref.shape))]
    labels = ["data"]
    for (model, latent), run in runs.items():
        out_rows.append(views.reconstructions(run.model, run.P, run.x[np.asarray(pick)], shape=run.shape)[1])
        labels.append(f"{model} z={latent}")
    for (model, latent), run in runs.items():
        if model == "vae":
            out_rows.append(views.samples(run.model, run.P, len(pick), seed=0, shape=run.shape))
            labels.append(f"z={latent} prior")
    image = grid(out_rows, labels, scale=scale, title="reconstructions of the same test digits by latent size; "
                                                       "then samples from the prior")
    return save_png(image, Path(sweep_dir) / "latent_comparison.png")


# ---- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from cuvae.backends.backend import DEVICES

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common")
    g.add_argument("--out", type=Path, metavar="FILE", help="PNG to write (default RUN_DIR/show-<view>.png)")
    g.add_argument("--scale", type=positive_int, help="nearest-neighbour magnification (default 3; manifold 2)")
    g.add_argument("--device", choices=DEVICES, default="auto", help="cpu, gpu or auto (default)")
    g.add_argument("--data-dir", type=Path, help="folder with the dataset's IDX files")
    g.add_argument("--test-size", type=positive_int, help="use the first N test examples (default: the run's test set)")
    g.add_argument("--seed", type=int, default=0, help="seed for sampling and random picks (default 0)")

    p = argparse.ArgumentParser(prog="cuvae-show", description="Pictures of a trained cuvae run, as PNG files.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory (cuvae-train --out or a sweep's run)")
    sub = p.add_subparsers(dest="view", metavar="VIEW", required=True, help=", ".join(VIEWS))
    s = sub.add_parser("samples", parents=[common], help="decoded draws from the prior")
    s.add_argument("--n", type=positive_int, default=32, help="how many (default 32)")
    s.add_argument("--temperature", type=positive_float, default=1.0, help="scale of the prior's noise (default 1)")
    s = sub.add_parser("reconstructions", parents=[common], help="test digits and their reconstructions")
    s.add_argument("--n", type=positive_int, default=16, help="how many random test digits (default 16)")
    s.add_argument("--index", type=nonneg_int, nargs="+", metavar="I", help="these test digits instead of random ones")
    s = sub.add_parser("manifold", parents=[common], help="decoded grid over two latent dims at Gaussian quantiles")
    s.add_argument("--n", type=positive_int, default=15, help="grid size per side (default 15)")
    s = sub.add_parser("scatter", parents=[common], help="encoder means of test digits, coloured by label")
    s.add_argument("--n", type=positive_int, default=5000, help="how many test digits (default 5000)")
    s = sub.add_parser("interpolate", parents=[common], help="decoded path between two test digits' codes")
    pair = s.add_mutually_exclusive_group()
    pair.add_argument("--index", type=nonneg_int, nargs=2, metavar=("A", "B"), help="test indices (default 0 1)")
    pair.add_argument("--labels", type=int, nargs=2, metavar=("DIGIT", "DIGIT"),
                      help="the first test digits with these labels")
    s.add_argument("--steps", type=positive_int, default=10, help="images along the path, ends included (default 10)")
    s.add_argument("--mode", choices=("linear", "slerp", "both"), default="both", help="default both")
    s = sub.add_parser("traverse", parents=[common], help="each latent dim swept with the others fixed")
    s.add_argument("--index", type=nonneg_int, default=0, help="test digit whose code is the centre (default 0)")
    s.add_argument("--steps", type=positive_int, default=7, help="images per dim (default 7)")
    s.add_argument("--span", type=positive_float, default=3.0, help="sweep from -SPAN to +SPAN (default 3)")
    s.add_argument("--dims", type=nonneg_int, nargs="+", metavar="D", help="only these dims (default all)")
    return p


def _check_index(index, n: int) -> None:
    bad = [i for i in index if i >= n]
    if bad:
        raise CuvaeError(f"--index {bad[0]} is out of range: the test set has {n:,} examples (0..{n - 1})")


def make_picture(args, run: Loaded):
    n_test = int(run.x.shape[0])
    kw = {"scale": args.scale} if args.scale else {}
    if args.view == "samples":
        return picture_samples(run, args.n, args.seed, args.temperature, **kw)
    if args.view == "reconstructions":
        if args.index:
            index = list(args.index)
            _check_index(index, n_test)
        else:
            index = sorted(np.random.default_rng(args.seed).choice(n_test, min(args.n, n_test), replace=False).tolist())
        return picture_reconstructions(run, index, **kw)
    if args.view == "manifold":
        if run.model.arch.latent < 2:
            raise CuvaeError("manifold needs a latent of at least 2 dimensions; this run has 1")
        return picture_manifold(run, args.n, **kw)
    if args.view == "scatter":
        return picture_scatter(run, args.n)
    if args.view == "interpolate":
        if args.steps < 2:
            raise CuvaeError("--steps must be at least 2 (the two ends)")
        if args.labels:
            index = []
            for d in args.labels:
                hits = np.flatnonzero(run.labels == d)
                if not 0 <= d <= 9 or not len(hits):
                    raise CuvaeError(f"--labels {d}: no test digit has that label (labels are 0..9)")
                unused = [int(h) for h in hits if int(h) not in index]  # "--labels 3 3": two different threes
                if not unused:
                    raise CuvaeError(f"--labels {d} {d}: the test set has only one digit {d}")
                index.append(unused[0])
        else:
            index = list(args.index or (0, 1))
        _check_index(index, n_test)
        return picture_interpolate(run, index[0], index[1], args.steps, args.mode, **kw)
    _check_index([args.index], n_test)
    dims = args.dims
    if dims:
        bad = [d for d in dims if d >= run.model.arch.latent]
        if bad:
            raise CuvaeError(f"--dims {bad[0]}: the model has {run.model.arch.latent} latent dims (0..{run.model.arch.latent - 1})")
    return picture_traverse(run, args.index, args.steps, args.span, dims, **kw)


def main(argv=None) -> int:
    from cuvae.measure.render import save_png

    args = build_parser().parse_args(argv)
    run = load_run(args.run_dir, device=args.device, data_dir=args.data_dir, test_size=args.test_size)
    image = make_picture(args, run)
    out = args.out or args.run_dir / f"show-{args.view}.png"
    if out.parent and not out.parent.is_dir():
        raise CuvaeError(f"--out {out}: folder {out.parent} does not exist")
    save_png(image, out)
    stderr_console().print(f"wrote {out} ({image.width}x{image.height})")
    return 0


def cli() -> int:
    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
