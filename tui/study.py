"""The chapter's latent-size study over a runs folder: one row per trained size (no Textual here).

:func:`study_row` reads a run directory (checkpoint and metrics) and measures what cuvae-sweep's
table shows: negative ELBO, IWAE NLL, active units and sharpness, plus the pictures the compare
screen draws (the same test digits reconstructed, a row of samples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .diagnostics import IWAE_K


@dataclass
class StudyRow:
    latent: int
    run_dir: Path
    epoch: int
    history: list[dict]
    recon: np.ndarray | None = None  # (n, H, W)
    samples: np.ndarray | None = None
    iwae_nll: float | None = None
    sharpness: float | None = None
    sharpness_samples: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def study_row(latent: int, run_dir, test_x: np.ndarray, eval_x: np.ndarray, shape, n: int = 6,
              measure: bool = True) -> StudyRow:
    """Everything the compare screen shows for one run (run in a worker: the IWAE takes seconds)."""
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.measure.analysis import sharpness_scores
    from cuvae.measure.evaluation import iwae_nll

    from .session import ViewModel, read_history

    ckpt = load_checkpoint(run_dir)
    row = StudyRow(latent, Path(run_dir), ckpt.epoch, read_history(run_dir))
    view = ViewModel(ckpt.config, ckpt.params, test_x, np.zeros(len(test_x), np.uint8), shape)
    row.samples = view.samples(n, seed=0)
    if len(test_x):
        row.recon = view.reconstructions(n)[1]
        if measure and len(eval_x) and ckpt.config.model == "vae":
            row.iwae_nll = iwae_nll(view.model, view.P, eval_x, k=IWAE_K, seed=0)
            s = sharpness_scores(view.model, view.P, eval_x, shape=shape, n=len(eval_x))
            row.sharpness, row.sharpness_samples = s["sharpness_recon"], s["sharpness_samples"]
    return row


COLUMNS = (("latent", "z", "d"), ("epoch", "epochs", "d"), ("test_loss", "test -ELBO", ".2f"),
           ("test_recon", "recon", ".2f"), ("test_kl", "KL", ".2f"), ("iwae_nll", f"IWAE NLL (k={IWAE_K})", ".2f"),
           ("active_units", "active", "d"), ("sharpness", "sharp recon", ".3f"),
           ("sharpness_samples", "sharp samples", ".3f"))


def table_cells(row: StudyRow) -> list[str]:
    values = {"latent": row.latent, "epoch": row.epoch, "iwae_nll": row.iwae_nll, "sharpness": row.sharpness,
              "sharpness_samples": row.sharpness_samples, **{k: row.last.get(k) for k in
                                                             ("test_loss", "test_recon", "test_kl", "active_units")}}
    return ["..." if values[k] is None else format(values[k], fmt) for k, _, fmt in COLUMNS]
