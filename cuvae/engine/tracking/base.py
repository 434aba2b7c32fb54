"""A listener that survives its own failure: the first exception disables it, one warning says what
was lost, and training goes on (metrics.jsonl and the checkpoint, written by the trainer, keep everything)."""

from __future__ import annotations

from cuvae.engine.events import EpochEnded, RunStarted, SamplesReady, StepMetrics


class GuardedListener:
    name = "logger"  # shown in the warning
    target = ""  # where it logs, shown in the warning

    def __init__(self, warn):
        self.warn = warn
        self.failed = False
        self.where = "the start of the run"
        self.kept = "no epoch"  # what is safely stored, set by the subclass after each flush

    def __call__(self, event) -> None:
        if self.failed:
            return
        if isinstance(event, RunStarted):
            self.where = f"epoch {event.start_epoch + 1}"
        elif isinstance(event, StepMetrics):
            self.where = f"epoch {event.epoch}, step {event.step}"
        elif isinstance(event, EpochEnded):
            self.where = f"the end of epoch {event.epoch}"
        elif isinstance(event, SamplesReady):
            self.where = f"the pictures of epoch {event.epoch}"
        try:
            self.handle(event)
        except Exception as err:  # noqa: BLE001 - a logger must never stop training
            self.failed = True
            first = (str(err).strip().splitlines() or [""])[0][:200]
            try:
                self.close()
            except Exception:  # noqa: BLE001 - it is already broken
                pass
            self.warn(f"{self.name} logging to {self.target} failed at {self.where} ({type(err).__name__}: {first}); "
                      f"it holds {self.kept}, the rest of this run is not logged there; training goes on and "
                      f"metrics.jsonl keeps every epoch")

    def handle(self, event) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass
