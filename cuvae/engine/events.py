"""Typed events the trainer emits; the CLI, the TUI and tests only listen.

A listener is any callable taking one event. Events are small, immutable and
hold plain Python values and NumPy arrays (never backend arrays), so a UI
thread can keep them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class RunStarted:
    run_dir: str
    config: dict
    device: str
    data_source: str
    start_epoch: int  # epochs already done (resume), 0 for a new run
    steps_per_epoch: int
    train_examples: int


@dataclass(frozen=True)
class StepMetrics:
    """Running means over the epoch so far; emitted every few steps, not every step."""

    epoch: int
    step: int
    steps_per_epoch: int
    loss: float
    recon: float
    kl: float
    examples_per_s: float


@dataclass(frozen=True)
class EpochEnded:
    epoch: int
    metrics: dict  # the line written to metrics.jsonl
    kl_per_dim: tuple = ()  # test KL of each latent dimension (sums to test_kl); empty for the autoencoder


@dataclass(frozen=True)
class SamplesReady:
    """Decoded images for a view: (N, H, W) floats in [0, 1]."""

    kind: str  # "reconstructions" | "samples"
    images: np.ndarray = field(repr=False)
    epoch: int = 0


@dataclass(frozen=True)
class Notice:
    """A one-line warning or piece of information for the user."""

    message: str
    level: str = "warning"


@dataclass(frozen=True)
class TrainingFinished:
    reason: str  # "completed" | "stopped" | "diverged"
    epoch: int  # last complete (checkpointed) epoch
    message: str


Event = RunStarted | StepMetrics | EpochEnded | SamplesReady | Notice | TrainingFinished
Listener = Callable[[Event], None]
