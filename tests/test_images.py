"""CIFAR-10 (official python tarball format) and image folders: loading, validation, safety."""

from __future__ import annotations

import argparse
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cuvae.data import load_dataset
from cuvae.errors import DataError
from cuvae.data.images import dataset_arg, dataset_image_shape, read_cifar_batch
from cuvae.measure.render import to_display

SHARED_ZIP = Path("/work/shared/data/cifar10-jpeg.zip")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CUVAE_DATA_DIR", raising=False)


def batch(n, seed):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"testing", b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def write_tarball(path: Path, batches: dict[str, object]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in batches.items():
            raw = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def tiny_cifar(path: Path) -> tuple[Path, dict]:
    batches = {f"data_batch_{i}": batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = batch(3, 9)
    return write_tarball(path, batches), batches


def test_tarball_loads_channels_first(tmp_path):
    tar, batches = tiny_cifar(tmp_path / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10", data_dir=tar, log=lambda m: None)
    assert ds.image_shape == (3, 32, 32) and ds.train_x.shape == (20, 3072) and ds.test_x.shape == (3, 3072)
    assert ds.train_x.dtype == np.uint8 and ds.train_y.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_x[4:8], batches["data_batch_2"][b"data"])
    np.testing.assert_array_equal(ds.test_y, batches["test_batch"][b"labels"])
    # the folder holding it, and a --train-size subset
    ds2 = load_dataset("cifar10", data_dir=tmp_path, train_size=5, test_size=2, log=lambda m: None)
    assert ds2.train_x.shape == (5, 3072) and "first 5 of 20" in ds2.source


def test_extracted_folder_loads(tmp_path):
    _, batches = tiny_cifar(tmp_path / "c.tar.gz")
    folder = tmp_path / "x" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, obj in batches.items():
        (folder / name).write_bytes(pickle.dumps(obj, protocol=2))
    ds = load_dataset("cifar10", data_dir=tmp_path / "x", log=lambda m: None)
    assert ds.train_x.shape == (20, 3072)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unpickling_refuses_code(tmp_path, capsys):
    bad = batch(4, 1)
    bad[b"extra"] = Evil()
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        read_cifar_batch(pickle.dumps(bad, protocol=2), "data_batch_1")
    assert "pwned" not in capsys.readouterr().out


@pytest.mark.parametrize("mutate,match", [
    (lambda b: b.update({b"data": np.zeros((4, 100), np.uint8)}), r"\(N, 3072\)"),
    (lambda b: b.update({b"labels": [1, 2]}), "4 images but 2 labels"),
    (lambda b: b.update({b"labels": [1, 2, 3, 12]}), "labels must be 0..9"),
    (lambda b: b.pop(b"data"), "lacks the 'data'"),
])
def test_mismatched_batches_name_the_file(tmp_path, mutate, match):
    batches = {f"data_batch_{i}": batch(4, i) for i in range(1, 6)}
    batches["test_batch"] = batch(4, 9)
    mutate(batches["data_batch_3"])
    tar = write_tarball(tmp_path / "c.tar.gz", batches)
    with pytest.raises(DataError, match=match) as exc:
        load_dataset("cifar10", data_dir=tar, log=lambda m: None)
    assert "data_batch_3" in str(exc.value) and str(tar) in str(exc.value)


def test_corrupt_tarball_and_missing_member(tmp_path):
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="not a readable tar.gz") as exc:
        load_dataset("cifar10", data_dir=bad, log=lambda m: None)
    assert str(bad) in str(exc.value)
    partial = write_tarball(tmp_path / "p.tar.gz", {"data_batch_1": batch(2, 1)})
    with pytest.raises(DataError, match="lacks cifar-10-batches-py/data_batch_2"):
        load_dataset("cifar10", data_dir=partial, log=lambda m: None)
    garbage = write_tarball(tmp_path / "g.tar.gz", {f"data_batch_{i}": b"garbage" for i in range(1, 6)} |
                            {"test_batch": b"garbage"})
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=garbage, log=lambda m: None)
    with pytest.raises(DataError, match="holds neither"):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere", log=lambda m: None)


def png(arr: np.ndarray, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write_folder_zip(path: Path, images: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in images.items():
            z.writestr(name, raw)
    return path


def rgb(seed, h=6, w=5):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_folder_zip_and_folder(tmp_path):
    imgs = {"train/cat/a.png": rgb(1), "train/cat/b.png": rgb(2), "train/dog/c.png": rgb(3), "test/dog/d.png": rgb(4)}
    z = write_folder_zip(tmp_path / "imgs.zip", {k: png(v) for k, v in imgs.items()})
    logs = []
    ds = load_dataset(f"folder:{z}", log=logs.append)
    assert ds.image_shape == (3, 6, 5) and ds.train_x.shape == (3, 90) and ds.test_x.shape == (1, 90)
    dog = int(np.flatnonzero(ds.train_y == 1)[0])  # the order is a fixed shuffle
    np.testing.assert_array_equal(ds.train_x[dog].reshape(3, 6, 5), imgs["train/dog/c.png"].transpose(2, 0, 1))
    assert sorted(ds.train_y.tolist()) == [0, 0, 1] and ds.test_y.tolist() == [1]
    assert any("decoding" in m for m in logs)
    # second load: from the .npz cache, no decoding
    logs.clear()
    again = load_dataset(f"folder:{z}", log=logs.append)
    np.testing.assert_array_equal(again.train_x, ds.train_x)
    assert not any("decoding" in m for m in logs)
    assert dataset_image_shape(f"folder:{z}") == (3, 6, 5)
    # the same tree on disk
    root = tmp_path / "tree"
    for name, arr in imgs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png(arr))
    ds3 = load_dataset(f"folder:{root}", log=lambda m: None)
    np.testing.assert_array_equal(ds3.train_x, ds.train_x)


def test_image_folder_errors_name_the_file(tmp_path):
    good = png(rgb(1))
    z = write_folder_zip(tmp_path / "a.zip", {"train/c/a.png": good, "train/c/b.png": b"not a png",
                                              "test/c/x.png": good})
    with pytest.raises(DataError, match=r"cannot decode image .*a\.zip:train/c/b\.png"):
        load_dataset(f"folder:{z}", log=lambda m: None)
    z = write_folder_zip(tmp_path / "b.zip", {"train/c/a.png": good, "train/c/b.png": png(rgb(2, 8, 8)),
                                              "test/c/x.png": good})
    with pytest.raises(DataError, match=r"train/c/b\.png is 8x8.*all images must match"):
        load_dataset(f"folder:{z}", log=lambda m: None)
    z = write_folder_zip(tmp_path / "c.zip", {"train/c/a.png": good})
    with pytest.raises(DataError, match="no test/<class>"):
        load_dataset(f"folder:{z}", log=lambda m: None)
    z = write_folder_zip(tmp_path / "d.zip", {"train/c/a.png": good, "test/zebra/a.png": good})
    with pytest.raises(DataError, match="test classes zebra"):
        load_dataset(f"folder:{z}", log=lambda m: None)
    bad = tmp_path / "e.zip"
    bad.write_bytes(b"PK garbage")
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset(f"folder:{bad}", log=lambda m: None)


def test_dataset_argument_validation(tmp_path):
    assert dataset_arg("CIFAR-10") == "cifar10" and dataset_arg("mnist") == "mnist"
    assert dataset_arg(f"folder:{tmp_path}") == f"folder:{tmp_path.resolve()}"
    with pytest.raises(argparse.ArgumentTypeError, match="no such folder"):
        dataset_arg(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(argparse.ArgumentTypeError, match="unknown dataset"):
        dataset_arg("imagenet")


def test_to_display_shapes():
    flat = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 60)
    colour = to_display(flat, (3, 4, 5))
    assert colour.shape == (2, 4, 5, 3) and colour[1, 2, 3, 1] == flat[1].reshape(3, 4, 5)[1, 2, 3]
    assert to_display(flat[:, :20], (1, 4, 5)).shape == (2, 4, 5)
    assert to_display(flat[:, :20], (4, 5)).shape == (2, 4, 5)


def test_cli_trains_conv_on_a_colour_folder(tmp_path):
    """End to end: --arch conv on a tiny colour folder writes test_bpd and colour pictures."""
    import json

    from cuvae.cli.evaluate import evaluate_run
    from cuvae.cli.train import main

    imgs = {f"{s}/{c}/{i}.png": png(rgb(hash((s, c, i)) % 1000, 8, 8)) for s in ("train", "test") for c in "ab"
            for i in range(6)}
    z = write_folder_zip(tmp_path / "tiny.zip", imgs)
    run = tmp_path / "run"
    rc = main(["--arch", "conv", "--dataset", f"folder:{z}", "--channels", "4", "8", "--latent", "2",
               "--epochs", "2", "--batch-size", "4", "--out", str(run), "--device", "cpu", "--json"])
    assert rc == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(np.isfinite(m["test_bpd"]) and 0 < m["test_bpd"] < 16 for m in lines)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arch_type"] == "conv" and cfg["likelihood"] == "logistic" and cfg["image_shape"] == [3, 8, 8]
    pic = Image.open(run / "samples.png")
    assert pic.mode == "RGB"
    result = evaluate_run(run, iwae_k=3, progress=False, log=lambda m: None)
    assert np.isclose(result["test_bpd"], result["test_loss"] / (192 * np.log(2)))


@pytest.mark.skipif(not SHARED_ZIP.exists(), reason="needs /work/shared/data/cifar10-jpeg.zip")
def test_shared_cifar_zip_shape():
    assert dataset_image_shape(f"folder:{SHARED_ZIP}") == (3, 32, 32)
