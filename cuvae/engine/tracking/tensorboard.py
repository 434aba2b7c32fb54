"""``--tensorboard DIR``: the run's events as TensorBoard event files in ``DIR/<run name>``.

Written synchronously through tensorboardX's event-file writer (not its ``SummaryWriter``,
whose background thread dies silently on a full disk and then blocks the caller once its
queue fills): a failed write raises here, where :class:`GuardedListener` catches it.

Every tag uses one x axis, the global step ``(epoch - 1) * steps_per_epoch + step``, so a
resumed run can purge what came after its checkpoint (TensorBoard drops events at or past
the step of a ``SessionLog.START``):

- ``train_step/{loss,recon,kl,examples_per_s,lr}``: the epoch's running means, as the trainer reports them;
- ``epoch/<key>``: every number of the run's metrics.jsonl line, at the epoch's last step;
- ``latent/kl_per_dim``: a histogram whose bucket i holds latent dimension i's test KL;
- ``pictures/{reconstructions,samples}``: the same grids as the run's PNGs;
- ``config`` and ``test_protocol`` (text): the options and how the test figures were measured.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cuvae.engine.events import EpochEnded, RunStarted, SamplesReady, StepMetrics, TrainingFinished
from cuvae.engine.tracking.base import GuardedListener
from cuvae.errors import CuvaeError

PROTOCOL = ("epoch/test_loss = test_recon + test_kl: the negative ELBO in nats per test example, one posterior sample per "
            "example (noise seeded by the run's seed), on the first {n} test examples, after each epoch; active_units: "
            "latent dimensions whose posterior mean varies by more than 0.01 over them. The importance-weighted NLL is "
            "cuvae-evaluate's.")


class TensorBoardLogger(GuardedListener):
    name = "TensorBoard"

    def __init__(self, logdir, run_dir, warn, run_name: str | None = None):
        super().__init__(warn)
        try:
            from tensorboardX import summary
            from tensorboardX.event_file_writer import EventsWriter
            from tensorboardX.proto import event_pb2
        except ImportError:
            raise CuvaeError("--tensorboard needs tensorboardX: pip install 'cuvae[tensorboard]' (or pip install tensorboardX)") from None
        self._summary, self._writer_cls, self._pb = summary, EventsWriter, event_pb2
        self.logdir = Path(logdir) / (run_name or Path(run_dir).resolve().name)
        self.target = str(self.logdir)
        self.writer = None
        self.steps_per_epoch, self.lr = 1, 0.0

    def _write(self, summary, step: int) -> None:
        self.writer.write_event(self._pb.Event(wall_time=time.time(), step=int(step), summary=summary))

    def _global(self, epoch: int, step: int) -> int:
        return (epoch - 1) * self.steps_per_epoch + step

    def handle(self, event) -> None:
        s = self._summary
        if isinstance(event, RunStarted):
            self.logdir.mkdir(parents=True, exist_ok=True)
            # the suffix keeps a resume within the same second from overwriting the earlier file
            # (the name holds whole seconds), and sorts after it, as TensorBoard reads them in name order
            self.writer = self._writer_cls(str(self.logdir / "events"), filename_suffix=f".{time.time_ns()}")
            self.steps_per_epoch, self.lr = event.steps_per_epoch, float(event.config["lr"])
            first = event.start_epoch * event.steps_per_epoch + 1
            if event.start_epoch:  # resumed: drop anything logged after the checkpoint by an earlier attempt
                self.writer.write_event(self._pb.Event(wall_time=time.time(), step=first,
                                                       session_log=self._pb.SessionLog(status=self._pb.SessionLog.START)))
            n = event.config.get("test_size") or "all"
            self._write(s.text("config", "    " + json.dumps(event.config, indent=2).replace("\n", "\n    ")), first)
            self._write(s.text("test_protocol", PROTOCOL.format(n=n)), first)
            self.writer.flush()
        elif self.writer is None:
            return
        elif isinstance(event, StepMetrics):
            step = self._global(event.epoch, event.step)
            for key in ("loss", "recon", "kl", "examples_per_s"):
                self._write(s.scalar(f"train_step/{key}", getattr(event, key)), step)
            self._write(s.scalar("train_step/lr", self.lr), step)
        elif isinstance(event, EpochEnded):
            step = self._global(event.epoch, self.steps_per_epoch)
            for key, value in event.metrics.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._write(s.scalar(f"epoch/{key}", float(value)), step)
            if event.kl_per_dim:
                self._write(kl_histogram(s, event.kl_per_dim), step)
            self.writer.flush()  # an epoch's worth is on disk (and a full disk shows itself here)
            self.kept = f"epochs up to {event.epoch}"
        elif isinstance(event, SamplesReady):
            from cuvae.measure.render import picture_grid

            image = np.asarray(picture_grid(event.kind, event.images, event.epoch).convert("RGB"))
            self._write(s.image(f"pictures/{event.kind}", image, dataformats="HWC"),
                        self._global(max(event.epoch, 1), self.steps_per_epoch))
        elif isinstance(event, TrainingFinished):
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


def kl_histogram(summary, kl_per_dim):
    """Latent dimension i's KL as the height of bucket i (edges i - 0.5, i + 0.5): which dimensions carry
    information, epoch after epoch, in TensorBoard's histogram view."""
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    idx = np.arange(len(kl), dtype=np.float64)
    return summary.histogram_raw("latent/kl_per_dim", min=0.0, max=float(len(kl) - 1), num=float(kl.sum()),
                                 sum=float((idx * kl).sum()), sum_squares=float((idx * idx * kl).sum()),
                                 bucket_limits=list(idx + 0.5), bucket_counts=list(kl))
