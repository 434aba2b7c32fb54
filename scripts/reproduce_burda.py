"""Reproduce Burda et al. (2016), Table 1 (MNIST, one stochastic layer) with cuvae, beside an independent PyTorch model.

Trains ``--recipe burda-vae`` and ``burda-iwae`` (K = 5; ``--rows iwae50`` adds the K = 50 row) for
``--epochs`` passes (the paper: 3,280; the schedule is shortened in proportion), then scores every
model by the k-sample importance-weighted NLL (``--iwae-k``, the paper's 5000) on one fixed binarised
sample of the 10,000 test digits (cuvae's protocol, seed 2024), the same array for cuvae and PyTorch.
Prints a table beside the paper's figures, with epochs and wall times, the IWAE - VAE differences,
and the time the full 3,280-pass schedule would take at the measured time per epoch.

    pip install torch==2.13.0          # only for the PyTorch column (--frameworks cuvae skips it)
    python scripts/reproduce_burda.py --data-dir /path/to/mnist --epochs 20 --iwae-k 5000

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


def table(results) -> str:
    by = {(r["framework"], r["row"]): r for r in results}
    rows = [row for row in ROWS if any((f, row) in by for f in ("cuvae", "torch"))]
    ks = sorted({r["iwae_k"] for r in results})
    lines = [f"Burda et al. (2016) Table 1, MNIST, one stochastic layer: test NLL in nats (IWAE k={'/'.join(map(str, ks))} "
             f"estimate ± standard error over test examples); protocol: binarized (dynamic train, fixed test sample, seed 2024)",
             "",
             f"{'row':<11} {'paper (3280 ep)':>15} {'epochs':>6} {'cuvae':>16} {'pytorch':>16} {'cuvae-torch':>11} "
             f"{'cuvae s/ep':>10} {'torch s/ep':>10} {'cuvae train':>11} {'torch train':>11}"]

    def cell(r, key="test_nll"):
        return f"{r[key]:.2f} ± {r['test_se']:.2f}" if r else "-"

    for row in rows:
        c, t = by.get(("cuvae", row)), by.get(("torch", row))
        gap = f"{c['test_nll'] - t['test_nll']:+.2f}" if c and t else "-"
        ep = (c or t)["epochs"]
        sec = lambda r, k: f"{r[k]:.1f}" if r else "-"  # noqa: E731
        mins = lambda r: f"{r['train_seconds'] / 60:.1f} min" if r else "-"  # noqa: E731
        lines.append(f"{LABEL[row]:<11} {PAPER[row]:>15.2f} {ep:>6} {cell(c):>16} {cell(t):>16} {gap:>11} "
                     f"{sec(c, 'seconds_per_epoch'):>10} {sec(t, 'seconds_per_epoch'):>10} {mins(c):>11} {mins(t):>11}")
    lines.append("")
    for f in ("cuvae", "torch"):
        v, i = by.get((f, "vae")), by.get((f, "iwae5"))
        if v and i:
            lines.append(f"{f}: IWAE k=5 - VAE = {i['test_nll'] - v['test_nll']:+.2f} nats at {v['epochs']} epochs "
                         f"(paper, after 3,280: {PAPER['iwae5'] - PAPER['vae']:+.2f})")
    for r in results:
        if r["framework"] == "cuvae":
            hours = r["seconds_per_epoch"] * FULL_PASSES / 3600
            lines.append(f"cuvae {LABEL[r['row']]}: {r['seconds_per_epoch']:.1f} s/epoch here -> the full {FULL_PASSES:,}-pass "
                         f"schedule would take about {hours:.1f} h of training on this machine; IWAE-{r['iwae_k']} "
                         f"evaluation took {r['eval_seconds']:.0f} s")
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
    p.add_argument("--seed", type=int, default=0)
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
    for row in args.rows:
        for fw in args.frameworks:
            if fw == "cuvae":
                r = run_cuvae(row, args.epochs, dataset, test_x, seed=args.seed, iwae_k=args.iwae_k,
                              run_dir=args.out / f"{row}-e{args.epochs}-s{args.seed}", log=log)
            else:
                r = run_torch(row, args.epochs, dataset, test_x, seed=args.seed, iwae_k=args.iwae_k,
                              threads=args.threads, log=log)
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
