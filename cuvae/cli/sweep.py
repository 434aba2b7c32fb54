"""``cuvae-sweep``: train and evaluate one model per (latent size, seed), side by side, and compare them.

    cuvae-sweep --latent 2 5 8 20 --seeds 1 2 --epochs 10 --recipe chapter --out sweeps/chapter --jobs 2
    cuvae-sweep --latent 2 8 --lr 1e-3 3e-4 --activation relu tanh --out sweeps/lr   # any option is an axis

Every training option of ``cuvae-train`` passes through, and any of them given several values is an
axis: the sweep runs the cartesian product. Each run lives in
``SWEEP_DIR/<model>-z<latent>-s<seed>/``, with the other varied axes between latent and seed
(``vae-z8-lr_0.0003-activation_tanh-s1``); an ordinary run directory: ``cuvae-evaluate``
and ``cuvae-show`` read it. Started again, a sweep skips runs whose checkpoint holds
``--epochs`` epochs (and reuses their saved evaluation, ``result.json``) and resumes
unfinished ones from their last checkpoint. Runs go one at a time, in ``--jobs N``
worker processes, one process per GPU (``--gpus 0 1``), or as Ray tasks (``--ray``).
A failed run is reported and the others go on.

This module imports neither NumPy nor CuPy at the top, so a spawned worker can set its
thread counts and CUDA_VISIBLE_DEVICES before they load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
from pathlib import Path

from cuvae.engine.options import MODEL_FLAGS, TRAIN_FLAGS, nonneg_int, positive_int, run_main, stderr_console
from cuvae.errors import CuvaeError
from cuvae.cli.sweep_results import axis_text, rebuild_rows, rich_table, run_name, summarise, write_results
from cuvae.cli.sweep_run import RunSpec, blank, run_one  # noqa: F401 - run_one: the API's one-run entry point

# training options a sweep may vary besides its own axes (model, latent, seeds), in run-name order
AXES = tuple(k for k in ("recipe",) + MODEL_FLAGS + TRAIN_FLAGS if k not in ("model", "latent", "seed"))
LIST_VALUED = ("hidden", "channels")  # one value of these is already a list: an axis over them is a list of lists

# ---- executors ------------------------------------------------------------------------------------
def _init_worker(env: dict) -> None:
    os.environ.update(env)


def _thread_env(threads: int) -> dict:
    n = str(max(1, threads))
    return {k: n for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def _run_slots(jobs: list[list[RunSpec]], slot_envs: list[dict], on_done) -> list[dict]:
    """Run jobs over len(slot_envs) single-process workers (spawned, each with its environment);
    returns the rows in the jobs' order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from cuvae.cli.sweep_together import run_job

    todo: queue.Queue = queue.Queue()
    for i, job in enumerate(jobs):
        todo.put((i, job))
    done: list[list | None] = [None] * len(jobs)
    ctx = multiprocessing.get_context("spawn")

    def slot(env):
        pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(env,))
        try:
            while True:
                try:
                    i, job = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    rows = pool.submit(run_job, job).result()
                except BrokenProcessPool as err:  # the worker died (killed, out of memory): report, start a new one
                    rows = [{**blank(spec), "error": f"worker process died ({err})"} for spec in job]
                    pool.shutdown(cancel_futures=True)
                    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(env,))
                done[i] = rows
                for row in rows:
                    on_done(row)
        finally:
            pool.shutdown()

    threads = [threading.Thread(target=slot, args=(env,), daemon=True) for env in slot_envs]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)  # short joins keep Ctrl-C responsive
    return [row for rows in done for row in rows]


# ---- the sweep ------------------------------------------------------------------------------------
def plan(config_for, latents, seeds, models, out: Path, axes: dict | None = None, **spec_kw) -> list[RunSpec]:
    """One RunSpec per (model, latent, other axes..., seed); ``config_for(model, latent, seed, values)``
    gives its TrainConfig (``values``: this run's value of each of ``axes``, {option: [values]})."""
    import itertools

    axes = axes or {}
    specs, names = [], set()
    for model in models:
        for latent in latents:
            for combo in itertools.product(*axes.values()):
                values = dict(zip(axes, combo))
                for seed in seeds:
                    name = run_name(model, latent, seed, values.items())
                    if name in names:  # two values that only differ in characters a folder name cannot hold
                        raise CuvaeError(f"two runs of this sweep would share the folder {name}; list each value once")
                    names.add(name)
                    try:
                        cfg = config_for(model, latent, seed, values)
                    except CuvaeError as err:
                        if not values:
                            raise
                        raise CuvaeError(f"the run {name}: {err}") from None
                    specs.append(RunSpec(str(out / name), cfg.to_dict(), axes=tuple(axes), **spec_kw))
    return specs


def unique(values) -> list:
    """``values`` in order, each once (lists compare by value)."""
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def run_sweep(out, latents=(2, 5, 8, 20), seeds=(1,), *, models=("vae",), train_args=(), device="cpu", data_dir=None,
              iwae_k: int = 100, eval_seed: int | None = None, jobs: int = 1, gpus=None, ray=None, ray_cpus: float = 1,
              pictures: bool = True, log=None, ray_options: dict | None = None, tracking: dict | None = None,
              axes: dict | None = None, seeds_together: str = "auto") -> list[dict]:
    """Run a sweep and write SWEEP_DIR/results.{csv,json,md} (and latent_comparison.png); returns the rows.

    ``train_args`` are cuvae-train options (e.g. ``["--recipe", "chapter", "--epochs", "10"]``),
    parsed by the training CLI's own parser; ``axes`` ({option: [values]}, e.g. ``{"lr": [1e-3, 3e-4]}``)
    varies other training options too: one run per combination. ``seeds_together`` ("auto": on a GPU,
    "yes", "no"): the seeds of one configuration train as k models in one step (cuvae.cli.sweep_together). ``jobs`` worker processes on the CPU; ``gpus``
    a list of device ids, one worker process each; ``ray`` "default" (``ray.init()``), "auto", "local"
    or an address (an existing ``ray.init`` in this process is used as it is), with ``ray_options``
    for :func:`cuvae.cli.sweep_ray.run_ray`. ``tracking`` (tensorboard, mlflow, mlflow_experiment)
    logs every run. ``log`` gets one line per run.
    """
    from cuvae.cli.train import build_parser, config_from_args

    out = Path(out)
    base = build_parser().parse_args(list(train_args))
    if gpus:
        device = "gpu"
    axes = {k: unique(v) for k, v in (axes or {}).items()}
    for key, values in axes.items():
        if key not in AXES:
            raise CuvaeError(f"a sweep cannot vary {key!r}; its axes are latent, seeds, model and {', '.join(AXES)}")
        if not values:
            raise CuvaeError(f"the axis {key} has no values; give at least one")

    def config_for(model, latent, seed, values):
        ns = argparse.Namespace(**vars(base))
        ns.model, ns.latent, ns.seed = model, latent, seed
        for key, value in values.items():
            setattr(ns, key, value)
        return config_from_args(ns)

    latents, seeds, models = unique(latents), unique(seeds), unique(models)
    if seeds_together == "auto" and device == "cpu":
        seeds_together = "no"
    specs = plan(config_for, latents, seeds, models, out, axes, device=device, together=seeds_together,
                 data_dir=str(data_dir) if data_dir else None, iwae_k=iwae_k, eval_seed=eval_seed,
                 tracking={k: v for k, v in (tracking or {}).items() if v})
    if ray:  # connect first: an unreachable cluster fails before anything is written
        from cuvae.cli.sweep_ray import CONNECT_TIMEOUT, connect

        connect(ray, (ray_options or {}).get("timeout", CONNECT_TIMEOUT))
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda *_: None)
    lock = threading.Lock()
    count = [0]

    def on_done(row):
        with lock:
            count[0] += 1
            log(_row_line(row, count[0], len(specs)))

    from cuvae.cli.sweep_together import group_jobs, run_job

    work = group_jobs(specs, seeds_together)  # lists of runs: one, or the seeds of one configuration
    if ray:
        from cuvae.cli.sweep_ray import run_ray

        options = {"cpus": ray_cpus, "gpus": 1 if device == "gpu" else 0, **(ray_options or {})}
        rows = run_ray(work, ray, on_done, run_job=run_job, blank=blank, log=log, **options)
    elif gpus:
        rows = _run_slots(work, [{"CUDA_VISIBLE_DEVICES": str(g)} for g in gpus], on_done)
    elif jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        rows = _run_slots(work, [_thread_env(threads)] * jobs, on_done)
    else:
        rows = []
        for job in work:
            names = ", ".join(spec.name for spec in job)
            log(f"[{len(rows) + 1}{'' if len(job) == 1 else f'-{len(rows) + len(job)}'}/{len(specs)}] {names} ...")
            for row in run_job(job):
                rows.append(row)
                on_done(row)
    write_results(out, rebuild_rows(out, rows, tuple(axes)), iwae_k, tuple(axes))  # a failure never replaces good rows
    # the latent comparison compares latent sizes: at the first value of every other axis
    shown = [r for r in rows if r["status"] != "failed" and all(r[k] == v[0] for k, v in axes.items())]
    if pictures and shown:
        from cuvae.cli.show import latent_comparison

        latent_comparison(out, shown, device=device, data_dir=data_dir)
    return rows


def _row_line(row, i, n) -> str:
    head = f"[{i}/{n}] {Path(row['run_dir']).name}: {row['status']}"
    if row["status"] == "failed":
        return f"{head}: {row['error']}"
    note = f" ({row['note']})" if row.get("note") else ""
    return (f"{head}, {row['epochs']} epoch{'' if row['epochs'] == 1 else 's'}, test -ELBO {row['test_loss']:.2f}, "
            f"active {row['active_units']}{note}")


# ---- command line -------------------------------------------------------------------------------------
EPILOG = """\
examples:
  cuvae-sweep --latent 2 5 8 20 --seeds 1 2 --epochs 10 --recipe chapter --out sweeps/chapter --jobs 2
  cuvae-sweep --latent 2 20 --with-ae --out sweeps/ae               # add plain-autoencoder baselines
  cuvae-sweep --latent 2 8 --lr 1e-3 3e-4 --out sweeps/lr             # any option given several values is an axis
  cuvae-sweep --latent 2 5 8 20 --device gpu --gpus 0 1 --out sweeps/gpu
  cuvae-sweep --latent 2 5 8 20 --ray auto --out sweeps/x             # a running Ray cluster; results come back
  cuvae-sweep --ray 10.0.0.1:6379 --ray-shared-dir --out /nfs/sweeps/x  # nodes write to shared storage themselves
  cuvae-sweep --config sweep.toml                                     # axes and options from a file
Run the same command again to skip finished runs and resume unfinished ones.
"""


def build_parser() -> argparse.ArgumentParser:
    from cuvae.cli.train import build_parser as train_parser

    base = train_parser()
    p = argparse.ArgumentParser(prog="cuvae-sweep", parents=[base], conflict_handler="resolve", add_help=False,
                                description="Train one cuvae model per latent size and seed, evaluate and compare them. "
                                            "Every cuvae-train option passes through to each run; give one several "
                                            "values (--lr 1e-3 3e-4, or lr = [1e-3, 3e-4] in a --config file) to "
                                            "sweep over it too: one run per combination.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_argument_group("sweep")
    s.add_argument("--latent", type=positive_int, nargs="+", default=[2, 5, 8, 20], metavar="L",
                   help="latent sizes (default 2 5 8 20)")
    s.add_argument("--seeds", type=nonneg_int, nargs="+", default=[1], metavar="S",
                   help="seeds, one run each (default 1); each run's test figures use its own seed")
    s.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    s.add_argument("--seeds-together", choices=("auto", "yes", "no"), default="auto",
                   help="train the seeds of one configuration together, as k models in one step (cuvae.multi): "
                        "auto (default): on a GPU, when the configuration allows it (MLP, ReLU, one-sample ELBO, "
                        "constant lr, float32, no --clip-norm; otherwise the output says why not); yes: also on the "
                        "CPU, with the step's NumPy twins (slow: a check); no: one run per seed. Together, all seeds "
                        "see the first seed's data order (and each its own init and noise)")
    s.add_argument("--with-ae", action="store_true", help="also train the plain autoencoder (--model ae) for each run, "
                                                          "the blurriness baseline")
    s.add_argument("--out", type=Path, required=True, metavar="SWEEP_DIR", help="folder for the runs and the results")
    s.add_argument("--iwae-k", type=positive_int, default=100, help="importance samples per test example (default 100)")
    s.add_argument("--jobs", type=positive_int, default=1, help="worker processes on the CPU (default 1)")
    s.add_argument("--gpus", type=int, nargs="+", metavar="ID", help="GPU ids, one worker process each (implies --device gpu)")
    s.add_argument("--ray", metavar="ADDRESS", nargs="?", const="default",
                   help="run each run as a Ray task (needs cuvae[ray]); alone: ray.init()'s choice (the cluster in "
                        "RAY_ADDRESS, else a new local instance); auto: the running cluster (start one with 'ray start --head'); HOST:PORT: that head; "
                        "local: a private instance. Each task returns its run's files: the nodes need no shared disk")
    r = p.add_argument_group("Ray")
    r.add_argument("--cpus-per-run", "--ray-cpus", dest="ray_cpus", type=float, default=1, metavar="N",
                   help="CPUs each Ray task asks for (default 1)")
    r.add_argument("--gpus-per-run", type=float, metavar="N", help="GPUs each Ray task asks for (default 1 with --device gpu, else 0)")
    r.add_argument("--ray-shared-dir", nargs="?", const="", metavar="PATH",
                   help="the nodes share storage: tasks write their run directories in place, in --out or, given, "
                        "in PATH (--out as the nodes see it)")
    r.add_argument("--ray-max-mb", type=float, default=512, metavar="MB",
                   help="most megabytes of files one run ships each way (default 512)")
    r.add_argument("--ray-retries", type=int, default=3, metavar="N",
                   help="times a run whose worker or node is lost is retried, from its last shipped epoch (default 3)")
    r.add_argument("--ray-timeout", type=float, default=30, metavar="S",
                   help="seconds to wait for a Ray cluster to answer (default 30)")
    s.add_argument("--no-pictures", action="store_true", help="do not write latent_comparison.png")
    s.add_argument("--json", action="store_true", help="print the rows as one JSON object on stdout")
    s.add_argument("--resume", help=argparse.SUPPRESS)
    for action in p._actions:  # every training option takes several values: an axis (config_file reads .axis)
        if action.dest in AXES + ("model", "latent", "seeds"):
            action.axis = "list" if action.dest in LIST_VALUED else "value"
            if action.nargs is None:
                action.nargs = "+"
                if action.choices is not None and action.metavar is None:  # the help names the choices
                    action.metavar = action.dest.upper()
    return p


def split_axes(args) -> tuple[dict, dict]:
    """The training options given: ({option: [values]} of those with several values, {option: value} of the rest)."""
    axes, fixed = {}, {}
    for key in AXES:
        v = getattr(args, key)
        if v is None:
            continue
        if key in LIST_VALUED:  # [256, 128] is one value, [[256, 128], [512]] two
            v = v if v and isinstance(v[0], list) else [v]
        values = unique(v)
        if len(values) > 1:
            axes[key] = values
        else:
            fixed[key] = values[0]
    return axes, fixed


def _train_argv(fixed: dict) -> list[str]:
    """Single-valued training options as cuvae-train argv."""
    argv = []
    for key, v in fixed.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return argv


def _ray_options(args) -> dict:
    options = {"shared_dir": None if args.ray_shared_dir is None else (args.ray_shared_dir or str(args.out)),
               "max_mb": args.ray_max_mb, "retries": args.ray_retries, "timeout": args.ray_timeout}
    if args.gpus_per_run is not None:
        options["gpus"] = args.gpus_per_run
    return options


def main(argv=None) -> int:
    from cuvae.engine import config_file

    parser = build_parser()
    args = config_file.parse_args(parser, argv)
    if args.print_config:
        print(config_file.to_toml(parser, vars(args), "cuvae-sweep options (cuvae-sweep --config FILE)"), end="")
        return 0
    if args.resume is not None:
        raise CuvaeError("cuvae-sweep resumes by itself: run the same command (same --out) again")
    if args.seed is not None:
        raise CuvaeError(f"cuvae-sweep takes --seeds (one run per seed): pass --seeds {args.seed}")
    if args.ray is None and (args.ray_shared_dir is not None or args.gpus_per_run is not None):
        raise CuvaeError("--ray-shared-dir and --gpus-per-run go with --ray")
    if sum(bool(x) for x in (args.jobs > 1, args.gpus, args.ray)) > 1:
        raise CuvaeError("choose one of --jobs, --gpus and --ray")
    if args.out.exists() and not args.out.is_dir():
        raise CuvaeError(f"--out {args.out} is a file; pass a folder")
    models = unique(list(args.model or ["vae"]) + (["ae"] if args.with_ae else []))
    axes, fixed = split_axes(args)
    latents, seeds = unique(args.latent), unique(args.seeds)
    train_argv = _train_argv(fixed)
    console = stderr_console()
    # a bad option combination fails in run_sweep's plan, before anything is written or started
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise CuvaeError(f"--data-dir {args.data_dir} is not a folder")
    device = args.device
    if args.jobs > 1 or args.ray:
        device = "cpu" if device == "auto" and not args.ray else device
    n = len(models) * len(latents) * len(seeds) * math.prod(map(len, axes.values()))
    how = f"{args.jobs} worker processes" if args.jobs > 1 else f"GPUs {args.gpus}" if args.gpus else \
        f"Ray ({args.ray})" if args.ray else "one at a time"
    varied = "".join(f" x {k} [{', '.join(map(axis_text, v))}]" for k, v in axes.items())
    from rich.markup import escape

    console.print(escape(f"sweep: {n} runs ({', '.join(models)} x latent {latents}{varied} x seeds {seeds}), {how}, "
                         f"into {args.out}"))
    t0 = time.perf_counter()
    try:
        rows = run_sweep(args.out, latents, seeds, models=models, train_args=train_argv, device=device, axes=axes,
                         data_dir=args.data_dir, iwae_k=args.iwae_k, jobs=args.jobs, gpus=args.gpus, ray=args.ray,
                         ray_cpus=args.ray_cpus, pictures=not args.no_pictures, log=lambda m: console.print(escape(m)),
                         seeds_together=args.seeds_together,
                         ray_options=_ray_options(args), tracking={k: getattr(args, k) for k in
                                                                   ("tensorboard", "mlflow", "mlflow_experiment")})
    except KeyboardInterrupt:
        console.print("interrupted; finished runs and checkpoints are kept: run the same command again to resume")
        return 130
    table_rows = rebuild_rows(args.out, rows, tuple(axes))
    summary = summarise(table_rows, tuple(axes))
    data = sorted({r["data"] for r in table_rows if r.get("data")})
    if data:
        console.print(f"data: {'; '.join(data)}")
    if args.json:
        print(json.dumps({"runs": rows, "summary": summary}))
    else:
        from rich.console import Console

        out_console = Console()
        if not out_console.is_terminal:
            out_console = Console(width=200)  # a file or pipe: do not squeeze the table into 80 columns
        out_console.print(rich_table(summary, args.iwae_k, title=f"{args.out} ({time.perf_counter() - t0:.0f} s)",
                                     rows=table_rows, axes=tuple(axes)))
    failed = [r for r in rows if r["status"] == "failed"]
    written = "results.csv, results.json, results.md" + ("" if args.no_pictures else ", latent_comparison.png")
    console.print(f"wrote {written} in {args.out}")
    if failed:
        console.print(f"[red]{len(failed)} of {len(rows)} runs failed[/] (see above); fix the cause and run again")
        return 1
    return 0


def cli() -> int:
    return run_main(main)


if __name__ == "__main__":
    sys.exit(cli())
