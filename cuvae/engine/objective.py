"""What the training step optimises, chosen from a config: the options of issue 13 checked in one place.

``--objective elbo|iwae`` with ``--samples K``, ``--activation``, ``--schedule``, ``--adam-eps`` and
``--test-binarize``; the math lives in :mod:`cuvae.nn.objectives` and :mod:`cuvae.engine.schedules`.
"""

from __future__ import annotations

from functools import partial

from cuvae.errors import CuvaeError


def check(config) -> None:
    """Raise a one-line CuvaeError for an option combination the model cannot train."""
    from cuvae.data.protocol import TEST_BINARIZE
    from cuvae.engine.schedules import SCHEDULES
    from cuvae.nn.model import ACTIVATIONS
    from cuvae.nn.objectives import OBJECTIVES

    for name, value, allowed in (("--objective", config.objective, OBJECTIVES), ("--schedule", config.schedule, SCHEDULES),
                                 ("--activation", config.activation, ACTIVATIONS),
                                 ("--test-binarize", config.test_binarize, TEST_BINARIZE)):
        if value not in allowed:
            raise CuvaeError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
    if int(config.samples) < 1:
        raise CuvaeError(f"--samples must be at least 1, got {config.samples}")
    if not config.adam_eps > 0:
        raise CuvaeError(f"--adam-eps must be positive, got {config.adam_eps}")
    multi = config.objective == "iwae" or config.samples > 1
    if multi and config.model != "vae":
        raise CuvaeError("--objective iwae and --samples > 1 need --model vae (an autoencoder has no q(z|x))")
    if (multi or config.activation != "relu") and config.arch_type != "mlp":
        raise CuvaeError("--objective iwae, --samples > 1 and --activation tanh are for --arch mlp; "
                         "drop them or use the MLP")


def plain(config) -> bool:
    """True when the step is the single-sample ELBO of :meth:`VAE.loss_and_grad`."""
    return config.objective == "elbo" and config.samples == 1


def train_step(model, config):
    """(loss_and_grad(P, G, x, eps, beta), noise rows per example) for the trainer's loop."""
    if plain(config):
        return model.loss_and_grad, 1
    from cuvae.nn.objectives import loss_and_grad

    return partial(loss_and_grad, model, samples=config.samples, objective=config.objective), int(config.samples)


def fused_gpu_blocker(config) -> str | None:
    """Why the fused GPU step (ReLU, one-sample ELBO, fixed lr) cannot run this config; None if it can."""
    if config.activation != "relu" and config.arch_type != "conv":  # the conv model's layers are ReLU anyway
        return f"--activation {config.activation}"
    if not plain(config):
        return f"--objective {config.objective} --samples {config.samples}"
    if config.schedule != "constant":
        return f"--schedule {config.schedule}"
    return None
