"""MNIST and Fashion-MNIST: find, download, validate and load them.

Lookup order for ``load_idx_dataset(name, data_dir)``; the first folder holding all
four standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or raw) wins:

1. ``data_dir`` when given. Missing files are downloaded into it; when that
   fails the error is raised (no silent fallback for an explicit folder).
2. ``$CUVAE_DATA_DIR/<name>/``, then ``$CUVAE_DATA_DIR`` itself.
3. Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist/`` (Debian package
   ``dataset-fashion-mnist``).
4. The cache ``$XDG_CACHE_HOME/cuvae/<name>/`` (default ``~/.cache/cuvae/<name>/``).
5. Download into the cache from ``MIRRORS[name]`` (or every base URL in
   ``$CUVAE_MIRRORS``, comma-separated), verifying the SHA-256 of the
   decompressed payload against ``CHECKSUMS``; see :mod:`cuvae.data.download`.
6. MNIST only: the bundled subset ``cuvae/data/datasets/mnist-subset/`` (10,000
   train / 2,000 test), with one log line saying so and how to get the full set.

Local files are validated structurally (magic, dims, exact length, labels
0..9, matching counts), not hashed, so hand-made files work. A corrupt file
(in the cache or anywhere else) is NOT silently replaced: loading stops with a
:class:`DataError` naming the file and saying to delete it (the next run then
re-downloads it). Downloads are atomic, so only a damaged disk or a file copied
in by hand can be corrupt.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from cuvae.data import download as _dl
from cuvae.data.base import DATASETS, DISPLAY, Dataset, cache_dir, check_size, count, take
from cuvae.errors import DataError


FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# SHA-256 of the decompressed payloads; checked on download only.
CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {  # from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
SUBSET_DIR = Path(__file__).resolve().parent / "datasets" / "mnist-subset"

IMAGE_SHAPE = (28, 28)
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
_REDOWNLOAD = "delete it and run again to re-download"
_FULL_SET_HOWTO = ("get the full set with --data-dir DIR (a folder holding the four IDX files), "
                   "by setting CUVAE_DATA_DIR, or by running once with network access")


# --------------------------------------------------------------------------- IDX


def read_idx(path, kind: str | None = None, hint: str | None = None) -> np.ndarray:
    """Parse one IDX file (gzip or raw, told apart by content) and validate it.

    Accepts unsigned-byte images (magic 0x00000803, N x 28 x 28), returned as
    uint8 (N, 28, 28), and labels (magic 0x00000801, values 0..9), returned as
    uint8 (N,). ``kind`` ("images"/"labels") demands one of the two; ``hint``
    is appended to error messages. Every problem raises :class:`DataError`
    naming the file.
    """
    path = Path(path)

    def bad(problem: str) -> DataError:
        return DataError(f"data file {path} {problem}" + (f"; {hint}" if hint else ""))

    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read data file {path}: {err.strerror or err}") from None
    if raw[:2] == _dl.GZIP_MAGIC:
        try:
            data = gzip.decompress(raw)
        except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as err:
            raise bad(f"is a damaged gzip file ({err or type(err).__name__})") from None
    else:
        data = raw
    del raw

    if len(data) < 4:
        raise bad(f"is too short to be an IDX file ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (_IMAGES_MAGIC, _LABELS_MAGIC):
        what = ("is neither gzip nor IDX data" if path.suffix == ".gz"
                else "is not an IDX file of unsigned bytes")
        raise bad(f"{what}: magic number 0x{magic:08X}, expected 0x{_IMAGES_MAGIC:08X} "
                  f"(images) or 0x{_LABELS_MAGIC:08X} (labels)")
    is_images = magic == _IMAGES_MAGIC
    if kind is not None and kind != ("images" if is_images else "labels"):
        raise bad(f"holds {'images' if is_images else 'labels'}, expected {kind}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise bad(f"is truncated: the header needs {header} bytes, found {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if dims[0] < 1:
        raise bad("holds no examples")
    if is_images and dims[1:] != IMAGE_SHAPE:
        raise bad(f"holds images of {'x'.join(map(str, dims[1:]))} pixels, expected 28x28")
    unit = "pixel" if is_images else "label"
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(data) - header
    if found < expected:
        raise bad(f"is truncated: expected {expected:,} {unit} bytes, found {found:,}")
    if found > expected:
        raise bad(f"has {found - expected:,} extra bytes after the expected {expected:,} {unit} bytes")
    arr = np.frombuffer(data, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()
    if not is_images and arr.max() > 9:
        i = int(np.argmax(arr > 9))
        raise bad(f"has label {int(arr[i])} at index {i:,}; labels must be 0..9")
    return arr


def _find_files(folder: Path) -> dict[str, Path | None]:
    """Map each standard file stem to its path in ``folder`` (``.gz`` preferred) or None."""
    found = {}
    for stem in FILES:
        found[stem] = next((p for p in (folder / f"{stem}.gz", folder / stem) if p.is_file()), None)
    return found


def _complete(folder: Path | None) -> dict[str, Path] | None:
    if folder is None or not folder.is_dir():
        return None
    files = _find_files(folder)
    return files if all(files.values()) else None


def _load_split(files, split: str, hint: str) -> tuple[np.ndarray, np.ndarray]:
    img_path, lab_path = files[f"{split}-images-idx3-ubyte"], files[f"{split}-labels-idx1-ubyte"]
    x = read_idx(img_path, "images", hint)
    y = read_idx(lab_path, "labels", hint)
    if len(x) != len(y):
        raise DataError(f"data files {img_path} and {lab_path} do not match: {len(x):,} images "
                        f"but {len(y):,} labels; {hint}")
    return x.reshape(len(x), -1), y


# --------------------------------------------------------------------------- lookup


def mirrors(name: str) -> list[str]:
    """Base URLs to try: ``$CUVAE_MIRRORS`` (comma-separated) if set, else ``MIRRORS[name]``."""
    env = os.environ.get("CUVAE_MIRRORS", "").strip()
    if env:
        return [u.strip() for u in env.split(",") if u.strip()]
    return list(MIRRORS[name])


def _local_candidates(name: str) -> list[tuple[Path, str, bool]]:
    """(folder, hint for errors, shared?) in lookup order, after data_dir and before download.

    A *shared* folder (bare ``$CUVAE_DATA_DIR``) may hold another dataset; it is
    skipped when its train labels are exactly those of another known dataset.
    """
    out = []
    env = os.environ.get("CUVAE_DATA_DIR", "").strip()
    if env:
        root = Path(env).expanduser()
        fix = "replace it with a good copy or unset CUVAE_DATA_DIR"
        out += [(root / name, fix, False), (root, fix, True)]
    for d in SYSTEM_DIRS.get(name, []):
        out.append((d, "reinstall it with: apt-get install --reinstall dataset-fashion-mnist", False))
    out.append((cache_dir(name), _REDOWNLOAD, False))
    return out


def _is_other_dataset(name: str, files: dict[str, Path]) -> bool:
    try:
        got = _dl.payload_sha256(files["train-labels-idx1-ubyte"])
    except Exception:  # noqa: BLE001 - a damaged file is reported by read_idx later
        return False
    return any(got == CHECKSUMS[other]["train-labels-idx1-ubyte"] for other in DATASETS if other != name)


def _download_missing(name: str, folder: Path, progress: bool, log) -> dict[str, Path]:
    files = _find_files(folder) if folder.is_dir() else dict.fromkeys(FILES)
    bases = mirrors(name)
    for stem, path in files.items():
        if path is None:
            files[stem] = _dl.download_file(f"{stem}.gz", bases, folder, CHECKSUMS[name][stem],
                                            progress=progress, log=log)
    return files


def load_idx_dataset(name: str = "mnist", data_dir=None, train_size: int | None = None,
                 test_size: int | None = None, download: bool = True, progress: bool = True,
                 log=print) -> Dataset:
    """Find (or download) ``name`` and return it as a :class:`Dataset`; see the module doc.

    ``train_size`` / ``test_size`` keep the first N examples. ``log`` gets one-line
    messages; ``progress`` shows a rich progress bar on stderr while downloading
    (with ``progress=False`` downloads are reported through ``log`` instead).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    check_size("--train-size", train_size)
    check_size("--test-size", test_size)
    disp = DISPLAY[key]

    files = hint = None
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise DataError(f"--data-dir {folder} is not a folder")
        if key == "mnist" and folder.is_dir() and folder.resolve() == SUBSET_DIR:  # e.g. a run that used it, resumed
            return _load_subset(train_size, test_size, None, log)
        hint = _REDOWNLOAD if download else "replace it with a good copy"
        files = _complete(folder)
        if files is None:
            if not download:
                missing = [s for s, p in _find_files(folder).items() if p is None] \
                    if folder.is_dir() else list(FILES)
                raise DataError(f"{folder} lacks the {disp} files {', '.join(missing)} (.gz or "
                                "raw) and downloading is off; copy them there or allow the download")
            try:
                files = _download_missing(key, folder, progress, log)
            except _dl.DownloadError as err:
                raise DataError(f"{disp} is not in {folder} and {err}; copy the four IDX files "
                                "there or check the network") from None
    else:
        for cand, cand_hint, shared in _local_candidates(key):
            files = _complete(cand)
            if files is not None and shared and _is_other_dataset(key, files):
                files = None
            if files is not None:
                folder, hint = cand, cand_hint
                break

    reason = "downloading is off"
    short = reason
    if files is None and download:
        folder, hint = cache_dir(key), _REDOWNLOAD
        try:
            files = _download_missing(key, folder, progress, log)
        except _dl.DownloadError as err:
            reason, short = f"download failed: {err}", f"the download failed: {err.short}"

    if files is None:
        if key == "mnist":
            return _load_subset(train_size, test_size, short, log)
        raise DataError(
            f"Fashion-MNIST was not found locally and could not be downloaded ({reason}); install "
            "it with 'apt-get install dataset-fashion-mnist', pass --data-dir DIR (a folder holding "
            "the four IDX files), set CUVAE_DATA_DIR, or run with network access")

    train_x, train_y, test_x, test_y, counts, _ = _read_sliced(files, hint, f"{disp} in {folder}", train_size,
                                                               test_size)
    source = f"{disp} ({counts}) from {folder}"
    log(f"using {source}")
    return Dataset(key, train_x, train_y, test_x, test_y, IMAGE_SHAPE, source, False, str(Path(folder).resolve()))


def _read_sliced(files, hint: str, where: str, train_size, test_size):
    """Both splits of a folder cut to the sizes asked for, an "A train / B test" text and the full sizes."""
    train_x, train_y = _load_split(files, "train", hint)
    test_x, test_y = _load_split(files, "t10k", hint)
    n_train, n_test = len(train_x), len(test_x)
    train_x, train_y = take("--train-size", train_size, train_x, train_y, f"the training set of {where}")
    test_x, test_y = take("--test-size", test_size, test_x, test_y, f"the test set of {where}")
    counts = f"{count(len(train_x), n_train)} train / {count(len(test_x), n_test)} test"
    return train_x, train_y, test_x, test_y, counts, (n_train, n_test)


def _load_subset(train_size, test_size, reason: str | None, log) -> Dataset:
    """The bundled subset; ``reason`` says why the full set is not used (None: it was asked for)."""
    files = _complete(SUBSET_DIR)
    hint = "the cuvae installation is damaged; reinstall it"
    if files is None:
        raise DataError(f"MNIST was not found locally, could not be downloaded ({reason}), and the "
                        f"bundled subset is missing from {SUBSET_DIR}; {_FULL_SET_HOWTO}")
    where = f"the bundled MNIST subset ({_FULL_SET_HOWTO})"
    train_x, train_y, test_x, test_y, counts, _ = _read_sliced(files, hint, where, train_size, test_size)
    source = f"MNIST bundled subset ({counts}) from {SUBSET_DIR}"
    if reason is None:
        log(f"using the bundled MNIST subset ({counts})")
    else:
        log(f"no local MNIST and {reason}: using the bundled subset ({counts}); {_FULL_SET_HOWTO}")
    return Dataset("mnist", train_x, train_y, test_x, test_y, IMAGE_SHAPE, source, True, str(SUBSET_DIR))
