"""Reproduce Burda et al. (2016), Table 1 (MNIST, one stochastic layer) with cuvae, beside an independent PyTorch model.

Trains ``--recipe burda-vae`` and ``burda-iwae`` (K = 5; ``--rows iwae50`` adds the K = 50 row) for
``--epochs`` passes (the paper: 3,280; the schedule is shortened in proportion), then scores every
model by the k-sample importance-weighted NLL (``--iwae-k``, the paper's 5000) on one fixed binarised
sample of the 10,000 test digits (cuvae's protocol, seed 2024), the same array for cuvae and PyTorch.
Prints a table beside the paper's figures, with epochs and wall times, the IWAE - VAE differences,
and the time the full 3,280-pass schedule would take at the measured time per epoch. With several
``--seeds`` the table gives means over them and the per-seed differences: at a few epochs one seed's
NLL moves by up to a nat, more than the two implementations differ.

    pip install torch==2.13.0          # only for the PyTorch column (--frameworks cuvae skips it)
    python scripts/reproduce_burda.py --data-dir /path/to/mnist --epochs 20 --seeds 0 1 --iwae-k 1000

Parts can run in separate processes and be tabulated together: each finished part is appended to
``--results FILE`` (JSON lines), and ``--table FILE`` prints the table of what a file holds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PAPER = {"vae": 86.76, "iwae5": 85.54, "iwae50": 84.78}  # Table 1, one stochastic layer, after 3,280 passes
ROWS = {"vae": ("burda-vae", {}), "iwae5": ("burda-iwae", {}), "iwae50": ("burda-iwae", {"samples": 50})}
LABEL = {"vae": "VAE (k=1)", "iwae5": "IWAE k=5", "iwae50": "IWAE k=50"}
FULL_PASSES = 3280


def run_cuvae(row, epochs, dataset, test_x, *, seed, iwae_k, run_dir, log):
    from cuvae.backends.backend import get_backend
    from cuvae.engine.config import TrainConfig
    from cuvae.engine.events import EpochEnded
    from cuvae.engine.trainer import Trainer
    from cuvae.measure import evaluation

    recipe, extra = ROWS[row]
    config = TrainConfig.from_recipe(recipe, epochs=epochs, seed=seed, **extra)
    epochs_seen = []

    def listen(e):
        if isinstance(e, EpochEnded):
            epochs_seen.append(e.metrics)
            log(f"cuvae {row} epoch {e.metrics['epoch']}/{epochs}: test -ELBO {e.metrics['test_loss']:.2f}, "
                f"{e.metrics['seconds']:.1f} s")

    backend = get_backend("cpu")
    trainer = Trainer(config, backend, dataset, run_dir, listeners=[listen])
    done = trainer.run()
    if done.reason != "completed":
        raise SystemExit(f"cuvae {row}: training {done.reason}: {done.message}")
    x = backend.to_device(test_x.astype(trainer.dtype))
    est = evaluation.iwae_estimate(trainer.model, trainer.P, x, k=iwae_k, seed=seed)
    train_s = sum(m["seconds"] for m in epochs_seen)
    return {"framework": "cuvae", "row": row, "epochs": epochs, "test_nll": est["nll"], "test_se": est["se"],
            "iwae_k": iwae_k, "train_seconds": train_s, "seconds_per_epoch": train_s / max(len(epochs_seen), 1),
            "eval_seconds": est["seconds"], "protocol": trainer.protocol, "run_dir": str(run_dir)}


def run_torch(row, epochs, dataset, test_x, *, seed, iwae_k, threads, log):
    import torch_burda

    _, extra = ROWS[row]
    k = extra.get("samples", 5) if row != "vae" else 1
    res = torch_burda.train(dataset.train_x / 255.0, test_x, objective="vae" if row == "vae" else "iwae", k=k,
                            epochs=epochs, seed=seed, eval_k=iwae_k, threads=threads,
                            log=lambda line: log(f"torch {row} {line}"))
    return {"framework": "torch", "row": row, "epochs": epochs, "test_nll": res["test_nll"], "test_se": res["test_se"],
            "iwae_k": iwae_k, "train_seconds": res["train_seconds"], "seconds_per_epoch": res["train_seconds"] / epochs,
            "eval_seconds": res["eval_seconds"]}


def _mean(xs):
    return sum(xs) / len(xs)


def table(results) -> str:
    """The results (one dict per framework, row and seed) beside the paper's figures: means over the seeds
    each framework ran, and the per-seed differences, since at a few epochs one seed's figure moves by
    up to a nat and only the mean says whether two implementations agree."""
    by = {}
    for r in results:
        by.setdefault((r["framework"], r["row"]), {})[r.get("seed", 0)] = r
    rows = [row for row in ROWS if any((f, row) in by for f in ("cuvae", "torch"))]
    ks = sorted({r["iwae_k"] for r in results})
    lines = [f"Burda et al. (2016) Table 1, MNIST, one stochastic layer: test NLL in nats (IWAE k={'/'.join(map(str, ks))} "
             f"estimate ± standard error over test examples; mean over the seeds run); "
             f"protocol: binarized (dynamic train, fixed test sample, seed 2024)",
             "",
             f"{'row':<11} {'paper (3280 ep)':>15} {'epochs':>6} {'seeds':>5} {'cuvae':>16} {'pytorch':>16} {'cuvae-torch':>11} "
             f"{'cuvae s/ep':>10} {'torch s/ep':>10} {'cuvae train':>11} {'torch train':>11}"]

    def cell(runs):
        if not runs:
            return "-"
        rs = list(runs.values())
        return f"{_mean([r['test_nll'] for r in rs]):.2f} ± {_mean([r['test_se'] for r in rs]):.2f}"

    def per_ep(runs):
        return f"{_mean([r['seconds_per_epoch'] for r in runs.values()]):.1f}" if runs else "-"

    def minutes(runs):
        return f"{_mean([r['train_seconds'] for r in runs.values()]) / 60:.1f} min" if runs else "-"

    notes = []
    for row in rows:
        c, t = by.get(("cuvae", row), {}), by.get(("torch", row), {})
        both = sorted(set(c) & set(t))
        gap = f"{_mean([c[s]['test_nll'] - t[s]['test_nll'] for s in both]):+.2f}" if both else "-"
        seeds = ",".join(str(s) for s in sorted(set(c) | set(t)))
        ep = next(iter((c or t).values()))["epochs"]
        lines.append(f"{LABEL[row]:<11} {PAPER[row]:>15.2f} {ep:>6} {seeds:>5} {cell(c):>16} {cell(t):>16} {gap:>11} "
                     f"{per_ep(c):>10} {per_ep(t):>10} {minutes(c):>11} {minutes(t):>11}")
        if len(both) > 1:
            notes.append(f"{LABEL[row]}: cuvae - torch per seed " + ", ".join(
                f"seed {s}: {c[s]['test_nll']:.2f} - {t[s]['test_nll']:.2f} = {c[s]['test_nll'] - t[s]['test_nll']:+.2f}"
                for s in both))
    lines.append("")
    lines += notes
    for f in ("cuvae", "torch"):
        v, i = by.get((f, "vae"), {}), by.get((f, "iwae5"), {})
        both = sorted(set(v) & set(i))
        if both:
            diffs = [i[s]["test_nll"] - v[s]["test_nll"] for s in both]
            lines.append(f"{f}: IWAE k=5 - VAE = {_mean(diffs):+.2f} nats at {v[both[0]]['epochs']} epochs "
                         f"(per seed {', '.join(f'{d:+.2f}' for d in diffs)}; paper, after 3,280: "
                         f"{PAPER['iwae5'] - PAPER['vae']:+.2f})")
    for (f, row), runs in by.items():
        if f == "cuvae":
            sec = _mean([r["seconds_per_epoch"] for r in runs.values()])
            ev = _mean([r["eval_seconds"] for r in runs.values()])
            lines.append(f"cuvae {LABEL[row]}: {sec:.1f} s/epoch here -> the full {FULL_PASSES:,}-pass schedule would "
                         f"take about {sec * FULL_PASSES / 3600:.1f} h of training on this machine; "
                         f"IWAE-{next(iter(runs.values()))['iwae_k']} evaluation took {ev:.0f} s")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="MNIST folder (default: cuvae's usual lookup)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set (default 10, about 0.3%% of "
                   "the paper's 3280: on one free core roughly 4 min of training for cuvae's two rows and ~25 for "
                   "PyTorch's, plus the IWAE evaluations)")
    p.add_argument("--iwae-k", type=int, default=5000, help="importance samples for the test NLL (default 5000, the paper's)")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=["vae", "iwae5"])
    p.add_argument("--frameworks", nargs="+", choices=["cuvae", "torch"], default=["cuvae", "torch"])
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0], metavar="SEED",
                   help="seeds to train each row with (default 0); the table shows the mean over them")
    p.add_argument("--threads", type=int, help="threads for each framework (default: all cores)")
    p.add_argument("--out", type=Path, default=Path("runs/reproduce-burda"), help="where cuvae's runs are kept")
    p.add_argument("--results", type=Path, help="append each finished part to this JSON-lines file")
    p.add_argument("--table", type=Path, metavar="FILE", help="only print the table of the results in FILE")
    args = p.parse_args()
    if args.table:
        print(table([json.loads(line) for line in args.table.read_text().splitlines() if line.strip()]))
        return 0

    from cuvae.data import load_dataset
    from cuvae.data.protocol import evaluation_images

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.threads:
        from cuvae.backends.backend import set_cpu_threads

        set_cpu_threads(args.threads)
    dataset = load_dataset("mnist", data_dir=args.data_dir, log=log)
    if dataset.is_subset:
        log("warning: the bundled 10k/2k subset, not full MNIST: the figures are not comparable with the paper's")
    test_x = evaluation_images(dataset.test_x, "dynamic", "auto", "float32")  # the fixed binarised sample, for both
    results = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        for row in args.rows:
            for fw in args.frameworks:
                if fw == "cuvae":
                    r = run_cuvae(row, args.epochs, dataset, test_x, seed=seed, iwae_k=args.iwae_k,
                                  run_dir=args.out / f"{row}-e{args.epochs}-s{seed}", log=log)
                else:
                    r = run_torch(row, args.epochs, dataset, test_x, seed=seed, iwae_k=args.iwae_k,
                                  threads=args.threads, log=log)
                r["seed"] = seed
                results.append(r)
                log(json.dumps(r))
                if args.results:
                    with open(args.results, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(table(results))
    print(f"\nwall time: {(time.perf_counter() - t0) / 60:.1f} min; dataset: {dataset.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
