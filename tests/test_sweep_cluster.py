"""cuvae-sweep on a real two-node Ray cluster started by the test, whose nodes share no sweep directory:
results come back over Ray (and equal a sweep run without Ray), a killed worker's run is retried from
its shipped checkpoint, a resumed sweep ships checkpoints out, seeds trained together come back as
separate runs, and connecting to nothing fails fast with one line."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cuvae.cli import sweep
from cuvae.data import SUBSET_DIR
from cuvae.engine.checkpoint import load_checkpoint
from conftest import ROOT

RAY = Path(sys.executable).parent / "ray"
# ~0.2 s epochs on a busy 2-core machine: long enough to kill a worker between two of them
TINY = ["--hidden", "32", "--train-size", "3000", "--test-size", "60", "--batch-size", "50"]
VALUE_KEYS = ("test_loss", "test_recon", "test_kl", "iwae_nll", "active_units", "sharpness", "mutual_info")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, log: Path, env) -> subprocess.Popen:
    """``ray start ... --block`` in its own process group (stopped by its id, never with ``ray stop``)."""
    return subprocess.Popen([str(RAY), "start", *args, "--block", "--disable-usage-stats"], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'cuvae[ray]')")
    if not RAY.exists():
        pytest.skip(f"no ray executable beside {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    logs = tmp_path_factory.mktemp("ray-logs")
    scratch = root / "scratch"  # the worker node's own temp folder: task scratch dirs land here
    scratch.mkdir()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    head_args = ["--head", "--port", str(port), "--num-cpus", "0", "--temp-dir", str(root / "head"),
                 "--include-dashboard", "false"]
    worker_args = ["--address", f"127.0.0.1:{port}", "--num-cpus", "2", "--temp-dir", str(root / "worker")]
    worker_env = {**env, "TMPDIR": str(scratch)}
    # both at once: the worker waits for the head's GCS (started again below should it give up first)
    procs = [start(head_args, logs / "head.log", env), start(worker_args, logs / "worker.log", worker_env)]
    try:
        deadline = time.time() + 60
        while True:  # the head answers once its GCS port is open
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or procs[0].poll() is not None:
                    pytest.fail(f"the Ray head did not start: {(logs / 'head.log').read_text()[-2000:]}")
                time.sleep(0.3)
        import ray

        from cuvae.cli.sweep_ray import connect

        connect(f"127.0.0.1:{port}", timeout=40)
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            if procs[-1].poll() is not None and len(procs) == 2:
                procs.append(start(worker_args, logs / "worker2.log", worker_env))
            if time.time() > deadline or (procs[-1].poll() is not None and len(procs) == 3):
                pytest.fail(f"the Ray worker node did not join: {(logs / 'worker.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield {"address": f"127.0.0.1:{port}", "scratch": scratch}
        ray.shutdown()
    finally:
        for p in reversed(procs):
            try:
                stop(p)
            except (OSError, subprocess.SubprocessError) as err:  # go on stopping the others
                print(f"could not stop Ray process group {p.pid}: {err}", file=sys.stderr)
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def ray_sweep(out, epochs, address, latents=(2, 3), **kw):
    return sweep.run_sweep(out, latents=latents, seeds=(1,), train_args=TINY + ["--epochs", str(epochs)], device="cpu",
                           data_dir=SUBSET_DIR, iwae_k=5, ray=address, pictures=False, **kw)


def killer(scratch: Path, pattern: str = "*-z*-s*"):
    """A thread that SIGKILLs the worker process of the first run (named like ``pattern``) that has shipped
    an epoch to the driver; ``killed`` gets (run name, shipped epoch)."""
    killed: list = []
    before = set(scratch.glob("cuvae-ray-*"))  # left by earlier killed attempts

    def watch():
        stop_at = time.time() + 120
        while time.time() < stop_at:
            for shipped in scratch.glob("cuvae-ray-*/shipped.json"):
                runs = list(shipped.parent.glob(pattern))
                if shipped.parent in before or not runs:
                    continue
                try:
                    info = json.loads(shipped.read_text())
                except ValueError:
                    continue  # being written
                os.kill(info["pid"], signal.SIGKILL)
                killed.append((runs[0].name, info["epoch"]))
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, killed


def test_unreachable_cluster_is_one_line_within_the_timeout(tmp_path):
    """Runs before the cluster starts (file order), so no Ray is initialised in this process yet."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'cuvae[ray]')")
    from cuvae.errors import CuvaeError
    from cuvae.cli.sweep_ray import connect

    with pytest.raises(CuvaeError, match="cannot reach a Ray head"):
        connect(f"127.0.0.1:{free_port()}", timeout=3)
    silent = socket.socket()  # accepts TCP connections and never speaks Ray: ray.init would retry for minutes
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": ""}
    try:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "cuvae.sweep", "--out", str(tmp_path / "s"), "--latent", "2",
                               "--ray", f"127.0.0.1:{silent.getsockname()[1]}", "--ray-timeout", "3"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    finally:
        silent.close()
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no Ray cluster answered within 3 s" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and time.time() - t0 < 30
    assert not (tmp_path / "s").exists()


@pytest.mark.slow  # the cluster's start-up and Ray's worker imports: ~30-50 s on 2 busy cores
def test_sweep_over_a_cluster_without_shared_storage(cluster, tmp_path):
    import ray

    out = tmp_path / "sweep"
    thread, killed = killer(cluster["scratch"])
    rows = ray_sweep(out, 3, cluster["address"])
    thread.join()
    assert killed, "no worker shipped an epoch to kill"
    victim, epoch = killed[0]
    by_name = {Path(r["run_dir"]).name: r for r in rows}
    assert by_name[victim]["status"] in ("resumed", "done"), by_name[victim].get("error")
    assert f"retried from the checkpoint of epoch {epoch}" in by_name[victim]["note"]
    # every task ran on the worker node (the head has no CPUs), in a scratch folder removed after it
    head = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) == 0}
    assert all(r["ray_node"] not in head for r in rows)
    left = [p.name for p in cluster["scratch"].glob("cuvae-ray-*")]
    assert len(left) == 1  # only the killed attempt's, which could not clean up
    for r in rows:
        run = Path(r["run_dir"])
        assert run.parent == out and r["epochs"] == 3
        assert load_checkpoint(run).epoch == 3 and len((run / "metrics.jsonl").read_text().splitlines()) == 3
        for name in ("config.json", "result.json", "reconstructions.png", "samples.png", "train.log"):
            assert (run / name).is_file(), name
        assert not list(run.glob(".*"))  # no temporary files left by the driver's writes

    # the same sweep again to 4 epochs: the driver ships each checkpoint out, the nodes resume them
    resumed = ray_sweep(out, 4, cluster["address"])
    assert [r["status"] for r in resumed] == ["resumed", "resumed"], [r.get("error") for r in resumed]
    # ...and end where straight 4-epoch runs end: killed, retried, shipped and resumed, nothing was lost
    straight = ray_sweep(tmp_path / "straight", 4, cluster["address"])
    assert [r["status"] for r in straight] == ["trained", "trained"]
    for a, b in zip(resumed, straight):  # same node, same thread count: bit for bit
        assert [a[k] for k in VALUE_KEYS] == [b[k] for k in VALUE_KEYS], a["run_dir"]
        pa, pb = (load_checkpoint(r["run_dir"]).params for r in (a, b))
        assert np.array_equal(pa, pb)
    # ...and where the same sweep run here without Ray ends (BLAS thread counts differ: to rounding)
    local = sweep.run_sweep(tmp_path / "local", latents=(2, 3), seeds=(1,), train_args=TINY + ["--epochs", "4"],
                            device="cpu", data_dir=SUBSET_DIR, iwae_k=5, pictures=False)
    for a, b in zip(local, straight):
        assert [b[k] for k in VALUE_KEYS] == pytest.approx([a[k] for k in VALUE_KEYS], rel=1e-5, abs=1e-6), a["run_dir"]

    # a run whose worker is lost with no retries left is reported failed, and nothing of it is written
    thread, killed = killer(cluster["scratch"], "vae-z4-s1")
    lost = ray_sweep(out, 3, cluster["address"], latents=(4,), ray_options={"retries": 0})
    thread.join()
    assert killed and lost[0]["status"] == "failed" and "Ray task failed after 0 retries" in lost[0]["error"]
    assert not (out / "vae-z4-s1").exists()
    assert "failed: vae-z4-s1" in (out / "results.md").read_text()

    # an axis over lr, and the seeds of each configuration as one task, trained together (here on the step's
    # NumPy twins): returned as separate runs
    both = sweep.run_sweep(tmp_path / "together", latents=(2,), seeds=(1, 2), axes={"lr": [1e-3, 3e-3]},
                           train_args=TINY + ["--epochs", "1", "--train-size", "500"], device="cpu", data_dir=SUBSET_DIR,
                           iwae_k=5, ray=cluster["address"], pictures=False, seeds_together="yes")
    assert [(Path(r["run_dir"]).name, r["status"]) for r in both] == [
        ("vae-z2-lr_0.001-s1", "trained"), ("vae-z2-lr_0.001-s2", "trained"), ("vae-z2-lr_0.003-s1", "trained"),
        ("vae-z2-lr_0.003-s2", "trained")], [r.get("error") for r in both]
    assert all(f"seeds 1,2 of vae-z2-lr_{r['lr']:g} trained together as 2 models in one step" in r["note"] for r in both)
    for r in both:
        assert load_checkpoint(r["run_dir"]).epoch == 1 and (Path(r["run_dir"]) / "together.json").is_file()
        assert Path(r["run_dir"]).parent == tmp_path / "together" and r["ray_node"] not in head
    assert [s["seeds"] for s in json.loads((tmp_path / "together" / "results.json").read_text())["summary"]] == [[1, 2]] * 2

    # shared storage as the optimisation: the node writes the run directory in place, the driver nothing
    shared = tmp_path / "shared"
    rows = ray_sweep(shared, 1, cluster["address"], latents=(2,), ray_options={"shared_dir": str(shared)})
    assert rows[0]["status"] == "trained" and rows[0]["ray_node"] not in head
    assert load_checkpoint(shared / "vae-z2-s1").epoch == 1 and (shared / "vae-z2-s1" / "result.json").is_file()
