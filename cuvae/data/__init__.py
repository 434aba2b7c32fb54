"""Data sets: MNIST and Fashion-MNIST (IDX), CIFAR-10 and image folders, verified downloads, the bundled subset.

- :mod:`~cuvae.data.base`: the :class:`Dataset` record, size checks, the cache folder;
- :mod:`~cuvae.data.mnist`: IDX files, their lookup order, the bundled MNIST subset;
- :mod:`~cuvae.data.images`: CIFAR-10 and folders/zips of PNG or JPEG images;
- :mod:`~cuvae.data.download`: atomic, checksummed downloads with retries;
- :mod:`~cuvae.data.protocol`: which test images a run is scored on (the fixed binarised sample) and its name.

May import: :mod:`cuvae.errors`, :mod:`cuvae.atomic`; never a model, the engine or a face.
"""

from __future__ import annotations

from cuvae.data.base import DATASETS, DISPLAY, Dataset, cache_dir
from cuvae.data.mnist import SUBSET_DIR, read_idx

__all__ = ["DATASETS", "DISPLAY", "Dataset", "SUBSET_DIR", "cache_dir", "load_dataset", "read_idx"]


def load_dataset(name: str = "mnist", data_dir=None, train_size: int | None = None,
                 test_size: int | None = None, download: bool = True, progress: bool = True,
                 log=print) -> Dataset:
    """Find (or download) data set ``name`` and return it as a :class:`Dataset`.

    ``mnist`` and ``fashion-mnist`` follow :mod:`cuvae.data.mnist`'s lookup order;
    ``cifar10`` and ``folder:PATH`` are read by :mod:`cuvae.data.images`.
    ``train_size`` / ``test_size`` keep the first N examples. ``log`` gets one-line
    messages; ``progress`` shows a progress bar on stderr while downloading.
    """
    from cuvae.data import images, mnist

    if log is None:
        log = lambda message: None  # noqa: E731
    if images.is_image_dataset(name):
        return images.load_image_dataset(name, data_dir, train_size, test_size, download, progress, log)
    return mnist.load_idx_dataset(name, data_dir, train_size, test_size, download, progress, log)
