"""Learning-rate schedules, as a function of training progress t in [0, 1).

- ``constant``: the configured rate throughout;
- ``burda`` (Burda et al., 2016): 3^i passes at lr * 10^(-i/7) for i = 0..7, 3,280 passes in all;
  shorter runs keep the stages' proportions (stage i covers the same fraction of training);
- ``cosine``: lr * (1 + cos(pi t)) / 2.

The trainer evaluates the rate before every step, t = (epoch - 1 + step / steps) / epochs, so a
shortened ``burda`` schedule still visits its early, short stages.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "burda", "cosine")
BURDA_STAGES = 8
BURDA_PASSES = sum(3**i for i in range(BURDA_STAGES))  # 3,280


def burda_stage(t: float) -> int:
    """Stage i whose passes (cumulative 1, 4, 13, ..., 3280, as fractions of 3280) hold progress t."""
    done = 0
    for i in range(BURDA_STAGES):
        done += 3**i
        if t * BURDA_PASSES < done - 1e-9:
            return i
    return BURDA_STAGES - 1


def lr_at(schedule: str, lr: float, t: float) -> float:
    if schedule == "constant":
        return lr
    if schedule == "burda":
        return lr * 10.0 ** (-burda_stage(t) / 7.0)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0)))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def progress(epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
    """Fraction of training done before step ``step`` (0-based) of epoch ``epoch`` (1-based)."""
    return (epoch - 1 + step / steps_per_epoch) / max(epochs, 1)
