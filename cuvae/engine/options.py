"""Options shared by both faces (the CLI and the UI): argument types, the training options,
turning them into a :class:`~cuvae.engine.config.TrainConfig` (new or resumed), and running a
main with one-line errors."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

from cuvae.errors import CuvaeError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _float(text: str, ok: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(value) or value != value:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _float(text, lambda v: 0 < v < float("inf"), "a positive number")


def nonneg_float(text: str) -> float:
    return _float(text, lambda v: 0 <= v < float("inf"), "a number >= 0")


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a CLI main; a :class:`CuvaeError` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        return main(argv)
    except CuvaeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started (loading data, probing the GPU): nothing to keep
        print("interrupted before training started; nothing was changed", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; choose a smaller model (--hidden, --channels), --batch-size or --train-size",
              file=sys.stderr)
        return 2
    except OSError as err:  # a disk or file problem no check foresaw: name the file, never a traceback
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot use{where}: {err.strerror or err}; check the path, its permissions and free space",
              file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: one line (CUVAE_DEBUG=1 shows the traceback), exit 1
        import os

        if os.environ.get("CUVAE_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
              "(a bug in cuvae; run again with CUVAE_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1


def add_train_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options (model, training, data, run) of ``cuvae-train``, also taken by ``cuvae-tui``."""
    from cuvae.backends.backend import DEVICES
    from cuvae.engine.config import ARCH_TYPES, BINARIZE, DTYPES, RECIPES
    from cuvae.nn.conv_model import CONV_LIKELIHOODS
    from cuvae.data.images import dataset_arg
    from cuvae.data import DATASETS
    from cuvae.nn.model import LIKELIHOODS, MODEL_KINDS
    from cuvae.nn.params import INITS
    from cuvae.data.protocol import TEST_BINARIZE
    from cuvae.engine.schedules import SCHEDULES
    from cuvae.nn.model import ACTIVATIONS
    from cuvae.nn.objectives import OBJECTIVES

    m = p.add_argument_group("model (defaults come from --recipe)")
    m.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="preset for the options below: default (256-128-8, Bernoulli), chapter (256-128-8, SSE, "
                        "Glorot init), pytorch-example (400-20, Bernoulli, batch 128), burda-vae / burda-iwae "
                        "(Burda et al. 2016: 200-200-50, tanh, dynamic binarisation, batch 20, Adam eps 1e-4, "
                        "burda schedule over 3,280 epochs; iwae: K=5); default: default")
    m.add_argument("--latent", type=positive_int, help="latent dimensions (default 8)")
    m.add_argument("--hidden", type=positive_int, nargs="+", metavar="N", help="encoder hidden sizes; the decoder mirrors them (default 256 128)")
    m.add_argument("--arch", "--arch-type", dest="arch_type", choices=ARCH_TYPES,
                   help="mlp (default) or conv: stride-2 convolutions up, transposed convolutions down")
    m.add_argument("--channels", type=positive_int, nargs="+", metavar="C",
                   help="conv: channels of the stride-2 convolutions; the decoder mirrors them (default 32 64 128)")
    m.add_argument("--likelihood", choices=sorted(set(LIKELIHOODS) | set(CONV_LIKELIHOODS)),
                   help="bernoulli: cross-entropy from logits; gaussian: sum of squared errors (the chapter's); "
                        "logistic (conv): discretised logistic, reported in bits/dim (the default for colour images)")
    m.add_argument("--model", choices=MODEL_KINDS, help="vae, or ae: a plain autoencoder of the same shape (no sampling, no KL)")
    m.add_argument("--activation", choices=ACTIVATIONS, help="MLP hidden layers: relu (default) or tanh (Burda et al.'s)")
    m.add_argument("--init", choices=INITS, help="weight init: pytorch (U(+-1/sqrt(fan_in))) or glorot (the chapter's)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, help="total epochs to train to (default 10)")
    t.add_argument("--batch-size", type=positive_int, help="examples per step (default 100)")
    t.add_argument("--lr", type=positive_float, help="Adam learning rate (default 1e-3)")
    t.add_argument("--objective", choices=OBJECTIVES, help="elbo: the K-sample average ELBO (default); iwae: Burda et al.'s "
                                                          "importance-weighted bound with --samples K")
    t.add_argument("--samples", type=positive_int, metavar="K", help="latent samples per example in the objective (default 1)")
    t.add_argument("--schedule", choices=SCHEDULES, help="learning rate: constant (default); burda: 3^i passes at "
                   "lr*10^(-i/7), i=0..7 (3,280 epochs; shrunk in proportion to --epochs); cosine: to zero")
    t.add_argument("--adam-eps", type=positive_float, metavar="EPS", help="Adam's epsilon (default 1e-8; Burda et al.: 1e-4)")
    t.add_argument("--beta", type=nonneg_float, help="weight of the KL term (default 1)")
    t.add_argument("--kl-warmup", type=nonneg_float, metavar="EPOCHS", help="raise the KL weight linearly from 0 over this many epochs (default 0: off)")
    t.add_argument("--clip-norm", type=positive_float, help="clip the gradient's global L2 norm to this (default: off)")
    t.add_argument("--seed", type=nonneg_int, help="seed for init, shuffling, noise and the test-set evaluation (default 0)")
    t.add_argument("--dtype", choices=DTYPES, help="float32 (default) or float64")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=dataset_arg, metavar="NAME",
                   help=f"{', '.join(DATASETS)}, cifar10, or folder:PATH (a folder or zip with train/<class>/*.png|jpg "
                        "and test/<class>/...); default mnist")
    d.add_argument("--data-dir", type=Path, help="where the dataset lives: a folder with the four IDX files (MNIST, Fashion-MNIST; downloaded there if missing), or the CIFAR-10 tarball or its folder")
    d.add_argument("--binarize", choices=BINARIZE, help="none: [0,1] intensities (default); static: one fixed Bernoulli sample; dynamic: a new sample every epoch")
    d.add_argument("--test-binarize", choices=TEST_BINARIZE,
                   help="test images: auto (default): one fixed Bernoulli sample (seed 2024) when --binarize is static "
                        "or dynamic, grey levels otherwise; none: grey levels; fixed: the fixed sample")
    d.add_argument("--train-size", type=positive_int, help="use the first N training examples")
    d.add_argument("--test-size", type=positive_int, help="use the first N test examples")
    r = p.add_argument_group("run")
    r.add_argument("--device", choices=DEVICES, default="auto", help="cpu (NumPy), gpu (CuPy) or auto (default)")
    r.add_argument("--out", type=Path, metavar="RUN_DIR", help="run directory (default: a new one under runs/)")
    r.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    r.add_argument("--json", action="store_true", help="print one JSON line per epoch on stdout instead of the progress bar")
    r.add_argument("--threads", type=positive_int, metavar="N", help="CPU: threads for BLAS and the fused kernels (default: all cores)")
    r.add_argument("--no-graph", action="store_true", help="GPU: run the step uncaptured instead of replaying a CUDA graph (debugging)")
    r.add_argument("--tf32", action="store_true", help="GPU: allow TF32 tensor-core GEMMs (faster, ~1e-3 relative error; default off)")
    return p


MODEL_FLAGS = ("latent", "hidden", "likelihood", "model", "init", "arch_type", "channels", "activation")
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "beta", "kl_warmup", "clip_norm", "seed", "dtype", "dataset",
               "binarize", "train_size", "test_size", "objective", "samples", "schedule", "adam_eps", "test_binarize")


def config_from_args(args):
    from cuvae.engine.config import TrainConfig

    given = {k: getattr(args, k) for k in MODEL_FLAGS + TRAIN_FLAGS}
    for k in ("hidden", "channels"):
        if given[k] is not None:
            given[k] = tuple(given[k])
    return TrainConfig.from_recipe(args.recipe or "default", **given)


def resumed_config(args, stored):
    """The checkpoint's config, with the training options given on the command line applied."""
    from dataclasses import replace

    from cuvae.engine.checkpoint import check_same_model
    from cuvae.engine.config import TrainConfig

    wanted = {k: getattr(args, k) for k in MODEL_FLAGS + ("dataset",) if getattr(args, k) is not None}
    for k in ("hidden", "channels"):
        if k in wanted:
            wanted[k] = tuple(wanted[k])
    check_same_model(stored, replace(stored, **wanted), args.resume)
    changes = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None and k != "dataset"}
    data_keys = {"binarize", "train_size", "test_size", "seed", "dtype", "test_binarize"} & set(changes)
    if data_keys - {k for k in data_keys if changes[k] == getattr(stored, k)}:
        flags = ", ".join(f"--{k.replace('_', '-')} {getattr(stored, k)}" for k in sorted(data_keys))
        raise CuvaeError(f"--resume keeps the run's {flags}; start a new run (--out) to change them")
    return TrainConfig.from_dict({**stored.to_dict(), **changes})


def new_run_dir(config) -> Path:
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.recipe}-{config.model}-z{config.latent}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path
