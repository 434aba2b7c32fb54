"""Listeners that show training in a terminal: a rich progress bar, or JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cuvae.engine.events import EpochEnded, Notice, RunStarted, SamplesReady, StepMetrics, TrainingFinished
from cuvae.measure.render import picture_grid, save_png


def format_epoch(m: dict) -> str:
    return (f"epoch {m['epoch']:>3}  train {m['train_loss']:8.3f}  test {m['test_loss']:8.3f} "
            f"(recon {m['test_recon']:.3f} + KL {m['test_kl']:.3f})  active {m['active_units']}  "
            f"{m['seconds']:.1f} s  {m['examples_per_s']:,.0f} ex/s")


def describe_protocol(config: dict) -> str:
    """One line on what the test figures mean: the protocol, and for SSE that the loss is unnormalised."""
    from cuvae.data.protocol import protocol

    line = f"test figures: {protocol(config.get('binarize', 'none'), config.get('test_binarize', 'none'))} protocol"
    if config.get("likelihood") == "gaussian":
        line += "; the gaussian loss is a sum of squared errors, an unnormalised log-likelihood (not comparable with papers)"
    return line


def describe_objective(config: dict) -> str:
    """One line on a non-default objective, schedule or Adam epsilon; empty for the plain ELBO at a fixed rate."""
    parts = []
    if config.get("objective", "elbo") != "elbo" or config.get("samples", 1) != 1:
        parts.append(f"objective {config['objective']} with K={config['samples']} samples per example")
    if config.get("schedule", "constant") != "constant":
        parts.append(f"{config['schedule']} learning-rate schedule over {config['epochs']} epochs")
    if config.get("adam_eps", 1e-8) != 1e-8:
        parts.append(f"Adam eps {config['adam_eps']:g}")
    return "; ".join(parts)


class ConsoleReporter:
    """Progress bar per epoch on stderr and one summary line per epoch; ``json_lines`` prints metrics instead."""

    def __init__(self, console, json_lines: bool = False, show_progress: bool = True):
        self.console, self.json_lines = console, json_lines
        # a bar only where someone watches: in a pipe or a log file it would be noise
        self.show_progress = show_progress and not json_lines and console.is_terminal
        self.progress, self.task, self.epochs = None, None, 0

    def __call__(self, event) -> None:
        if isinstance(event, RunStarted):
            self.epochs = event.config["epochs"]
            verb = f"resuming after epoch {event.start_epoch}" if event.start_epoch else "training"
            n = event.config["epochs"]
            self.console.print(f"{verb}: {n} epoch{'' if n == 1 else 's'}, {event.steps_per_epoch} steps each, "
                               f"run dir {event.run_dir}")
            self.console.print(describe_protocol(event.config))
            if describe_objective(event.config):
                self.console.print(describe_objective(event.config))
        elif isinstance(event, StepMetrics):
            self._progress(event)
        elif isinstance(event, EpochEnded):
            self._close_bar()
            if self.json_lines:
                print(json.dumps(event.metrics), flush=True)
            else:
                self.console.print(format_epoch(event.metrics))
        elif isinstance(event, Notice):
            self._close_bar()
            self.console.print(f"[yellow]warning:[/] {event.message}" if event.level == "warning" else event.message)
        elif isinstance(event, TrainingFinished):
            self._close_bar()

    def _progress(self, e: StepMetrics) -> None:
        if not self.show_progress:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if self.progress is None:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[rate]:,.0f} ex/s"),
                TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("train", total=e.steps_per_epoch, epoch=e.epoch, epochs=self.epochs,
                                               loss=e.loss, rate=e.examples_per_s)
        self.progress.update(self.task, completed=e.step, loss=e.loss, rate=e.examples_per_s, epoch=e.epoch)

    def _close_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None


class PictureWriter:
    """Keeps RUN_DIR/reconstructions.png and samples.png current (written atomically)."""

    def __init__(self, run_dir):
        self.run_dir = Path(run_dir)

    def __call__(self, event) -> None:
        if not isinstance(event, SamplesReady):
            return
        save_png(picture_grid(event.kind, event.images, event.epoch), self.run_dir / f"{event.kind}.png")


def print_stderr(message: str) -> None:
    print(message, file=sys.stderr)
