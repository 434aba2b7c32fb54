"""The evaluation protocol: which test images a run is scored on, and the one-line name every figure carries.

Published MNIST likelihoods are measured on *binary* test digits. A run trained with
``--binarize static`` or ``dynamic`` is therefore evaluated on one fixed Bernoulli sample of
the test images, drawn from :data:`TEST_SEED` (the seed of :func:`~cuvae.data.base.prepare_images`'s
static sample), the same for every run, so numbers of different runs and of static and
dynamic training can be compared. ``--test-binarize`` overrides the choice.
"""

from __future__ import annotations

from cuvae.data.base import prepare_images

TEST_SEED = 20_24  # numpy.random.default_rng(2024).random(test_x.shape) < pixel / 255
TEST_BINARIZE = ("auto", "none", "fixed")


def resolve_test_binarize(binarize: str, test_binarize: str | None) -> str:
    """``none`` (grey levels) or ``fixed`` (the fixed Bernoulli sample) for a run's options."""
    if test_binarize in (None, "auto"):
        return "fixed" if binarize in ("static", "dynamic") else "none"
    if test_binarize not in TEST_BINARIZE:
        raise ValueError(f"test binarization must be one of {TEST_BINARIZE}, got {test_binarize!r}")
    return test_binarize


def evaluation_images(images_u8, binarize: str, test_binarize: str | None, dtype):
    """The test images a run is evaluated on, as [0, 1] floats."""
    fixed = resolve_test_binarize(binarize, test_binarize) == "fixed"
    return prepare_images(images_u8, "static" if fixed else "none", dtype)


def protocol(binarize: str, test_binarize: str | None) -> str:
    """The protocol's name, as written beside every figure."""
    fixed = resolve_test_binarize(binarize, test_binarize) == "fixed"
    if not fixed:
        return "continuous" if binarize == "none" else f"continuous test ({binarize} train)"
    if binarize == "static":
        return f"static (fixed train and test samples, seed {TEST_SEED})"
    train = "dynamic train" if binarize == "dynamic" else "continuous train"
    return f"binarized ({train}, fixed test sample, seed {TEST_SEED})"
