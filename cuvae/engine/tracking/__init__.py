"""Experiment tracking as trainer listeners: TensorBoard (``--tensorboard DIR``, tensorboardX) and
MLflow (``--mlflow URI``, mlflow-skinny). Each listens to the typed events of
:mod:`cuvae.engine.events` and never runs inside the loop; each survives its own failure
(:class:`~cuvae.engine.tracking.base.GuardedListener`). The libraries load only when asked for.
"""

from __future__ import annotations

import argparse


def add_tracking_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = p.add_argument_group("experiment tracking")
    g.add_argument("--tensorboard", metavar="DIR",
                   help="also log to TensorBoard event files in DIR/<run name> (pip install 'cuvae[tensorboard]'); "
                        "view with: tensorboard --logdir DIR")
    g.add_argument("--mlflow", metavar="URI",
                   help="also log params, metrics, pictures and the checkpoint to an MLflow tracking store, e.g. "
                        "sqlite:///mlflow.db, file:./mlruns or http://host:5000 (pip install 'cuvae[mlflow]')")
    g.add_argument("--mlflow-experiment", metavar="NAME", default="cuvae",
                   help="MLflow experiment to log into (default cuvae)")
    return p


def tracking_listeners(args, run_dir, warn, run_name: str | None = None) -> list:
    """The listeners ``args`` ask for; ``warn(message)`` gets the one warning of a logger that fails."""
    listeners = []
    if getattr(args, "tensorboard", None):
        from cuvae.engine.tracking.tensorboard import TensorBoardLogger

        listeners.append(TensorBoardLogger(args.tensorboard, run_dir, warn, run_name=run_name))
    if getattr(args, "mlflow", None):
        from cuvae.engine.tracking.mlflow import MlflowLogger

        listeners.append(MlflowLogger(args.mlflow, run_dir, warn, experiment=args.mlflow_experiment, run_name=run_name))
    return listeners
