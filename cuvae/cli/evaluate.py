"""``cuvae-evaluate RUN_DIR``: test ELBO, importance-weighted NLL, active units, pictures."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cuvae.engine.options import nonneg_int, positive_int, run_main, stderr_console


def build_parser() -> argparse.ArgumentParser:
    from cuvae.backends.backend import DEVICES
    from cuvae.data.protocol import TEST_BINARIZE

    p = argparse.ArgumentParser(prog="cuvae-evaluate", description="Evaluate a trained cuvae run on the test set.",
                                epilog="example: cuvae-evaluate runs/RUN --iwae-k 1000 --json")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by cuvae-train")
    p.add_argument("--iwae-k", type=positive_int, default=1000, help="importance samples per test example (default 1000)")
    p.add_argument("--test-size", type=positive_int, help="evaluate the first N test examples (default: the run's test set)")
    p.add_argument("--seed", type=nonneg_int, default=None,
                   help="seed for the evaluation noise (default: the run's --seed, the one its training used "
                        "for the test figures in metrics.jsonl)")
    p.add_argument("--test-binarize", choices=TEST_BINARIZE,
                   help="test images: the run's choice by default (binarised runs: one fixed Bernoulli sample, seed 2024; "
                        "runs from before the protocol: as they were trained); none: grey levels; fixed: the fixed sample")
    p.add_argument("--device", choices=DEVICES, default="auto", help="cpu, gpu or auto (default)")
    p.add_argument("--data-dir", type=Path, help="folder with the dataset's IDX files (default: where the run's data came from)")
    p.add_argument("--no-pictures", action="store_true", help="do not write reconstructions.png and samples.png")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def evaluate_run(run_dir, *, iwae_k=1000, test_size=None, seed=None, device="auto", data_dir=None, pictures=True,
                 log=None, progress=True, test_binarize=None, run=None) -> dict:
    """Evaluate a run directory; returns the result dict (the keys of ``--json``).

    ``seed`` None is the run's own seed, the one the trainer evaluated the test set with, so that a
    checkpoint has one test -ELBO. A picture that cannot be written is ``result["pictures_error"]``
    (the figures are still returned). ``run``: the run already opened (:func:`cuvae.cli.runs.load_run`
    with the same options), so a caller that also analyses it opens it once."""
    from cuvae.cli.runs import load_run
    from cuvae.data.protocol import protocol
    from cuvae.errors import CuvaeError
    from cuvae.measure import evaluation

    # only the test set is needed; say where it came from without the (unused) training split
    if run is None:
        run = load_run(run_dir, device=device, data_dir=data_dir, test_size=test_size, test_binarize=test_binarize,
                       progress=progress, log=lambda m: log(m) if log and not m.startswith("using ") else None)
    ckpt, cfg, data, model, P, x, backend = run.ckpt, run.ckpt.config, run.data, run.model, run.P, run.x, run.backend
    seed = cfg.seed if seed is None else seed
    if log:
        log(f"test set: {len(data.test_x):,} examples; {data.source.replace('first 1 of ', '')}")
        whose = "the run's --seed, as in its training log" if seed == cfg.seed else f"--seed; the run's is {cfg.seed}"
        log(f"evaluation seed: {seed} ({whose})")
    test_binarize = run.test_binarize

    result = {"run_dir": str(run_dir), "epoch": ckpt.epoch, "model": cfg.arch.describe(), "likelihood": cfg.likelihood,
              "test_examples": int(x.shape[0]), "eval_seed": seed,
              "data_source": data.source.replace("first 1 of ", ""), "protocol": protocol(cfg.binarize, test_binarize),
              "objective": cfg.objective, "samples": cfg.samples}
    terms = evaluation.elbo(model, P, x, seed=seed)
    result.update({k: terms[k] for k in ("test_loss", "test_recon", "test_kl", "active_units")})
    if cfg.model == "vae":
        bar = _bar(int(x.shape[0]) * iwae_k, progress)
        est = evaluation.iwae_estimate(model, P, x, k=iwae_k, seed=seed, progress=bar)
        if bar:
            bar(None)
        result.update(iwae_nll=est["nll"], iwae_se=est["se"], iwae_seconds=est["seconds"])
    else:
        result.update(iwae_nll=None, iwae_se=None, iwae_seconds=None)
    result["iwae_k"] = iwae_k
    if cfg.likelihood == "logistic":  # discrete over the 256 levels: bits per subpixel
        from cuvae.nn.conv_model import bits_per_dim

        result["test_bpd"] = bits_per_dim(result["test_loss"], model.arch.in_dim)
        if result["iwae_nll"] is not None:
            result["iwae_bpd"] = bits_per_dim(result["iwae_nll"], model.arch.in_dim)
    if cfg.likelihood == "gaussian":
        norm = evaluation.gaussian_log_norm(model.arch.in_dim)
        result["gaussian_nll_offset"] = norm
        result["gaussian_dims"] = int(model.arch.in_dim)
        result["test_loss_normalised"] = result["test_loss"] + norm
    if pictures:
        try:
            _pictures(run_dir, model, P, x, data, backend, ckpt, seed)
        except CuvaeError as err:
            result["pictures_error"] = str(err)
    return result


def _pictures(run_dir, model, P, x, data, backend, ckpt, seed) -> None:
    """RUN_DIR/reconstructions.png and samples.png, as the trainer draws them."""
    import numpy as np

    from cuvae.cli.console import PictureWriter
    from cuvae.engine.events import SamplesReady
    from cuvae.engine.trainer import PREVIEW
    from cuvae.measure import evaluation
    from cuvae.measure.render import to_display

    writer = PictureWriter(run_dir)
    shape = tuple(data.image_shape)
    recon = to_display(evaluation.reconstruct(model, P, x[:PREVIEW], shape), shape)
    originals = to_display(backend.to_host(x[:PREVIEW]), shape)
    writer(SamplesReady("reconstructions", np.concatenate([originals, recon]), ckpt.epoch))
    samples = evaluation.prior_samples(model, P, 16, seed=seed, shape=shape)
    writer(SamplesReady("samples", to_display(samples, shape), ckpt.epoch))


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    console = stderr_console()
    if not console.is_terminal:
        return _progress_lines(total, console)
    from rich.progress import Progress

    progress = Progress(console=console, transient=True)
    task = progress.add_task("importance-weighted NLL", total=total)
    progress.start()

    def advance(n):
        if n is None:
            progress.stop()
        else:
            progress.advance(task, n)

    return advance


def _progress_lines(total: int, console, parts: int = 10):
    """Progress for a log file (no terminal, so no bar): a line at every tenth, with the time left."""
    import time

    t0, done, shown = time.perf_counter(), 0, 0

    def advance(n):
        nonlocal done, shown
        if n is None:
            return
        done += n
        frac = done / max(total, 1)
        if shown < int(frac * parts) < parts:
            shown = int(frac * parts)
            spent = time.perf_counter() - t0
            console.print(f"importance-weighted NLL: {frac:.0%} after {spent:.0f} s, about "
                          f"{spent * (1 - frac) / frac:.0f} s left", highlight=False)

    return advance


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    console = stderr_console()
    result = evaluate_run(args.run_dir, iwae_k=args.iwae_k, test_size=args.test_size, seed=args.seed, device=args.device,
                          data_dir=args.data_dir, pictures=not args.no_pictures, log=console.print, progress=not args.json,
                          test_binarize=args.test_binarize)
    if args.json:
        print(json.dumps(result))
        if "pictures_error" in result:
            print(f"error: {result['pictures_error']}", file=sys.stderr)
            return 2
        return 0
    from rich.table import Table

    table = Table(title=f"{result['model']} - epoch {result['epoch']} - {result['test_examples']:,} test examples",
                  caption=f"protocol: {result['protocol']}")
    table.add_column("metric")
    table.add_column("value (nats per example)", justify="right")
    table.add_row("test negative ELBO", f"{result['test_loss']:.3f}")
    table.add_row("  reconstruction", f"{result['test_recon']:.3f}")
    table.add_row("  KL to N(0, I)", f"{result['test_kl']:.3f}")
    if result["iwae_nll"] is not None:
        table.add_row(f"importance-weighted NLL (k={result['iwae_k']}, {result['iwae_seconds']:.1f} s)",
                      f"{result['iwae_nll']:.3f} ± {result['iwae_se']:.3f}")
    if "test_bpd" in result:
        table.add_row("test negative ELBO in bits/dim", f"{result['test_bpd']:.4f}")
    if result.get("iwae_bpd") is not None:
        table.add_row("importance-weighted NLL in bits/dim", f"{result['iwae_bpd']:.4f}")
    table.add_row("active latent units", f"{result['active_units']}")
    from rich.console import Console

    Console().print(table)
    if result["likelihood"] == "gaussian":
        console.print(
            f"note: the gaussian likelihood's loss is the sum of squared errors, an unnormalised log-likelihood; "
            f"as a Gaussian NLL with variance 1/2 it is {result['test_loss_normalised']:.3f} nats "
            f"(SSE + {result['gaussian_dims']}/2 ln pi = SSE + {result['gaussian_nll_offset']:.3f}). The importance-weighted NLL uses the "
            f"normalised density. Do not compare either with Bernoulli numbers.")
    if result["iwae_nll"] is not None:
        console.print("± is the standard error over test examples (sampling error of the average, not the bound's bias)")
    if "pictures_error" in result:  # the figures above are printed first: nothing is lost
        console.print(f"error: {result['pictures_error']}")
        return 2
    if not args.no_pictures:
        console.print(f"wrote {args.run_dir / 'reconstructions.png'} and {args.run_dir / 'samples.png'}")
    return 0


def analyse_run(run_dir, *, device: str = "auto", data_dir=None, test_size=None, seed: int | None = None,
                n_sharp: int = 1000, log=None, progress: bool = False, run=None) -> dict:
    """Sharpness scores and (for a VAE) the ELBO surgery of a trained run, on its test set (``seed`` None:
    the run's; ``run``: the run already opened, as for :func:`evaluate_run`)."""
    from cuvae.cli.runs import load_run
    from cuvae.measure.analysis import elbo_surgery, sharpness_scores

    if run is None:
        run = load_run(run_dir, device=device, data_dir=data_dir, test_size=test_size, progress=progress, log=log)
    cfg, model, P, x = run.ckpt.config, run.model, run.P, run.x
    seed = cfg.seed if seed is None else seed
    vae = cfg.model == "vae"
    out = sharpness_scores(model, P, x, shape=run.shape, n=n_sharp, seed=seed, samples=vae)
    if vae:
        out.update(elbo_surgery(model, P, x, seed=seed))
    else:
        out.update({"avg_kl": None, "mutual_info": None, "marginal_kl": None, "mi_bound": None,
                    "examples": int(x.shape[0])})
    return out


def cli() -> int:
    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
