"""``cuvae-train`` / ``python -m cuvae.train``: train a VAE from the command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .cli import nonneg_float, positive_float, positive_int, run_main, stderr_console
from .errors import CuvaeError

EPILOG = """\
examples:
  cuvae-train --latent 8 --epochs 10                    # Bernoulli VAE 784-256-128-8 on MNIST
  cuvae-train --recipe chapter --epochs 20              # the book chapter's SSE VAE (lr 1e-3)
  cuvae-train --recipe chapter --lr 0.01                # ...with the chapter's lr: watch it collapse
  cuvae-train --recipe pytorch-example --epochs 10      # 784-400-20, BCE, batch 128
  cuvae-train --resume runs/RUN --epochs 30             # continue a run
Ctrl-C stops after the current step and keeps the last complete checkpoint.
"""


def build_parser() -> argparse.ArgumentParser:
    from .backend import DEVICES
    from .config import ARCH_TYPES, BINARIZE, DTYPES, RECIPES
    from .conv_model import CONV_LIKELIHOODS
    from .images import dataset_arg
    from .data import DATASETS
    from .model import LIKELIHOODS, MODEL_KINDS
    from .params import INITS

    p = argparse.ArgumentParser(prog="cuvae-train", description="Train a hand-written VAE on MNIST, Fashion-MNIST, CIFAR-10 or a folder of images.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (defaults come from --recipe)")
    m.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="preset for the options below: default (256-128-8, Bernoulli), chapter (256-128-8, SSE, "
                        "Glorot init), pytorch-example (400-20, Bernoulli, batch 128); default: default")
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
    m.add_argument("--init", choices=INITS, help="weight init: pytorch (U(+-1/sqrt(fan_in))) or glorot (the chapter's)")
    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=positive_int, help="total epochs to train to (default 10)")
    t.add_argument("--batch-size", type=positive_int, help="examples per step (default 100)")
    t.add_argument("--lr", type=positive_float, help="Adam learning rate (default 1e-3)")
    t.add_argument("--beta", type=nonneg_float, help="weight of the KL term (default 1)")
    t.add_argument("--kl-warmup", type=nonneg_float, metavar="EPOCHS", help="raise the KL weight linearly from 0 over this many epochs (default 0: off)")
    t.add_argument("--clip-norm", type=positive_float, help="clip the gradient's global L2 norm to this (default: off)")
    t.add_argument("--seed", type=int, help="seed for init, shuffling and noise (default 0)")
    t.add_argument("--dtype", choices=DTYPES, help="float32 (default) or float64")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", type=dataset_arg, metavar="NAME",
                   help=f"{', '.join(DATASETS)}, cifar10, or folder:PATH (a folder or zip with train/<class>/*.png|jpg "
                        "and test/<class>/...); default mnist")
    d.add_argument("--data-dir", type=Path, help="where the dataset lives: a folder with the four IDX files (MNIST, Fashion-MNIST; downloaded there if missing), or the CIFAR-10 tarball or its folder")
    d.add_argument("--binarize", choices=BINARIZE, help="none: [0,1] intensities (default); static: one fixed Bernoulli sample; dynamic: a new sample every epoch")
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


MODEL_FLAGS = ("latent", "hidden", "likelihood", "model", "init", "arch_type", "channels")
TRAIN_FLAGS = ("epochs", "batch_size", "lr", "beta", "kl_warmup", "clip_norm", "seed", "dtype", "dataset",
               "binarize", "train_size", "test_size")


def config_from_args(args):
    from .config import TrainConfig

    given = {k: getattr(args, k) for k in MODEL_FLAGS + TRAIN_FLAGS}
    for k in ("hidden", "channels"):
        if given[k] is not None:
            given[k] = tuple(given[k])
    return TrainConfig.from_recipe(args.recipe or "default", **given)


def resumed_config(args, stored):
    """The checkpoint's config, with the training options given on the command line applied."""
    from dataclasses import replace

    from .checkpoint import check_same_model
    from .config import TrainConfig

    wanted = {k: getattr(args, k) for k in MODEL_FLAGS + ("dataset",) if getattr(args, k) is not None}
    for k in ("hidden", "channels"):
        if k in wanted:
            wanted[k] = tuple(wanted[k])
    check_same_model(stored, replace(stored, **wanted), args.resume)
    changes = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None and k != "dataset"}
    data_keys = {"binarize", "train_size", "test_size", "seed", "dtype"} & set(changes)
    if data_keys - {k for k in data_keys if changes[k] == getattr(stored, k)}:
        raise CuvaeError(f"--resume keeps the run's {', '.join(sorted(data_keys))}; start a new run (--out) to change them")
    return TrainConfig.from_dict({**stored.to_dict(), **changes})


def new_run_dir(config) -> Path:
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config.recipe}-{config.model}-z{config.latent}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = stderr_console()

    from .backend import get_backend
    from .checkpoint import CHECKPOINT, load_checkpoint
    from .console import ConsoleReporter, PictureWriter
    from .data import load_dataset
    from .trainer import Trainer

    resume = None
    if args.resume:
        if args.out and args.out.resolve() != args.resume.resolve():
            raise CuvaeError("--resume continues in its own run directory; drop --out")
        resume = load_checkpoint(args.resume)
        config = resumed_config(args, resume.config)
        run_dir = args.resume
    else:
        config = config_from_args(args)
        run_dir = args.out or new_run_dir(config)
        if (run_dir / CHECKPOINT).exists():
            raise CuvaeError(f"{run_dir} already holds a checkpoint: continue it with --resume {run_dir}, or pick a new --out")
    backend = get_backend(args.device, log=console.print, threads=args.threads)
    if args.device != "auto":  # auto says it itself
        console.print(f"device: {backend.device_name}")
    dataset = load_dataset(config.dataset, data_dir=args.data_dir, train_size=config.train_size,
                           test_size=config.test_size, progress=not args.json, log=console.print)
    if config.batch_size > len(dataset.train_x):
        raise CuvaeError(f"--batch-size {config.batch_size} is larger than the {len(dataset.train_x)} training examples")
    console.print(f"model: {config.arch.describe()}, recipe {config.recipe}, lr {config.lr:g}, batch {config.batch_size}"
                  f"{'' if resume else f', run dir {run_dir}'}")

    trainer = Trainer(config, backend, dataset, run_dir, resume=resume, graph=not args.no_graph, tf32=args.tf32,
                      listeners=[ConsoleReporter(console, json_lines=args.json), PictureWriter(run_dir)])

    def on_sigint(signum, frame):
        if trainer._stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (the checkpoint on disk is still whole)
        console.print("stopping after this step (Ctrl-C again to abort at once)...")
        trainer.stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = trainer.run()
    except KeyboardInterrupt:
        result = None
    finally:
        signal.signal(signal.SIGINT, previous)
    if result is None or result.reason == "stopped":
        epoch = trainer.epoch
        console.print(f"interrupted; {'the checkpoint holds epoch ' + str(epoch) if epoch else 'no epoch finished yet'}. "
                      f"Resume with: cuvae-train --resume {run_dir}")
        return 130
    if result.reason == "diverged":
        console.print(f"[red]error:[/] {result.message}")
        return 1
    console.print(f"done: {result.message}; evaluate with: cuvae-evaluate {run_dir}")
    return 0


def cli() -> int:
    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
