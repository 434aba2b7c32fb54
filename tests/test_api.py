"""The Python API: fit on arrays, load, the handle's methods, listeners, and the README's example."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

import cuvae
from cuvae.errors import CuvaeError

from conftest import ROOT


@pytest.fixture(scope="module")
def digits():
    from cuvae.data import load_dataset

    ds = load_dataset(train_size=1000, test_size=200, log=None, download=False)
    return ds.train_x, ds.test_x


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    train, test = digits
    seen = []
    model = cuvae.fit(train, test, latent=3, hidden=(32,), epochs=2, device="cpu", batch_size=50, lr=3e-3,
                      out=tmp_path_factory.mktemp("api") / "run", on_epoch=seen.append, verbose=False)
    return model, seen


def test_fit_learns_and_listeners_get_typed_epoch_events(fitted):
    from cuvae.engine.events import EpochEnded

    model, seen = fitted
    assert [type(e) for e in seen] == [EpochEnded, EpochEnded] and [e.epoch for e in seen] == [1, 2]
    history = model.history
    assert [h["test_loss"] for h in history] == [e.metrics["test_loss"] for e in seen]
    assert history[1]["test_loss"] < history[0]["test_loss"] < 545  # 784 * ln 2 = 543: better than a coin
    assert (model.run_dir / "checkpoint.npz").exists() and model.config.latent == 3


def test_handle_methods_take_and_return_numpy(fitted, digits):
    model, _ = fitted
    _, test = digits
    means, logvars = model.encode(test[:7])
    assert means.shape == logvars.shape == (7, 3) and isinstance(means, np.ndarray)
    probs = model.decode(means)
    assert probs.shape == (7, 784) and 0 <= probs.min() and probs.max() <= 1
    images = test[:5].reshape(5, 28, 28)
    assert model.reconstruct(images).shape == (5, 28, 28)
    a, b = model.sample(4, seed=3), model.sample(4, seed=3)
    assert a.shape == (4, 784) and np.array_equal(a, b) and not np.array_equal(a, model.sample(4, seed=4))
    cold = model.sample(16, temperature=0.0, seed=1)
    assert np.allclose(cold, cold[0])  # T=0: every draw is the prior's mean
    e = model.elbo(test)
    assert e["negative_elbo"] == pytest.approx(e["reconstruction"] + e["kl"]) and 0 <= e["active_units"] <= 3
    assert e["negative_elbo"] == pytest.approx(model.history[-1]["test_loss"], rel=1e-6)  # same seed as training
    nll = model.iwae_nll(test[:50], k=20)
    assert nll <= model.elbo(test[:50])["negative_elbo"] + 1.0  # the IWAE bound is tighter than the ELBO


def test_batching_gives_the_same_numbers(fitted, digits, monkeypatch):
    model, _ = fitted
    _, test = digits
    full = model.encode(test)[0]
    monkeypatch.setattr(cuvae.api, "BATCH", 7)
    assert np.allclose(model.encode(test)[0], full, atol=1e-5)


def test_load_returns_the_same_model(fitted, digits):
    model, _ = fitted
    again = cuvae.load(model.run_dir, device="cpu")
    x = digits[1][:10]
    assert np.array_equal(again.encode(x)[0], model.encode(x)[0])
    assert again.history == model.history


def test_float_arrays_of_any_width(tmp_path):
    x = (np.random.default_rng(0).random((200, 10)) < 0.3).astype(np.float32)
    model = cuvae.fit(x, latent=2, hidden=(8,), epochs=1, device="cpu", batch_size=50, out=tmp_path / "r",
                      verbose=False)
    assert model.sample(3).shape == (3, 10) and model.image_shape == (1, 1, 10)


@pytest.mark.parametrize("call, message", [
    (lambda x, d: cuvae.fit(x * 2.0, out=d), "pass floats in [0, 1]"),
    (lambda x, d: cuvae.fit(x[:, :0], out=d), "values per example"),
    (lambda x, d: cuvae.fit(x, out=d, learning_rate=1), "unknown option(s) learning_rate"),
    (lambda x, d: cuvae.fit(x, np.zeros((3, 5), np.float32), out=d), "this model takes 784"),
    (lambda x, d: cuvae.fit(x[:10], out=d), "larger than the 10 training examples"),
])
def test_bad_input_is_one_clear_error(call, message, tmp_path):
    x = np.random.default_rng(0).random((50, 784)).astype(np.float32)
    with pytest.raises(CuvaeError, match=re.escape(message)):
        call(x, tmp_path / "r")
    assert not (tmp_path / "r" / "checkpoint.npz").exists()


def test_the_readme_example_runs(offline_env, tmp_path):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, flags=re.S)
    assert block, "README.md lost its Python API example"
    code = block.group(1).replace('train_size=5000', 'train_size=1000')  # same code, a smaller slice for CI
    r = subprocess.run([sys.executable, "-c", code], env=offline_env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list((tmp_path / "runs").glob("*/checkpoint.npz"))
