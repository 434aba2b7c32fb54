"""The trainer's handling of the fused GPU step, on the CPU: a fake "gpu" backend on NumPy and the real
DeviceStep on its NumPy twins (engine "twin"), made to fail where a real device can.

- a failure building the step, starting its first epoch, or in its first step falls back to the plain
  step from the weights as they were (all three end with the same weights), whatever the message;
- every way out of ``run()`` (done, stop, Ctrl-C) synchronises and closes the step, once, after its last step.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import SUBSET
from cuvae.backends import gpu_step
from cuvae.backends.backend import Backend
from cuvae.data import load_dataset
from cuvae.engine.config import TrainConfig
from cuvae.engine.events import Notice, StepMetrics
from cuvae.engine.trainer import Trainer, one_line
from cuvae.nn.ops import NumpyOps


class FakeCupy:
    """NumPy under CuPy's name, with the two calls the backend makes that NumPy lacks."""

    def __init__(self, log):
        self.cuda = SimpleNamespace(Device=lambda: SimpleNamespace(synchronize=lambda: log.append("device sync")))

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)


def fake_device_step(log, fail_at=None, message=""):
    class FakeDeviceStep(gpu_step.DeviceStep):
        def __init__(self, *args, **kw):
            if fail_at == "init":
                raise RuntimeError(message)
            super().__init__(*args, **{**kw, "engine": "twin"})

        def start_epoch(self, *args):
            if fail_at == "start_epoch":
                raise RuntimeError(message)
            super().start_epoch(*args)

        def step(self, rows):
            super().step(rows)  # writes the weights, then fails: the trainer must undo it
            if fail_at == "step":
                raise RuntimeError(message)
            log.append("step")

        def synchronize(self):
            log.append("sync")

        def close(self):
            if "close" not in log:
                self.synchronize()
            log.append("close")

    return FakeDeviceStep


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("mnist", data_dir=SUBSET, train_size=120, test_size=40, progress=False, log=lambda m: None)


def make_trainer(dataset, tmp_path, monkeypatch, log, fail_at=None, message="", epochs=2, listeners=()):
    monkeypatch.setattr(gpu_step, "DeviceStep", fake_device_step(log, fail_at, message))
    backend = Backend("gpu", FakeCupy(log), NumpyOps(), "fake GPU (NumPy)")
    cfg = TrainConfig.from_recipe("chapter", epochs=epochs, batch_size=40, hidden=(16,), latent=2)
    notices = []
    listen = [lambda e: notices.append(e.message) if isinstance(e, Notice) else None, *listeners]
    return Trainer(cfg, backend, dataset, tmp_path, listeners=listen, report_every=0.0), notices


def test_one_line_never_fails_on_an_empty_message():
    assert one_line(RuntimeError("")) == "RuntimeError"
    assert one_line(OSError("\n\n  first\nsecond")) == "OSError: first"


@pytest.mark.parametrize("fail_at", ["init", "start_epoch", "step"])
@pytest.mark.parametrize("message", ["", "nvrtc: compile failed\nlog..."])
def test_first_use_failure_falls_back_from_the_same_weights(dataset, tmp_path, monkeypatch, fail_at, message):
    log = []
    trainer, notices = make_trainer(dataset, tmp_path / "run", monkeypatch, log, fail_at, message)
    result = trainer.run()
    assert result.reason == "completed" and trainer.epoch == 2
    fell_back = [n for n in notices if n.startswith("fused GPU step unavailable")]
    assert fell_back == [f"fused GPU step unavailable ({one_line(RuntimeError(message))}); using the plain CuPy step"]
    assert "step" not in log and trainer._device_step is None
    # the reference: no fused step at all (the construction failed) -- every fallback ends with its weights
    ref, _ = make_trainer(dataset, tmp_path / "ref", monkeypatch, [], "init", "x")
    ref.run()
    np.testing.assert_array_equal(trainer.checkpoint().params, ref.checkpoint().params)
    assert trainer.adam.step_count == ref.adam.step_count == 6


def test_a_failure_after_the_first_step_is_not_hidden(dataset, tmp_path, monkeypatch):
    log = []
    trainer, _ = make_trainer(dataset, tmp_path, monkeypatch, log)
    dev = trainer._device_step
    real_step = type(dev).step
    calls = []

    def step(self, rows):
        calls.append(rows)
        if len(calls) == 2:
            raise RuntimeError("illegal memory access")
        real_step(self, rows)

    monkeypatch.setattr(type(dev), "step", step)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        trainer.run()
    assert log[-3:] == ["sync", "close", "device sync"] and log.count("close") == 1


def test_completed_run_closes_the_device_step_after_its_last_step(dataset, tmp_path, monkeypatch):
    log = []
    trainer, notices = make_trainer(dataset, tmp_path, monkeypatch, log)
    assert trainer.run().reason == "completed"
    assert log.count("step") == 6 and log.count("close") == 1
    last = len(log) - 1 - log[::-1].index("step")
    assert log.index("close") > last and "sync" in log[last:log.index("close")]
    assert trainer._device_step is None and not any("unavailable" in n for n in notices)


def test_stop_closes_the_device_step(dataset, tmp_path, monkeypatch):
    log = []
    holder = {}

    def stop_on_first_metrics(event):
        if isinstance(event, StepMetrics):
            holder["t"].stop()

    trainer, _ = make_trainer(dataset, tmp_path, monkeypatch, log, listeners=[stop_on_first_metrics])
    holder["t"] = trainer
    assert trainer.run().reason == "stopped"
    assert log.count("step") == 1 and log[-3:] == ["sync", "close", "device sync"] and log.count("close") == 1
    assert log.index("sync") < log.index("close")


def test_ctrl_c_closes_the_device_step(dataset, tmp_path, monkeypatch):
    log = []

    def ctrl_c(event):
        if isinstance(event, StepMetrics):
            raise KeyboardInterrupt

    trainer, _ = make_trainer(dataset, tmp_path, monkeypatch, log, listeners=[ctrl_c])
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert log.count("close") == 1 and log.index("sync") < log.index("close")
    trainer.close()  # idempotent
    assert log.count("close") == 1


@pytest.mark.parametrize("fail", [False, True], ids=["fused", "falls-back"])
def test_conv_model_trains_on_the_conv_device_step(dataset, tmp_path, monkeypatch, fail):
    """--arch conv on a GPU takes ConvDeviceStep (here on its twins); a failure to build it falls back in one line."""
    from cuvae.backends import gpu_conv_step

    made = []

    class TwinConvStep(gpu_conv_step.ConvDeviceStep):
        def __init__(self, *args, **kw):
            if fail:
                raise RuntimeError("no NVRTC")
            super().__init__(*args, **{**kw, "engine": "twin"})
            made.append(self)

    monkeypatch.setattr(gpu_conv_step, "ConvDeviceStep", TwinConvStep)
    backend = Backend("gpu", FakeCupy([]), NumpyOps(), "fake GPU (NumPy)")
    cfg = TrainConfig.from_recipe("chapter", epochs=1, batch_size=40, arch_type="conv", channels=(2, 4), latent=2)
    notices = []
    trainer = Trainer(cfg, backend, dataset, tmp_path, listeners=[lambda e: notices.append(e.message)
                                                                   if isinstance(e, Notice) else None])
    p0 = trainer.params.copy()
    assert trainer.run().reason == "completed" and trainer.adam.step_count == 3
    assert not np.allclose(trainer.params, p0) and np.isfinite(trainer.params).all()
    fell_back = [n for n in notices if "unavailable" in n]
    assert len(made) == (0 if fail else 1)
    assert fell_back == (["fused GPU step unavailable (RuntimeError: no NVRTC); using the plain CuPy step"] if fail else [])
