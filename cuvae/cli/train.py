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

    from cuvae.engine import runlock
    from cuvae.engine.checkpoint import CHECKPOINT, CONFIG, load_checkpoint, load_run_config
    from cuvae.engine.provenance import data_dir_for_resume

    resume, record, data_dir = None, None, args.data_dir
    if args.resume:
        if args.out and args.out.resolve() != args.resume.resolve():
            raise CuvaeError("--resume continues in its own run directory; drop --out")
        run_dir = args.resume
        if (run_dir / CHECKPOINT).exists() or not (run_dir / CONFIG).exists():
            resume = load_checkpoint(run_dir)
            stored, record = resume.config, resume.data
        else:  # stopped before its first epoch ended: start again from epoch 0 with the same config and data
            stored, record = load_run_config(run_dir)
        config = resumed_config(args, stored)
        data_dir = data_dir_for_resume(record, args.data_dir, run_dir)
    else:
        config = config_from_args(args)
        run_dir = args.out or new_run_dir(config)
        if (run_dir / CHECKPOINT).exists():
            raise CuvaeError(f"{run_dir} already holds a checkpoint: continue it with --resume {run_dir}, or pick a new --out")
    # one writer per run directory; taken before anything slow, so a second writer or a read-only
    # --out is told at once
    with runlock.hold(run_dir, "--resume" if args.resume else "--out"):
        return _train(args, console, config, run_dir, resume, record, data_dir)


def _train(args, console, config, run_dir, resume, record, data_dir) -> int:
    from cuvae.backends.backend import get_backend
    from cuvae.cli.console import ConsoleReporter, PictureWriter
    from cuvae.data import load_dataset
    from cuvae.engine.provenance import check_same_data
    from cuvae.engine.trainer import Trainer
    from rich.markup import escape

    trackers = tracking_listeners(args, run_dir, warn=lambda m: console.print(f"[yellow]warning:[/] {escape(m)}"))
    backend = get_backend(args.device, log=console.print, threads=args.threads)
    if args.device != "auto":  # auto says it itself
        console.print(f"device: {backend.device_name}")
    dataset = load_dataset(config.dataset, data_dir=data_dir, train_size=config.train_size,
                           test_size=config.test_size, progress=not args.json, log=console.print)
    check_same_data(record, dataset, run_dir)
    if config.batch_size > len(dataset.train_x):
        raise CuvaeError(f"--batch-size {config.batch_size} is larger than the {len(dataset.train_x)} training examples")
    console.print(f"model: {config.arch.describe()}, recipe {config.recipe}, lr {config.lr:g}, batch {config.batch_size}")

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
    except CuvaeError as err:  # e.g. a full disk: say what is kept and how to go on
        kept = "" if "checkpoint" in str(err) else \
            f"; the checkpoint holds epoch {trainer.epoch}" if trainer.epoch else "; no epoch was saved"
        raise CuvaeError(f"{err}{kept}; then resume with: cuvae-train --resume {run_dir}") from None
    finally:
        signal.signal(signal.SIGINT, previous)
    if result is None or result.reason == "stopped":
        epoch = trainer.epoch
        console.print(f"interrupted; {'the checkpoint holds epoch ' + str(epoch) if epoch else 'no epoch finished yet'}. "
                      f"Resume with: cuvae-train --resume {run_dir}"
                      + ("" if epoch else " (it starts again from epoch 1 with the same options and data)"))
        return 130
    if result.reason == "diverged":
        console.print(f"[red]error:[/] {result.message}; resume with: cuvae-train --resume {run_dir} "
                      f"--lr {config.lr / 10:g}")
        return 1
    console.print(f"done: {result.message}; evaluate with: cuvae-evaluate {run_dir}")
    return 0


def cli() -> int:
    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
