"""Tests for cuvae.data / cuvae.data.download: IDX validation, lookup, downloads, subset.

No network: downloads go to a local http.server on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from cuvae.data import mnist as data
from cuvae.data import download
from cuvae.data import DATASETS, Dataset, load_dataset, read_idx
from cuvae.errors import DataError

SHARED_MNIST = Path("/work/shared/data/mnist")
STEMS = data.FILES


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    if magic is None:
        magic = 0x00000803 if arr.ndim == 3 else 0x00000801
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def gz(payload: bytes) -> bytes:
    return gzip.compress(payload, mtime=0)


def tiny_payloads(n_train=6, n_test=3, seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        out[f"{split}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        out[f"{split}-labels-idx1-ubyte"] = idx_bytes(np.arange(n, dtype=np.uint8) % 10)
    return out


def write_set(folder: Path, payloads: dict[str, bytes], compress=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, payload in payloads.items():
        if compress:
            (folder / f"{stem}.gz").write_bytes(gz(payload))
        else:
            (folder / stem).write_bytes(payload)
    return folder


def sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Logs(list):
    def __call__(self, msg):
        self.append(str(msg))


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real cache, env, system folders or backoff sleeps."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CUVAE_DATA_DIR", raising=False)
    monkeypatch.delenv("CUVAE_MIRRORS", raising=False)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setattr(download, "READ_TIMEOUT_S", 5.0)
    # never the real internet, even when a test forgets to set mirrors
    port = closed_port()
    monkeypatch.setattr(data, "MIRRORS", {k: [f"http://127.0.0.1:{port}/"] for k in DATASETS})


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        mode, body = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "short":  # promise the whole body, send half, hang up
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits = {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tiny(monkeypatch):
    """Tiny MNIST payloads whose hashes replace the real checksums."""
    payloads = tiny_payloads()
    monkeypatch.setitem(data.CHECKSUMS, "mnist", {s: sha(p) for s, p in payloads.items()})
    monkeypatch.setitem(data.CHECKSUMS, "fashion-mnist", {s: sha(p) for s, p in payloads.items()})
    return payloads


def serve(srv, prefix, payloads, mode="ok", transform=gz):
    for stem, payload in payloads.items():
        srv.routes[f"/{prefix}/{stem}.gz"] = (mode, transform(payload))


def assert_no_usable_files(folder: Path):
    if not folder.exists():
        return
    names = [p.name for p in folder.iterdir()]
    assert not [n for n in names if ".part" in n], names
    for stem in STEMS:
        for p in (folder / f"{stem}.gz", folder / stem):
            if p.exists():  # whatever is there must not pass as valid
                with pytest.raises(DataError):
                    read_idx(p)


# --------------------------------------------------------------------------- read_idx


def test_read_idx_good_gz_and_raw(tmp_path):
    imgs = np.arange(2 * 784, dtype=np.uint32).reshape(2, 28, 28) % 256
    (tmp_path / "i.gz").write_bytes(gz(idx_bytes(imgs)))
    (tmp_path / "i").write_bytes(idx_bytes(imgs))
    (tmp_path / "l.gz").write_bytes(gz(idx_bytes(np.array([3, 9], dtype=np.uint8))))
    for name in ("i.gz", "i"):
        x = read_idx(tmp_path / name)
        assert x.dtype == np.uint8 and x.shape == (2, 28, 28) and x.flags.writeable
        np.testing.assert_array_equal(x, imgs)
    assert read_idx(tmp_path / "l.gz").tolist() == [3, 9]
    # a .gz name holding raw IDX (browser auto-decompression) still loads
    (tmp_path / "raw.gz").write_bytes(idx_bytes(imgs))
    assert read_idx(tmp_path / "raw.gz").shape == (2, 28, 28)


_IMG = np.zeros((2, 28, 28), dtype=np.uint8)
_LAB = np.array([1, 2, 3], dtype=np.uint8)
BAD_FILES = {
    "bad_magic": (gz(idx_bytes(_IMG, magic=0x00000804)), "magic number"),
    "bad_dtype": (gz(idx_bytes(_IMG, magic=0x00000D03)), "magic number"),
    "wrong_dims": (gz(idx_bytes(np.zeros((2, 27, 28), dtype=np.uint8))), "27x28"),
    "truncated": (gz(idx_bytes(_IMG)[:-100]), "truncated: expected 1,568 pixel bytes, found 1,468"),
    "extra_bytes": (gz(idx_bytes(_IMG) + b"\0" * 7), "7 extra bytes"),
    "label_range": (gz(idx_bytes(np.array([1, 12, 3], dtype=np.uint8))), "label 12 at index 1"),
    "bad_gzip": (b"\x1f\x8b\x08\x00" + b"garbage" * 10, "damaged gzip"),
    "cut_gzip": (gz(idx_bytes(_IMG))[:-30], "damaged gzip"),
    "empty": (b"", "too short"),
    "header_cut": (idx_bytes(_IMG)[:9], "header"),
    "no_examples": (idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)), "no examples"),
    "not_idx": (b"<!DOCTYPE html><html>404</html>", "neither gzip nor IDX"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_read_idx_rejects(tmp_path, case):
    content, needle = BAD_FILES[case]
    path = tmp_path / f"{case}-file.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        read_idx(path, hint="delete it")
    msg = str(exc.value)
    assert str(path) in msg and needle in msg and msg.endswith("; delete it")
    assert "\n" not in msg


def test_read_idx_kind_and_missing(tmp_path):
    p = tmp_path / "labels.gz"
    p.write_bytes(gz(idx_bytes(_LAB)))
    with pytest.raises(DataError, match="holds labels, expected images"):
        read_idx(p, "images")
    with pytest.raises(DataError, match="cannot read data file .*nope"):
        read_idx(tmp_path / "nope")


def test_count_mismatch(tmp_path):
    payloads = tiny_payloads()
    payloads["train-labels-idx1-ubyte"] = idx_bytes(np.zeros(5, dtype=np.uint8))
    d = write_set(tmp_path / "d", payloads)
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", data_dir=d, log=Logs())
    msg = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "6 images but 5 labels" in msg


# --------------------------------------------------------------------------- local lookup


def test_data_dir_raw_files_and_sizes(tmp_path):
    d = write_set(tmp_path / "d", tiny_payloads(), compress=False)
    logs = Logs()
    ds = load_dataset("mnist", data_dir=d, log=logs)
    assert isinstance(ds, Dataset) and ds.name == "mnist" and not ds.is_subset
    assert ds.train_x.shape == (6, 784) and ds.test_x.shape == (3, 784)
    assert ds.train_y.shape == (6,) and ds.test_y.dtype == np.uint8
    assert ds.train_x.dtype == np.uint8 and ds.train_x.flags.c_contiguous
    assert ds.image_shape == (28, 28)
    assert ds.source == f"MNIST (6 train / 3 test) from {d}" and logs == [f"using {ds.source}"]

    ds = load_dataset("mnist", data_dir=d, train_size=4, test_size=1, log=Logs())
    assert ds.train_x.shape == (4, 784) and ds.test_y.shape == (1,)
    assert ds.train_y.tolist() == [0, 1, 2, 3] and ds.train_x.flags.c_contiguous
    assert "first 4 of 6 train" in ds.source


@pytest.mark.parametrize("kw, needle", [
    ({"train_size": 0}, "--train-size must be at least 1"),
    ({"test_size": -3}, "--test-size must be at least 1"),
    ({"train_size": 2.5}, "whole number"),
    ({"train_size": 7}, "--train-size 7 is larger than the 6 examples"),
    ({"test_size": 4}, "--test-size 4 is larger than the 3 examples"),
])
def test_size_errors(tmp_path, kw, needle):
    d = write_set(tmp_path / "d", tiny_payloads())
    with pytest.raises(DataError, match=needle):
        load_dataset("mnist", data_dir=d, log=Logs(), **kw)


def test_unknown_name_and_data_dir_is_file(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(data_dir=f)


def test_data_dir_missing_no_download(tmp_path):
    with pytest.raises(DataError, match="lacks the MNIST files"):
        load_dataset("mnist", data_dir=tmp_path / "empty", download=False, log=Logs())


def test_env_data_dir_both_layouts(tmp_path, monkeypatch):
    root = tmp_path / "env"
    write_set(root / "fashion-mnist", tiny_payloads(n_train=4))
    write_set(root, tiny_payloads(n_train=5))
    monkeypatch.setenv("CUVAE_DATA_DIR", str(root))
    assert load_dataset("fashion-mnist", log=Logs()).train_x.shape == (4, 784)
    assert load_dataset("mnist", log=Logs()).train_x.shape == (5, 784)


def test_system_dir_and_cache(tmp_path, monkeypatch):
    sysdir = write_set(tmp_path / "usr" / "fashion-mnist", tiny_payloads(n_train=7))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"fashion-mnist": [sysdir]})
    ds = load_dataset("fashion-mnist", log=Logs())
    assert ds.train_x.shape == (7, 784) and str(sysdir) in ds.source
    write_set(tmp_path / "cache" / "cuvae" / "mnist", tiny_payloads(n_train=8))
    assert load_dataset("mnist", log=Logs()).train_x.shape == (8, 784)


def test_corrupt_cache_file_is_named(tmp_path):
    cache = write_set(tmp_path / "cache" / "cuvae" / "mnist", tiny_payloads())
    bad = cache / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-40])
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", log=Logs())
    assert str(bad) in str(exc.value) and "delete it and run again to re-download" in str(exc.value)


# --------------------------------------------------------------------------- downloads


def test_download_good_after_404_mirror(tmp_path, server, tiny, monkeypatch):
    serve(server, "b", tiny)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/a/, {server.url}/b/")
    logs = Logs()
    ds = load_dataset("mnist", progress=False, log=logs)
    cache = tmp_path / "cache" / "cuvae" / "mnist"
    assert ds.train_x.shape == (6, 784) and not ds.is_subset and str(cache) in ds.source
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in STEMS)
    assert any(m.startswith("downloaded ") for m in logs)
    assert f"/a/{STEMS[0]}.gz" in server.hits  # 404 first, then the next mirror
    # second run: found in the cache, no network
    server.hits.clear()
    assert load_dataset("mnist", log=Logs()).train_x.shape == (6, 784)
    assert server.hits == []


def test_download_with_progress_bar_into_data_dir(tmp_path, server, tiny, monkeypatch, capsys):
    serve(server, "m", tiny)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/m/")
    d = tmp_path / "dd"
    ds = load_dataset("fashion-mnist", data_dir=d, progress=True, log=Logs())
    assert ds.name == "fashion-mnist" and ds.test_x.shape == (3, 784)
    assert (d / "train-images-idx3-ubyte.gz").is_file()
    assert "downloading" in capsys.readouterr().err


def test_download_only_missing_files(tmp_path, server, tiny, monkeypatch):
    d = write_set(tmp_path / "d", {s: tiny[s] for s in STEMS[:3]})
    serve(server, "m", tiny)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/m/")
    load_dataset("mnist", data_dir=d, progress=False, log=Logs())
    assert server.hits == [f"/m/{STEMS[3]}.gz"]


def test_uncompressed_payload_from_mirror_stored_raw(tmp_path, server, tiny, monkeypatch):
    serve(server, "m", tiny, transform=lambda p: p)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/m/")
    d = tmp_path / "d"
    load_dataset("mnist", data_dir=d, progress=False, log=Logs())
    assert sorted(p.name for p in d.iterdir()) == sorted(STEMS)


def test_checksum_mismatch_tries_next_mirror(tmp_path, server, tiny, monkeypatch):
    serve(server, "bad", {s: p + b"\0" for s, p in tiny.items()})
    serve(server, "good", tiny)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/bad/,{server.url}/good/")
    ds = load_dataset("mnist", data_dir=tmp_path / "d", progress=False, log=Logs())
    assert ds.train_x.shape == (6, 784)
    assert server.hits[:2] == [f"/bad/{STEMS[0]}.gz", f"/good/{STEMS[0]}.gz"]


@pytest.mark.parametrize("mode", ["corrupt", "short", "404", "cut_gzip"])
def test_download_all_mirrors_fail(tmp_path, server, tiny, monkeypatch, mode):
    if mode == "corrupt":  # valid-looking IDX, wrong bytes
        bad = {s: p[:-1] + bytes([p[-1] ^ 1]) for s, p in tiny.items()}
        serve(server, "a", bad), serve(server, "b", bad)
    elif mode == "short":
        serve(server, "a", tiny, mode="short"), serve(server, "b", tiny, mode="short")
    elif mode == "cut_gzip":
        cut = lambda p: gz(p)[:-20]  # noqa: E731
        serve(server, "a", tiny, transform=cut), serve(server, "b", tiny, transform=cut)
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/a/,{server.url}/b/")
    d = tmp_path / "d"
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", data_dir=d, progress=False, log=Logs())
    msg = str(exc.value)
    assert "could not download train-images-idx3-ubyte.gz" in msg
    assert f"{server.url}/a/" in msg and f"{server.url}/b/" in msg
    expected = {"corrupt": "checksum mismatch", "short": "cut short", "404": "HTTP 404",
                "cut_gzip": "damaged gzip"}[mode]
    assert expected in msg
    if mode == "short":  # transient: retried on each mirror
        assert len(server.hits) == 2 * download.RETRIES
    else:
        assert len(server.hits) == 2
    assert_no_usable_files(d)
    assert not d.exists()  # nothing was downloaded: the folder is not left behind, empty


def test_fashion_download_failure_into_cache(tmp_path, server, tiny, monkeypatch):
    serve(server, "a", {s: p + b"x" for s, p in tiny.items()})
    monkeypatch.setenv("CUVAE_MIRRORS", f"{server.url}/a/")
    with pytest.raises(DataError) as exc:
        load_dataset("fashion-mnist", progress=False, log=Logs())
    msg = str(exc.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    assert "checksum mismatch" in msg
    cache = tmp_path / "cache" / "cuvae" / "fashion-mnist"
    assert_no_usable_files(cache)
    assert not cache.exists()


# --------------------------------------------------------------------------- bundled subset


def test_offline_falls_back_to_subset(monkeypatch):
    monkeypatch.setenv("CUVAE_MIRRORS", f"http://127.0.0.1:{closed_port()}/mnist/")
    logs = Logs()
    ds = load_dataset("mnist", progress=False, log=logs)
    assert ds.is_subset and ds.name == "mnist"
    assert ds.train_x.shape == (10_000, 784) and ds.test_x.shape == (2_000, 784)
    assert ds.train_y.shape == (10_000,) and ds.test_y.shape == (2_000,)
    assert ds.train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert "subset" in ds.source and "10,000 train / 2,000 test" in ds.source
    subset_lines = [m for m in logs if "subset" in m]
    assert len(subset_lines) == 1 and "--data-dir" in subset_lines[0]
    assert "CUVAE_DATA_DIR" in subset_lines[0] and "10,000 train / 2,000 test" in subset_lines[0]
    assert not [m for m in logs if m.startswith("using MNIST (")]


def test_subset_without_download_and_sizes():
    logs = Logs()
    ds = load_dataset("mnist", download=False, train_size=100, test_size=10, log=logs)
    assert ds.is_subset and ds.train_x.shape == (100, 784) and ds.test_x.shape == (10, 784)
    assert len(logs) == 1 and "downloading is off" in logs[0]
    with pytest.raises(DataError, match="larger than the 10,000 examples available in the training set of the bundled"):
        load_dataset("mnist", download=False, train_size=10_001, log=Logs())


def test_fashion_nothing_available():
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", download=False, log=Logs())


def test_subset_files_are_valid():
    files = data._complete(data.SUBSET_DIR)
    assert files is not None and all(p.suffix == ".gz" for p in files.values())
    assert (data.SUBSET_DIR / "README.md").read_text().count("CC BY-SA 3.0") >= 1


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="shared MNIST copy not present")
def test_real_mnist(monkeypatch):
    logs = Logs()
    ds = load_dataset("mnist", data_dir=SHARED_MNIST, log=logs)
    assert ds.train_x.shape == (60_000, 784) and ds.test_x.shape == (10_000, 784)
    assert ds.train_y[0] == 5 and ds.test_y[0] == 7
    assert ds.source == f"MNIST (60,000 train / 10,000 test) from {SHARED_MNIST}"
    # the payload checksums in CHECKSUMS match the real files
    for stem in STEMS[2:]:
        assert download.payload_sha256(SHARED_MNIST / f"{stem}.gz") == data.CHECKSUMS["mnist"][stem]
    # a bare CUVAE_DATA_DIR holding MNIST is not taken for Fashion-MNIST
    monkeypatch.setenv("CUVAE_DATA_DIR", str(SHARED_MNIST))
    with pytest.raises(DataError, match="Fashion-MNIST was not found"):
        load_dataset("fashion-mnist", download=False, log=Logs())
