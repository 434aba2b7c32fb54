"""Textual messages wrapping the trainer's events (posted by the thread reading the training child)
and the results of the picture and diagnostics workers.

Small dataclass-like messages, all of low rate: train steps are no messages (the app's redraw timer
drains them from a buffer, see :mod:`cuvae_tui.workers`).
"""

from __future__ import annotations

import numpy as np
from textual.message import Message

from cuvae.engine.events import EpochEnded, RunStarted, TrainingFinished


class Ready(Message):
    """A run is prepared (data loaded, checkpoint read); ``prepared`` is a session.Prepared."""

    def __init__(self, prepared, generation: int) -> None:
        super().__init__()
        self.prepared, self.generation = prepared, generation


class Started(Message):
    def __init__(self, event: RunStarted, generation: int) -> None:
        super().__init__()
        self.event, self.generation = event, generation


class Epoch(Message):
    """An epoch ended; ``params`` is a host copy of the parameters taken in the training thread."""

    def __init__(self, event: EpochEnded, params: np.ndarray, generation: int) -> None:
        super().__init__()
        self.event, self.params, self.generation = event, params, generation


class Pictures(Message):
    """A view model and the main screen's pictures, made in a worker from an epoch's parameters."""

    def __init__(self, view, recon: np.ndarray | None, samples: np.ndarray, generation: int, epoch: int) -> None:
        super().__init__()
        self.view, self.recon, self.samples, self.generation, self.epoch = view, recon, samples, generation, epoch


class Diagnosed(Message):
    """The diagnostics worker's numbers (a diagnostics.Diagnosis) for one epoch."""

    def __init__(self, diagnosis, generation: int) -> None:
        super().__init__()
        self.diagnosis, self.generation = diagnosis, generation


class Info(Message):
    def __init__(self, text: str, level: str = "information") -> None:
        super().__init__()
        self.text, self.level = text, level


class Finished(Message):
    def __init__(self, event: TrainingFinished, generation: int) -> None:
        super().__init__()
        self.event, self.generation = event, generation


class Failed(Message):
    """A CuvaeError (or an unexpected error) ended the run; ``text`` is one line."""

    def __init__(self, text: str, generation: int) -> None:
        super().__init__()
        self.text, self.generation = text, generation
