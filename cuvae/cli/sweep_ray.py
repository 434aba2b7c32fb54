"""cuvae-sweep's Ray side: one Ray task per job (a run, or the seeds of one configuration trained
together), on a cluster whose nodes need share no disk.

Without shared storage, a task never sees the sweep directory (it is given only the run's
name): it trains in a scratch folder on its node, seeded with the files the driver ships
(an unfinished run's checkpoint, metrics and config), and returns the run's files
(metrics, config, result, pictures, final checkpoint; at most ``max_mb`` each run) to the
driver, which writes them into ``SWEEP_DIR/<run>/`` one file at a time, atomically, the
checkpoint last. After each epoch the task also ships its checkpoint to a small actor on
the driver's node, so a task whose worker or node is lost is retried (Ray's task retries)
from its last shipped epoch; a run whose retries are spent is reported failed and nothing
of it is written. With ``shared_dir`` (the sweep directory as the nodes see it) tasks
write in place instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

from cuvae.errors import CuvaeError

CONNECT_TIMEOUT = 30.0
MAX_MB = 512
SHIPPED = "shipped.json"  # in the task's scratch folder: the last epoch the driver's inbox holds


# ---- connecting -----------------------------------------------------------------------------------
def connect(address: str, timeout: float = CONNECT_TIMEOUT):
    """``default``: ``ray.init()`` as Ray means it (the cluster in RAY_ADDRESS, else a new local instance);
    ``local``: a new private instance; ``auto`` or ``HOST:PORT``: a running cluster, within ``timeout`` s."""
    try:
        import ray
    except ImportError:
        raise CuvaeError("--ray needs Ray: pip install 'cuvae[ray]' (or pip install ray)") from None
    if ray.is_initialized():
        return ray
    kwargs = dict(include_dashboard=False, log_to_driver=False)
    if address == "local" or (address == "default" and not os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private instance: no token to check
        # started here, in the main thread (Ray installs its signal handlers there); nothing to wait for
        ray.init(**({"address": "local"} if address == "local" else {}), **kwargs)
        return ray
    if address not in ("default", "auto", "local"):
        import socket

        host, _, port = address.removeprefix("ray://").rpartition(":")
        try:
            socket.create_connection((host or address, int(port or 6379)), timeout=min(timeout, 10)).close()
        except (OSError, ValueError) as err:
            raise CuvaeError(f"--ray {address}: cannot reach a Ray head there ({err}); start one with "
                             f"'ray start --head' and pass the address it prints, or use --ray for a local instance") from None
    target = {} if address == "default" else {"address": address}
    outcome: dict = {}

    def init():  # in a thread: an unreachable explicit address makes ray.init retry for minutes
        try:
            ray.init(**target, **kwargs)
            outcome["ok"] = True
        except Exception as err:  # noqa: BLE001 - reported below
            outcome["error"] = err

    t = threading.Thread(target=init, daemon=True)
    t.start()
    t.join(timeout)
    if "ok" in outcome:
        return ray
    if "error" in outcome:
        first = (str(outcome["error"]).strip().splitlines() or [type(outcome["error"]).__name__])[0][:200]
        raise CuvaeError(f"--ray {address or 'default'}: {first}; start a cluster with 'ray start --head' "
                         f"(then --ray auto), or pass --ray alone for a local instance")
    raise CuvaeError(f"--ray {address}: no Ray cluster answered within {timeout:g} s; check the address "
                     f"('ray status' on the head shows it) or raise --ray-timeout")


# ---- files both ways ---------------------------------------------------------------------------------
def gather(run_dir: Path, max_bytes: int) -> tuple[dict[str, bytes], list[str]]:
    """The run directory's files as {name: bytes}, smallest first, within ``max_bytes`` in all;
    returns them and the names left out. Temporary files of interrupted writers are never taken."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}, []
    entries = sorted((p.stat().st_size, p.name) for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    files, left, total = {}, [], 0
    for size, name in entries:
        if total + size > max_bytes:
            left.append(name)
            continue
        files[name] = (run_dir / name).read_bytes()
        total += size
    return files, left


def write_run(run_dir: Path, files: dict[str, bytes]) -> None:
    """Each file atomically, checkpoint last, so a driver killed half-way leaves a run that resumes
    (metrics past the checkpoint are trimmed, a result of another epoch is recomputed)."""
    from cuvae.atomic import atomic_write_bytes
    from cuvae.engine.checkpoint import CHECKPOINT

    run_dir.mkdir(parents=True, exist_ok=True)
    for name in sorted(files, key=lambda n: n == CHECKPOINT):
        if "/" in name or name.startswith("."):
            continue  # only plain names of the run's own files
        target = run_dir / name
        if target.is_file() and target.stat().st_size == len(files[name]) and target.read_bytes() == files[name]:
            continue  # unchanged (a skipped run): leave it be
        atomic_write_bytes(target, lambda f, data=files[name]: f.write(data))


# ---- the task (runs on a node) -----------------------------------------------------------------------
class _Shipper:
    """After each epoch, sends the run's checkpoint, config and metrics to the driver's inbox."""

    def __init__(self, run_dir: Path, inbox, name: str, max_bytes: int):
        self.run_dir, self.inbox, self.name, self.max_bytes = run_dir, inbox, name, max_bytes

    def __call__(self, event) -> None:
        import ray

        from cuvae.engine.checkpoint import CHECKPOINT
        from cuvae.engine.events import EpochEnded

        if not isinstance(event, EpochEnded):
            return
        files, left = gather(self.run_dir, self.max_bytes)
        if CHECKPOINT in left:
            return  # too large to ship: a retry starts from what the driver shipped at the start
        ray.get(self.inbox.put.remote(self.name, event.epoch, files))
        (self.run_dir.parent / SHIPPED).write_text(json.dumps({"epoch": event.epoch, "pid": os.getpid()}))


def run_task(job: list, files: dict[str, dict], inbox, max_bytes: int, run_job) -> dict:
    """One job's runs in a scratch folder of this node (``run_job`` trains and scores them: the sweep hands
    it in, so this module need not import the sweep); ``files``: each run's, by name. Returns
    {"rows", "files" (by name), "left_out" (by name), "node"}."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    if inbox is None:  # shared storage: in place
        return {"rows": run_job(job), "files": {}, "left_out": {}, "node": node}
    scratch = Path(tempfile.mkdtemp(prefix="cuvae-ray-"))
    try:
        local, retried = [], {}
        for spec in job:
            epoch, newer = ray.get(inbox.latest.remote(spec.name))
            if newer:
                retried[spec.name] = epoch  # an earlier attempt of this task shipped it before its worker was lost
            write_run(scratch / spec.name, newer or files.get(spec.name, {}))
            local.append(replace(spec, run_dir=str(scratch / spec.name)))
        rows = run_job(local, lambda s: [_Shipper(Path(s.run_dir), inbox, s.name, max_bytes)])
        out, left = {}, {}
        for spec, row in zip(job, rows):
            out[spec.name], left[spec.name] = gather(scratch / spec.name, max_bytes)
            if spec.name in retried:
                row["note"] = (f"retried from the checkpoint of epoch {retried[spec.name]} shipped by a lost attempt; "
                               + row.get("note", "")).rstrip("; ")
        return {"rows": rows, "files": out, "left_out": left, "node": node}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Inbox:
    """The newest shipped files of each run (held on the driver's node, so a lost worker node keeps nothing)."""

    def __init__(self):
        self.runs: dict = {}

    def put(self, name: str, epoch: int, files: dict) -> None:
        if epoch >= self.runs.get(name, (0, None))[0]:
            self.runs[name] = (epoch, files)

    def latest(self, name: str):
        return self.runs.get(name, (0, None))


# ---- the driver --------------------------------------------------------------------------------------
def run_ray(jobs: list, address: str, on_done, *, run_job, blank, cpus: float = 1, gpus: float = 0, shared_dir=None,
            max_mb: float = MAX_MB, retries: int = 3, timeout: float = CONNECT_TIMEOUT, log=None) -> list[dict]:
    """Run the jobs (lists of specs) as Ray tasks; the driver writes what each returns into its run
    directories. Returns the rows in the jobs' order.

    ``run_job(specs, listeners_for)`` trains and scores a job's runs, ``blank(spec)`` is a failed run's row."""
    ray = connect(address, timeout)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    max_bytes = int(max_mb * 2**20)
    log = log or (lambda *_: None)
    inbox = None
    if shared_dir is None:
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        inbox = ray.remote(num_cpus=0)(_Inbox).options(scheduling_strategy=here).remote()
    task = ray.remote(run_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=retries, retry_exceptions=False)
    pending = {}
    for i, job in enumerate(jobs):
        files, remote = {}, []
        for spec in job:
            if shared_dir is None:
                files[spec.name], left = gather(Path(spec.run_dir), max_bytes)
                if left:
                    log(f"{spec.name}: {', '.join(left)} over --ray-max-mb {max_mb:g}, not shipped to the node")
                remote.append(replace(spec, run_dir=spec.name))  # the node learns the run's name, never the driver's path
            else:
                remote.append(replace(spec, run_dir=str(Path(shared_dir) / spec.name)))
        pending[task.remote(remote, files, inbox, max_bytes, run_job)] = i
    done_rows: list = [None] * len(jobs)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            job = jobs[i]
            try:
                result = ray.get(done[0])
            except Exception as err:  # noqa: BLE001 - worker or node lost, retries spent: nothing is written
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                rows = [{**blank(spec), "error": f"Ray task failed after {retries} retries: {first}"} for spec in job]
            else:
                rows = []
                for spec, row in zip(job, result["rows"]):
                    row = {**row, "run_dir": spec.run_dir, "ray_node": result["node"]}
                    if result["files"].get(spec.name):
                        write_run(Path(spec.run_dir), result["files"][spec.name])
                    if result["left_out"].get(spec.name):
                        row["note"] = (row.get("note", "") + f"; not returned (over --ray-max-mb {max_mb:g}): "
                                       f"{', '.join(result['left_out'][spec.name])}").lstrip("; ")
                    rows.append(row)
            done_rows[i] = rows
            for row in rows:
                on_done(row)
    finally:
        if inbox is not None:
            ray.kill(inbox)
    return [row for rows in done_rows for row in rows]
