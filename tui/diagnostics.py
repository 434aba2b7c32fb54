"""What the latent space is doing: per-dimension KL, active units, ELBO surgery and an IWAE NLL.

No Textual here: :func:`diagnose` runs in a worker thread over a host copy of the parameters on its
own CPU model, and returns plain numbers. Each figure is a :mod:`cuvae.measure` function on the
same model and the same fixed test subset, so the panel and ``cuvae-evaluate`` agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SUBSET = 1000  # the fixed test subset: its first SUBSET images
IWAE_K = 100
IWAE_SHARE = 0.03  # the IWAE may take at most this share of the wall time (it is the costly part)


def data_protocol(config) -> str:
    """'continuous' or 'binarized': which published numbers an NLL may be compared with.

    One small function so it can give way to the evaluation results' own protocol label.
    """
    return "continuous" if getattr(config, "binarize", "none") in (None, "none") else "binarized"


@dataclass
class Diagnosis:
    epoch: int
    kl_per_dim: np.ndarray  # (L,) mean over the subset of KL(q(z_u|x) || N(0, 1))
    variances: np.ndarray  # (L,) Cov_x(E_q[z_u]): the active-unit statistic
    active: np.ndarray  # (L,) bool, variances > 0.01
    mutual_info: float
    marginal_kl: float
    avg_kl: float
    mi_bound: float
    examples: int
    protocol: str
    iwae_nll: float | None = None  # None when not computed this time
    iwae_k: int = IWAE_K
    iwae_epoch: int | None = None  # the epoch iwae_nll is from (an earlier one when not due this time)
    seconds: dict = field(default_factory=dict)

    @property
    def active_count(self) -> int:
        return int(self.active.sum())


def per_dim_kl(means: np.ndarray, logvars: np.ndarray) -> np.ndarray:
    """Closed-form KL of each latent dimension, averaged over the examples."""
    return (0.5 * (means ** 2 + np.exp(logvars) - 1.0 - logvars)).mean(0)


def diagnose(view, x: np.ndarray, epoch: int, protocol: str, iwae, seed: int = 0) -> Diagnosis:
    """The panel's numbers for the model of ``view`` (a session.ViewModel) on the rows of x.

    ``iwae``: a bool, or a callable given the seconds the cheap part took that says whether the
    IWAE runs this time.
    """
    from cuvae.measure.analysis import elbo_surgery, encode_gaussians
    from cuvae.measure.evaluation import ACTIVE_THRESHOLD, iwae_nll

    t0 = time.perf_counter()
    means, logvars = encode_gaussians(view.model, view.P, x)
    variances = means.var(0)
    surgery = elbo_surgery(view.model, view.P, x, seed=seed)
    t1 = time.perf_counter()
    d = Diagnosis(epoch, per_dim_kl(means, logvars), variances, variances > ACTIVE_THRESHOLD, surgery["mutual_info"],
                  surgery["marginal_kl"], surgery["avg_kl"], surgery["mi_bound"], surgery["examples"], protocol,
                  seconds={"surgery": t1 - t0})
    if iwae(t1 - t0) if callable(iwae) else iwae:
        d.iwae_nll, d.iwae_epoch = iwae_nll(view.model, view.P, x, k=IWAE_K, seed=seed), epoch
        d.seconds["iwae"] = time.perf_counter() - t1
    return d


IWAE_PER_SURGERY = 50  # before the first IWAE, its cost is guessed as this many surgery passes


class IwaeBudget:
    """Decides when the next IWAE runs: whenever its own cost stays under IWAE_SHARE of the time.

    Until one has run, its cost is guessed from the cheap part's time, counted from the first call,
    so a resumed run does not start with seconds of IWAE beside its first epoch.
    """

    def __init__(self, share: float = IWAE_SHARE) -> None:
        self.share, self.last_end, self.cost = share, None, None

    def due(self, now: float, idle: bool = False, surgery_seconds: float = 0.0) -> bool:
        if idle:  # training is over (or never ran): nothing to slow down
            return True
        if self.cost is None:
            if self.last_end is None:
                self.last_end = now
            return now - self.last_end >= IWAE_PER_SURGERY * surgery_seconds / self.share
        return now - self.last_end >= self.cost / self.share

    def record(self, end: float, cost: float) -> None:
        self.last_end, self.cost = end, cost
