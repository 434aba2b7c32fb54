"""A trained run opened for measuring or drawing: its checkpoint, the model on a backend, and the
run's own test set prepared under its protocol (the data it trained on, from its data record).

One loader for ``cuvae-evaluate``, the sweep's analysis and ``cuvae-show``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Loaded:
    """A run's model, parameters, test images (on the backend) and labels (host)."""

    model: object
    P: dict
    x: object
    labels: np.ndarray
    shape: tuple
    title: str
    backend: object
    ckpt: object = None  # the Checkpoint (config, epoch, data record)
    data: object = None  # the Dataset the test images came from (its ``source`` says which)
    test_binarize: str = "auto"  # the test images' protocol actually used


def load_run(run_dir, *, device="auto", data_dir=None, test_size=None, test_binarize=None, progress=False,
             log=None, ckpt=None) -> Loaded:
    """Open ``run_dir``; ``test_binarize`` None keeps the run's choice. Only the test split is loaded.
    ``ckpt``: its checkpoint, when the caller has already read it."""
    from cuvae.backends.backend import get_backend
    from cuvae.data import load_dataset
    from cuvae.data.protocol import evaluation_images
    from cuvae.engine.checkpoint import load_checkpoint
    from cuvae.engine.provenance import data_dir_for_resume

    ckpt = ckpt or load_checkpoint(run_dir)
    cfg = ckpt.config
    data_dir = data_dir_for_resume(ckpt.data, data_dir, run_dir)
    backend = get_backend(device, log=log)
    data = load_dataset(cfg.dataset, data_dir=data_dir, train_size=1, test_size=test_size or cfg.test_size,
                        progress=progress, log=log or (lambda *_: None))
    model = cfg.build_model(backend.ops)
    P = model.layout.views(backend.to_device(ckpt.params.astype(model.dtype)))
    test_binarize = test_binarize or cfg.test_binarize
    x = backend.to_device(evaluation_images(data.test_x, cfg.binarize, test_binarize, model.dtype))
    return Loaded(model, P, x, np.asarray(data.test_y), tuple(data.image_shape),
                  f"{cfg.arch.describe()}, epoch {ckpt.epoch}", backend, ckpt, data, test_binarize)
