"""cuvae-sweep's jobs: one run, or the seeds of one configuration trained together as k models in one
step (:mod:`cuvae.engine.together`), each seed's run directory written as a separate run writes it.

``--seeds-together``: ``auto`` (the default) on a GPU, ``yes`` also on the CPU (the k-model step's NumPy
twins: slow, for checking), ``no`` never. Runs the k-model step cannot train (its reason said in each
row's note), or that stand at different epochs, go one by one.
"""

from __future__ import annotations

import traceback
from contextlib import ExitStack
from pathlib import Path

from cuvae.errors import CuvaeError

TOGETHER_MODES = ("auto", "yes", "no")


def group_jobs(specs: list, mode: str) -> list[list]:
    """Consecutive specs that differ only in their seed form one job (unless ``mode`` is "no")."""
    import json

    jobs: list[list] = []
    last = None
    for spec in specs:
        key = json.dumps({k: v for k, v in spec.config.items() if k != "seed"}, sort_keys=True), \
            str(Path(spec.run_dir).parent)
        if mode != "no" and jobs and key == last:
            jobs[-1].append(spec)
        else:
            jobs.append([spec])
        last = key
    return jobs


def run_job(job: list, listeners_for=None) -> list[dict]:
    """Train (or resume, or skip) and evaluate a job's runs; returns their rows. Never raises."""
    from cuvae.cli.sweep_run import run_one
    from cuvae.engine.together import data_seed_of

    listeners_for = listeners_for or (lambda spec: [])
    if len(job) == 1 and (job[0].together == "no" or data_seed_of(job[0].run_dir) is None):
        return [run_one(job[0], listeners_for(job[0]))]
    try:
        return _together(job, listeners_for)
    except Exception as err:  # noqa: BLE001 - the locks or the checks failed: each run on its own reports why
        note = f"seeds trained one by one: {err}" if isinstance(err, CuvaeError) else \
            f"seeds trained one by one after an error ({type(err).__name__}: {err})"
        if not isinstance(err, CuvaeError):
            Path(job[0].run_dir).mkdir(parents=True, exist_ok=True)
            (Path(job[0].run_dir) / "error.log").write_text(traceback.format_exc())
        return [{**run_one(spec, listeners_for(spec)), "note": note} for spec in job]


def _together(job: list, listeners_for) -> list[dict]:
    from cuvae.backends.backend import get_backend
    from cuvae.cli.sweep_run import resume_state, run_one
    from cuvae.engine import runlock
    from cuvae.engine.config import TrainConfig
    from cuvae.engine.together import blocker, data_seed_of

    rows: dict[str, dict] = {}
    with ExitStack() as locks:
        for spec in job:  # one writer per run directory, for the whole job
            locks.enter_context(runlock.hold(spec.run_dir))
        configs = {spec.name: TrainConfig.from_dict(spec.config) for spec in job}
        states, todo = {}, {}
        for spec in job:
            try:
                states[spec.name] = resume_state(Path(spec.run_dir), configs[spec.name])
            except CuvaeError:
                rows[spec.name] = run_one(spec)  # reports the refusal as its own row
                continue
            resume, status = states[spec.name]
            if status == "done":
                rows[spec.name] = run_one(spec)  # evaluated (or its saved evaluation reused)
                continue
            # runs go together only from the same epoch and, if trained together before, the same data order
            key = (resume.epoch if resume else 0, data_seed_of(spec.run_dir))
            todo.setdefault(key, []).append(spec)
        backend = get_backend(job[0].device) if todo else None
        first = configs[job[0].name]
        why = None
        if backend is not None and backend.name != "gpu" and job[0].together != "yes":
            why = ""  # the CPU default: one by one, nothing to say
        elif blocker(first):
            why = f"the k-model step cannot train {blocker(first)}"
        for (epoch, data_seed), group in todo.items():
            if why is not None or (len(group) == 1 and data_seed is None):  # one by one (a lone seed: as ever)
                for i, spec in enumerate(group):
                    row = run_one(spec, listeners_for(spec))
                    notes = [f"seeds {','.join(str(s.config['seed']) for s in group)} of {_config_name(spec)} trained "
                             f"one by one: {why}"] if why and i == 0 and len(group) > 1 else []
                    if data_seed is not None:
                        notes.append(f"continued in its own seed's data order (it began together, in seed "
                                     f"{data_seed}'s)")
                    rows[spec.name] = {**row, "note": "; ".join(notes)} if notes else row
                continue
            rows.update(_train_group(group, configs, states, backend, data_seed, listeners_for))
    return [rows[spec.name] for spec in job]


def _train_group(group, configs, states, backend, data_seed, listeners_for) -> dict:
    from cuvae.cli.sweep_run import blank, evaluated_row, load_data, run_listeners
    from cuvae.engine.together import TrainTogether

    cfgs = [configs[s.name] for s in group]
    resumes = [states[s.name][0] for s in group]
    data = load_data(group[0], cfgs[0], resumes[0])
    seeds = [c.seed for c in cfgs]
    group_run = TrainTogether(cfgs, backend, data, [Path(s.run_dir) for s in group], resumes=resumes,
                              listeners=[run_listeners(s, Path(s.run_dir), listeners_for(s)) for s in group],
                              data_seed=data_seed)
    finished = group_run.run()
    first = group[0]
    where = _config_name(first)
    note = (f"seeds {','.join(map(str, seeds))} of {where} trained together as {len(group)} models in one step, "
            f"in seed {group_run.data_seed}'s data order" if len(group) > 1 else
            f"seed {seeds[0]} of {where} continued on the k-model step, in the data order of seed {group_run.data_seed} "
            "it began with")
    rows = {}
    for spec, cfg, (resume, status), result in zip(group, cfgs, (states[s.name] for s in group), finished):
        try:
            if result.reason != "completed":
                raise CuvaeError(f"{spec.name}: {result.message}")
            row = {**blank(spec), "error": "", "likelihood": cfg.likelihood,
                   **evaluated_row(spec, Path(spec.run_dir), cfg, status)}
        except CuvaeError as err:
            row = {**blank(spec), "error": str(err), "likelihood": cfg.likelihood}
        rows[spec.name] = {**row, "note": note}
    return rows


def _config_name(spec) -> str:
    """The run's name without its seed: the configuration (``vae-z8-lr_0.0003``)."""
    return spec.name[:spec.name.rindex("-s")]
