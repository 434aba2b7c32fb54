"""``cuvae-train`` / ``python -m cuvae.train``: train a VAE from the command line."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from cuvae.engine import config_file
from cuvae.engine.config_file import add_config_options
from cuvae.engine.tracking import add_tracking_options, tracking_listeners
from cuvae.engine.options import add_train_options, config_from_args, new_run_dir, resumed_config, run_main, stderr_console
from cuvae.errors import CuvaeError

EPILOG = """\
examples:
  cuvae-train --latent 8 --epochs 10                    # Bernoulli VAE 784-256-128-8 on MNIST
  cuvae-train --recipe chapter --epochs 20              # the book chapter's SSE VAE (lr 1e-3)
  cuvae-train --recipe chapter --lr 0.01                # ...with the chapter's lr: watch it collapse
  cuvae-train --recipe pytorch-example --epochs 10      # 784-400-20, BCE, batch 128
  cuvae-train --resume runs/RUN --epochs 30             # continue a run
  cuvae-train --tensorboard tb --mlflow sqlite:///mlflow.db  # also log to TensorBoard and MLflow
  cuvae-train --print-config > run.toml                 # a complete config file; then:
  cuvae-train --config run.toml --epochs 5              # its options, with --epochs from the command line
Ctrl-C stops after the current step and keeps the last complete checkpoint.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cuvae-train", description="Train a hand-written VAE on MNIST, Fashion-MNIST, CIFAR-10 or a folder of images.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_config_options(add_tracking_options(add_train_options(p)))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = config_file.parse_args(parser, argv)
    if args.print_config:
        print(config_file.to_toml(parser, config_file.train_values(args), "cuvae-train options (cuvae-train --config FILE)"), end="")
        return 0
    console = stderr_console()

    from cuvae.backends.backend import get_backend
    from cuvae.engine.checkpoint import CHECKPOINT, load_checkpoint
    from cuvae.cli.console import ConsoleReporter, PictureWriter
    from cuvae.data import load_dataset
    from cuvae.engine.trainer import Trainer
    from rich.markup import escape

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
    trackers = tracking_listeners(args, run_dir, warn=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}"))
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
                      listeners=[ConsoleReporter(console, json_lines=args.json), PictureWriter(run_dir), *trackers])

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
