"""Colour image datasets: CIFAR-10 (the official python tarball) and image folders.

``load_image_dataset(name, ...)`` returns a :class:`cuvae.data.Dataset` with
channels-first ``image_shape`` (C, H, W) and rows of C*H*W uint8 values:

- ``cifar10``: ``cifar-10-python.tar.gz``. ``data_dir`` may be the tarball, a
  folder holding it, or the extracted ``cifar-10-batches-py`` folder (or its
  parent). Without ``data_dir``: ``$CUVAE_DATA_DIR/cifar10/``, then the cache
  ``~/.cache/cuvae/cifar10/``, then a download into the cache, checked against
  the official MD5. The batches are pickles: they are read with an unpickler
  that allows only the few NumPy names an array needs, so a tampered file
  cannot run code.
- ``folder:PATH``: a folder or a ``.zip`` with ``train/<class>/*.png|jpg`` and
  ``test/<class>/...``, in a fixed shuffled order (seed 0; class folders would
  otherwise make ``--train-size N`` one class); decoded with Pillow once, then cached as a ``.npz`` in
  ``~/.cache/cuvae/folders/`` (keyed by the path, size and modification time).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

from cuvae.errors import DataError

IMAGE_DATASETS = ("cifar10",)
CIFAR_TARBALL = "cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_URLS = ["https://www.cs.toronto.edu/~kriz/"]
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_SHAPE = (3, 32, 32)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SPLITS = ("train", "test")


# ---- names ------------------------------------------------------------------------------------


def is_image_dataset(name) -> bool:
    key = str(name).strip().lower()
    return key.startswith("folder:") or key.replace("-", "").replace("_", "") in IMAGE_DATASETS


def dataset_arg(text: str) -> str:
    """argparse type for --dataset: mnist, fashion-mnist, cifar10 or folder:PATH (made absolute)."""
    from cuvae.data.base import DATASETS

    key = text.strip()
    if key.lower().startswith("folder:"):
        path = Path(key[7:]).expanduser()
        if not key[7:]:
            raise argparse.ArgumentTypeError("folder: needs a path, e.g. folder:data/images or folder:images.zip")
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{text}: no such folder or zip file")
        return f"folder:{path.resolve()}"
    norm = key.lower().replace("_", "-")
    if norm in ("cifar10", "cifar-10"):
        return "cifar10"
    if norm in DATASETS:
        return norm
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose {', '.join((*DATASETS, *IMAGE_DATASETS))} "
                                     "or folder:PATH")


def dataset_image_shape(name) -> tuple[int, int, int]:
    """(C, H, W) of a dataset's images, without loading it (a folder: its first image, or its cache)."""
    key = str(name).strip()
    if key.lower().startswith("folder:"):
        return _folder_shape(Path(key[7:]).expanduser())
    if is_image_dataset(key):
        return CIFAR_SHAPE
    return (1, 28, 28)


# ---- CIFAR-10 ---------------------------------------------------------------------------------


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as r
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct as r
    return r


def _latin1_encode(text, encoding="latin1"):
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing to encode with {encoding!r}")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and NumPy arrays; refuses every other global."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 writes bytes from Python 3
            return _latin1_encode
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)


def read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (data uint8 (N, 3072), labels uint8 (N,)); DataError naming ``where``."""
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any failure is a damaged or foreign file
        raise DataError(f"{where} is not a CIFAR-10 python batch ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where} is not a CIFAR-10 python batch (a {type(obj).__name__}, expected a dict)")
    d = {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{where} lacks the 'data' or 'labels' entry of a CIFAR-10 batch (has {sorted(d)})")
    data, labels = d["data"], np.asarray(d["labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{where}: 'data' must be uint8 of shape (N, 3072), found {getattr(data, 'dtype', type(data))} "
                        f"{shape}")
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{where}: {len(data):,} images but {labels.size:,} labels")
    if labels.size and labels.dtype.kind not in "iu":  # e.g. strings: not comparable with 0..9
        raise DataError(f"{where}: labels must be whole numbers 0..9, found {labels.dtype} values such as "
                        f"{labels[0]!r}; it is not a CIFAR-10 batch")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be 0..9, found {int(labels.min())}..{int(labels.max())}")
    return np.ascontiguousarray(data), labels.astype(np.uint8)


def _cifar_from_tar(path: Path):
    out = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {PurePosixPath(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for stem in CIFAR_TRAIN + CIFAR_TEST:
                m = members.get(stem)
                if m is None:
                    raise DataError(f"{path} lacks {CIFAR_DIR}/{stem}; it is not the CIFAR-10 python tarball")
                out[stem] = read_cifar_batch(tar.extractfile(m).read(), f"{path} ({m.name})")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DataError(f"{path} is not a readable tar.gz ({err or type(err).__name__}); delete it to re-download, "
                        "or point --data-dir at a good copy") from None
    return out


def _cifar_from_dir(folder: Path):
    out = {}
    for stem in CIFAR_TRAIN + CIFAR_TEST:
        f = folder / stem
        try:
            raw = f.read_bytes()
        except OSError as err:
            raise DataError(f"cannot read {f}: {err.strerror or err}") from None
        out[stem] = read_cifar_batch(raw, str(f))
    return out


def _cifar_source(root: Path) -> Path | None:
    """The tarball or extracted folder at or directly under ``root``, if any."""
    for cand in (root, root / CIFAR_TARBALL, root / CIFAR_DIR):
        if cand.is_file() and cand.name.endswith((".tar.gz", ".tgz", ".tar")):
            return cand
        if cand.is_dir() and (cand / "data_batch_1").is_file():
            return cand
    return None


def _download_cifar(folder: Path, progress: bool, log) -> Path:
    """Fetch the tarball into ``folder``: temp file, MD5 check, atomic rename (cuvae.data.download's machinery)."""
    from cuvae.data import download as dl

    if dl.network_down():
        raise dl.DownloadError(f"could not download {CIFAR_TARBALL}: the network was unreachable earlier "
                               f"({dl.network_down()})")
    reasons, silent = [], True
    for base in CIFAR_URLS:
        url = base + CIFAR_TARBALL
        if not progress:
            log(f"downloading {url}")
        try:
            resp = dl._open(url, dl.CONNECT_TIMEOUT_S, log)
        except dl._NoAnswer as err:  # bounded wait; no folder is made for nothing
            reasons.append(f"{url}: {err}")
            continue
        except (dl._Transient, dl._Permanent) as err:
            silent = False
            reasons.append(f"{url}: {err}")
            continue
        silent = False
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{CIFAR_TARBALL}.part-", dir=folder)
        tmp = Path(tmp)
        try:
            try:
                dl._fetch(url, fd, CIFAR_TARBALL, progress, resp=resp)
                os.fsync(fd)
            finally:
                os.close(fd)
                resp.close()
            md5 = hashlib.md5(tmp.read_bytes()).hexdigest()
            if md5 != CIFAR_MD5:
                raise dl._Permanent(f"checksum mismatch (MD5 {md5}, expected {CIFAR_MD5})")
            final = folder / CIFAR_TARBALL
            os.replace(tmp, final)
            return final
        except (dl._Transient, dl._Permanent) as err:
            reasons.append(f"{url}: {err}")
        finally:
            tmp.unlink(missing_ok=True)
    if silent and reasons:
        dl._mark_down(reasons[0])
    raise dl.DownloadError(f"could not download {CIFAR_TARBALL}: " + "; ".join(reasons))


def load_cifar10(data_dir=None, download: bool = True, progress: bool = True, log=print):
    """((train_x, train_y), (test_x, test_y), source path)."""
    from cuvae.data.base import cache_dir
    from cuvae.data.download import DownloadError

    src = None
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        src = _cifar_source(root)
        if src is None:
            raise DataError(f"--data-dir {root} holds neither {CIFAR_TARBALL} nor an extracted {CIFAR_DIR} folder; "
                            "point it at one of them")
    else:
        env = os.environ.get("CUVAE_DATA_DIR", "").strip()
        for cand in ([Path(env).expanduser() / "cifar10", Path(env).expanduser()] if env else []) + [cache_dir("cifar10")]:
            src = _cifar_source(cand)
            if src is not None:
                break
        if src is None:
            if not download:
                raise DataError("CIFAR-10 was not found and downloading is off; pass --data-dir PATH to "
                                f"{CIFAR_TARBALL} or its extracted folder")
            try:
                src = _download_cifar(cache_dir("cifar10"), progress, log)
            except DownloadError as err:
                raise DataError(f"CIFAR-10 is not cached and {err}; pass --data-dir PATH to {CIFAR_TARBALL} "
                                "or check the network") from None
    batches = _cifar_from_tar(src) if src.is_file() else _cifar_from_dir(src)
    train = [batches[s] for s in CIFAR_TRAIN]
    test = batches[CIFAR_TEST[0]]
    return (np.concatenate([d for d, _ in train]), np.concatenate([y for _, y in train])), test, src


# ---- image folders -----------------------------------------------------------------------------


class _Tree:
    """Uniform read access to a folder or a zip: list of (split, class, name) and bytes."""

    def __init__(self, root: Path):
        self.root = root
        self.zip = None
        if root.is_file():
            try:
                self.zip = zipfile.ZipFile(root)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{root} is not a readable zip file ({err}); give a folder or a good zip") from None
            names = [n for n in self.zip.namelist() if not n.endswith("/")]
        elif root.is_dir():
            names = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
        else:
            raise DataError(f"image folder {root} does not exist")
        self.files = {s: [] for s in _SPLITS}
        for n in names:
            parts = PurePosixPath(n).parts
            # allow one wrapping folder inside a zip (e.g. cifar10/train/cat/x.png)
            for off in (0, 1):
                if len(parts) == off + 3 and parts[off] in _SPLITS and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    self.files[parts[off]].append((parts[off + 1], n))
                    break
        for s in _SPLITS:
            self.files[s].sort()
            if not self.files[s]:
                raise DataError(f"{root} has no {s}/<class>/*.png|jpg images; expected train/<class>/... and "
                                "test/<class>/...")

    def read(self, name: str) -> bytes:
        if self.zip is not None:
            return self.zip.read(name)
        return (self.root / name).read_bytes()

    def where(self, name: str) -> str:
        return f"{self.root}:{name}" if self.zip is not None else str(self.root / name)

    def close(self):
        if self.zip is not None:
            self.zip.close()


def _decode(tree: _Tree, name: str, mode: str | None):
    from PIL import Image, UnidentifiedImageError

    from PIL.Image import DecompressionBombError

    try:
        with Image.open(io.BytesIO(tree.read(name))) as im:
            im.load()
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except DecompressionBombError as err:  # far more pixels than any training image: refuse before decoding
        raise DataError(f"image {tree.where(name)} is too large to decode safely ({err}); remove it") from None
    except UnidentifiedImageError:  # its message names a BytesIO object, not the member
        raise DataError(f"cannot decode image {tree.where(name)}: not a PNG or JPEG image Pillow can read; "
                        "remove or replace it") from None
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise DataError(f"cannot decode image {tree.where(name)} ({err}); remove or replace it") from None
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return arr, mode


def _cache_path(root: Path) -> Path:
    from cuvae.data.base import cache_dir

    st = root.stat()
    if root.is_dir():
        stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(root.rglob("*")) if p.is_file())
    else:
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    key = hashlib.sha256(f"v2|{root.resolve()}|{stamp}".encode()).hexdigest()[:16]
    return cache_dir("folders") / f"{root.name}-{key}.npz"


def _folder_shape(root: Path) -> tuple[int, int, int]:
    cache = _cache_path(root) if root.exists() else None
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return tuple(int(v) for v in z["image_shape"])
        except Exception:  # noqa: BLE001 - a bad cache is rebuilt by the loader
            pass
    tree = _Tree(root)
    try:
        arr, _ = _decode(tree, tree.files["train"][0][1], None)
    finally:
        tree.close()
    return tuple(arr.shape)


def _decode_folder(root: Path, log):
    tree = _Tree(root)
    try:
        classes = sorted({c for c, _ in tree.files["train"]})
        index = {c: i for i, c in enumerate(classes)}
        extra = sorted({c for c, _ in tree.files["test"]} - set(classes))
        if extra:
            raise DataError(f"{root}: test classes {', '.join(extra)} have no training images; "
                            "train/ and test/ must hold the same class folders")
        first, mode = _decode(tree, tree.files["train"][0][1], None)
        out = {}
        for split in _SPLITS:
            items = tree.files[split]
            log(f"decoding {len(items):,} {split} images from {root} (cached after the first run)")
            x = np.empty((len(items), first.size), np.uint8)
            y = np.empty(len(items), np.uint8 if len(classes) <= 256 else np.int32)
            for i, (cls, name) in enumerate(items):
                arr, _ = _decode(tree, name, mode)
                if arr.shape != first.shape:
                    raise DataError(f"image {tree.where(name)} is {arr.shape[2]}x{arr.shape[1]} with {arr.shape[0]} "
                                    f"channel(s), but {tree.where(tree.files['train'][0][1])} is {first.shape[2]}x"
                                    f"{first.shape[1]} with {first.shape[0]}; all images must match")
                x[i] = arr.reshape(-1)
                y[i] = index[cls]
            # folders are sorted by class: a fixed shuffle makes --train-size N a mix of classes
            order = np.random.default_rng(0).permutation(len(items))
            out[split] = (x[order], y[order])
    finally:
        tree.close()
    return out, tuple(first.shape), classes


def load_folder(root, log=print):
    """((train_x, train_y), (test_x, test_y), image_shape, classes), decoding once then reading the cache."""
    from cuvae.atomic import atomic_write_bytes

    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; give folder:PATH with a folder or a zip")
    cache = _cache_path(root)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return ((z["train_x"], z["train_y"]), (z["test_x"], z["test_y"]),
                        tuple(int(v) for v in z["image_shape"]), [str(c) for c in z["classes"]])
        except Exception as err:  # noqa: BLE001 - rebuild a damaged cache
            log(f"cache {cache} is damaged ({type(err).__name__}); decoding again")
    splits, shape, classes = _decode_folder(root, log)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, lambda f: np.savez(
            f, train_x=splits["train"][0], train_y=splits["train"][1], test_x=splits["test"][0],
            test_y=splits["test"][1], image_shape=np.array(shape), classes=np.array(classes)))
    except OSError as err:
        log(f"could not write the cache {cache} ({err.strerror or err}); decoding again next time")
    return splits["train"], splits["test"], shape, classes


# ---- the Dataset --------------------------------------------------------------------------------


def load_image_dataset(name, data_dir=None, train_size=None, test_size=None, download=True, progress=True,
                       log=print):
    """``cuvae.data.load_dataset`` for ``cifar10`` and ``folder:PATH``."""
    from cuvae.data.base import Dataset, check_size, count, take

    check_size("--train-size", train_size)
    check_size("--test-size", test_size)
    key = str(name).strip()
    if key.lower().startswith("folder:"):
        root = Path(key[7:]).expanduser()
        (tx, ty), (vx, vy), shape, classes = load_folder(root, log)
        disp, where, canon = f"images ({len(classes)} classes)", root, f"folder:{root}"
    else:
        (tx, ty), (vx, vy), where = load_cifar10(data_dir, download, progress, log)
        shape, disp, canon = CIFAR_SHAPE, "CIFAR-10", "cifar10"
    n_train, n_test = len(tx), len(vx)
    tx, ty = take("--train-size", train_size, tx, ty, f"the training set of {where}")
    vx, vy = take("--test-size", test_size, vx, vy, f"the test set of {where}")
    source = f"{disp} ({count(len(tx), n_train)} train / {count(len(vx), n_test)} test) from {where}"
    log(f"using {source}")
    return Dataset(canon, np.ascontiguousarray(tx), ty, np.ascontiguousarray(vx), vy, shape, source, False,
                   str(Path(where).resolve()))
