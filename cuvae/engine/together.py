"""The seeds of one configuration trained together: k models in one step (the fused step of
:mod:`cuvae.backends.gpu_step` with k > 1, as :mod:`cuvae.backends.multi` uses it), each written to
its own run directory exactly as a separate run writes it.

Each seed is an ordinary :class:`~cuvae.engine.trainer.Trainer` (its model initialised from its own
seed, its Adam state, metrics.jsonl, checkpoint, pictures and events); only the steps are shared.
The members' parameters, gradients and Adam moments are views into one flat buffer each (model i at
i * P), which one k-model step updates. All k see the batches (and dynamic binarisation) of the
*data seed*, the first seed's, and each draws its own noise: the data seed's model is exactly its
run alone on the fused step; the others differ from theirs alone in data order only. Every member's
run directory records this in ``together.json``, so a resumed run keeps its data order.

On the GPU the step runs the CUDA kernels; on the CPU their NumPy twins (the step's specification:
slow, for checking).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from cuvae.engine import objective, runlock
from cuvae.engine.events import Notice, StepMetrics, TrainingFinished
from cuvae.engine.trainer import Trainer

TOGETHER = "together.json"  # in each member's run directory: {"data_seed": s, "seeds": [...]}


def blocker(config) -> str | None:
    """Why the k-model step cannot train this configuration (it is the fused GPU step's); None if it can."""
    if config.arch_type != "mlp":
        return f"--arch {config.arch_type}"
    if config.dtype != "float32":
        return f"--dtype {config.dtype}"
    if config.clip_norm is not None:
        return "--clip-norm"
    return objective.fused_gpu_blocker(config)


def data_seed_of(run_dir) -> int | None:
    """The data seed a run was trained together with (its together.json), or None."""
    try:
        return int(json.loads((Path(run_dir) / TOGETHER).read_text())["data_seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class TrainTogether:
    """k runs of one configuration that differ only in their seed, all at the same epoch."""

    def __init__(self, configs, backend, dataset, run_dirs, *, resumes=None, listeners=None, data_seed=None,
                 graph: bool = True, tf32: bool = False, report_every: float = 0.25):
        from cuvae.backends.gpu_step import DeviceStep

        k = len(configs)
        resumes = resumes or [None] * k
        listeners = listeners or [[] for _ in range(k)]
        why = blocker(configs[0])
        if why:
            raise ValueError(f"the k-model step cannot train {why}")
        self.members: list[Trainer] = []
        for cfg, run_dir, resume, ls in zip(configs, run_dirs, resumes, listeners):
            t = Trainer(cfg, backend, dataset, run_dir, resume=resume, listeners=ls, own_steps=False)
            if self.members:
                t.train_x = self.members[0].train_x  # one copy of the training images
            self.members.append(t)
        lead = self.members[0]
        if len({t.epoch for t in self.members}) > 1 or len({t.adam.step_count for t in self.members}) > 1:
            raise ValueError("runs trained together must stand at the same epoch")
        self.data_seed = configs[0].seed if data_seed is None else int(data_seed)
        self.report_every = report_every
        # one flat buffer per state, model i at i * P; each member keeps views of its slice
        xp, P = backend.xp, lead.model.layout.size
        flat = {name: xp.zeros(k * P, np.float32) for name in ("params", "grads", "m", "v")}
        for i, t in enumerate(self.members):
            part = slice(i * P, (i + 1) * P)
            flat["params"][part], flat["m"][part], flat["v"][part] = t.params, t.adam.m, t.adam.v
            t.params, t.grads, t.adam.m, t.adam.v = (flat[n][part] for n in ("params", "grads", "m", "v"))
            t.P, t.G = t.model.layout.views(t.params), t.model.layout.views(t.grads)
        cfg = configs[0]
        self.step = DeviceStep(lead.model.arch, flat["params"], flat["grads"], flat["m"], flat["v"], lead.train_x,
                               k=k, seed=self.data_seed, lr=cfg.lr, beta1=lead.adam.beta1, beta2=lead.adam.beta2,
                               eps=lead.adam.eps, binarize=cfg.binarize == "dynamic",
                               engine="cuda" if backend.name == "gpu" else "twin", graph=graph, tf32=tf32,
                               log=lambda m: lead.emit(Notice(m)))
        self._flat = flat

    @property
    def seeds(self) -> list[int]:
        return [t.config.seed for t in self.members]

    def run(self) -> list[TrainingFinished]:
        """Train every member to its config's epochs; returns each one's TrainingFinished. On any way out
        the step is closed first, so nothing still writes the parameters; checkpoints hold whole epochs."""
        with ExitStack() as locks:
            for t in self.members:
                locks.enter_context(runlock.hold(t.run_dir))
            try:
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    return self._run()
            finally:
                self.step.close()
                for t in self.members:
                    t.close()

    def _run(self) -> list[TrainingFinished]:
        lead, cfg = self.members[0], self.members[0].config
        record = json.dumps({"data_seed": self.data_seed, "seeds": self.seeds}) + "\n"
        for t in self.members:
            t._begin()
            t._write(lambda t=t: (t.run_dir / TOGETHER).write_text(record), TOGETHER)
        results: dict[int, TrainingFinished] = {}  # members that diverged: their checkpoints stay as they were
        n, B = lead.train_x.shape[0], cfg.batch_size
        steps, epoch = lead.steps_per_epoch, lead.epoch
        while epoch < cfg.epochs and len(results) < len(self.members):
            epoch += 1
            self.step.start_epoch(epoch, [lead._beta(epoch, s) for s in range(steps)], lead.adam.step_count)
            start = last = time.perf_counter()
            for i, s in enumerate(range(0, n, B)):
                b = min(B, n - s)
                self.step.step(b)
                for t in self.members:
                    t.adam.step_count += 1
                now = time.perf_counter()
                if now - last >= self.report_every:  # the only host read inside an epoch
                    last = now
                    means = self.step.read_sums() / (s + b)
                    for j, t in enumerate(self.members):
                        if j not in results:
                            t.emit(StepMetrics(epoch, i + 1, steps, *map(float, means[j]), (s + b) / (now - start)))
            means = self.step.read_sums() / n  # synchronises
            seconds = time.perf_counter() - start
            for j, t in enumerate(self.members):
                if j not in results:
                    finished = t._end_epoch(epoch, means[j], seconds)  # test figures, metrics, checkpoint, events
                    if finished is not None:
                        results[j] = finished
        for j, t in enumerate(self.members):
            if j not in results:
                t.emit_pictures()
                results[j] = t._finish("completed", f"trained {t.epoch} epochs together with seeds "
                                                    f"{', '.join(map(str, self.seeds))}; model in {t.run_dir}")
        return [results[j] for j in range(len(self.members))]
