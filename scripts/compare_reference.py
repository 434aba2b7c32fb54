"""Acceptance check: cuvae against an independent PyTorch VAE, trained in the same run.

Both models get the same architecture, data (preloaded), hyper-parameters and number of
epochs; both curves of test negative ELBO are printed, with the gap at the last epoch.

    pip install torch==2.13.0   # the reference is an optional dependency
    python scripts/compare_reference.py --data-dir /path/to/mnist [--json]

Settings (from the core issue):
  pytorch-example  784-400-20, Bernoulli, batch 128, Adam 1e-3, 5 epochs: gap within 1 nat
  chapter          784-256-128-8, SSE, Glorot init, batch 100, Adam 1e-3, 3 epochs: gap within 0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {"pytorch-example": (5, 1.0), "chapter": (3, 0.5)}  # recipe -> (epochs, tolerance in nats)


def run_cuvae(recipe: str, epochs: int, dataset, seed: int, run_dir: Path) -> list[dict]:
    from cuvae.backends.backend import get_backend
    from cuvae.engine.config import TrainConfig
    from cuvae.engine.events import EpochEnded
    from cuvae.engine.trainer import Trainer

    config = TrainConfig.from_recipe(recipe, epochs=epochs, seed=seed)
    rows = []
    trainer = Trainer(config, get_backend("cpu"), dataset, run_dir,
                      listeners=[lambda e: rows.append(e.metrics) if isinstance(e, EpochEnded) else None])
    trainer.run()
    return rows


def run_torch(recipe: str, epochs: int, dataset, seed: int) -> list[dict]:
    import torch_reference
    from cuvae.engine.config import RECIPES

    r = RECIPES[recipe]
    x = lambda a: a.astype(np.float32) / 255.0  # noqa: E731
    return torch_reference.train_reference(
        x(dataset.train_x), x(dataset.test_x), hidden=r["hidden"], latent=r["latent"], likelihood=r["likelihood"],
        batch_size=r["batch_size"], lr=r["lr"], epochs=epochs, init=r["init"], seed=seed, log=None)


def main() -> int:
    import tempfile

    from cuvae.data import load_dataset

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, help="MNIST folder (default: cuvae's usual lookup)")
    p.add_argument("--recipes", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object per recipe")
    args = p.parse_args()

    dataset = load_dataset("mnist", data_dir=args.data_dir, log=lambda m: print(m, file=sys.stderr))
    ok = True
    for recipe in args.recipes:
        epochs, tol = SETTINGS[recipe]
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_cuvae(recipe, epochs, dataset, args.seed, Path(tmp))
        ref = run_torch(recipe, epochs, dataset, args.seed)
        gap = ours[-1]["test_loss"] - ref[-1]["test_loss"]
        passed = abs(gap) <= tol
        ok &= passed
        result = {
            "recipe": recipe, "epochs": epochs, "tolerance": tol, "gap": gap, "passed": passed,
            "cuvae_test_loss": [r["test_loss"] for r in ours], "torch_test_loss": [r["test_loss"] for r in ref],
            "cuvae_seconds": [r["seconds"] for r in ours], "torch_seconds": [r["seconds"] for r in ref],
        }
        if args.json:
            print(json.dumps(result))
            continue
        print(f"\n{recipe}: test negative ELBO per epoch (nats), dataset {dataset.source}")
        print(f"{'epoch':>5} {'cuvae':>10} {'pytorch':>10} {'cuvae s':>8} {'torch s':>8}")
        for i, (a, b) in enumerate(zip(ours, ref), 1):
            print(f"{i:>5} {a['test_loss']:>10.3f} {b['test_loss']:>10.3f} {a['seconds']:>8.2f} {b['seconds']:>8.2f}")
        print(f"gap after {epochs} epochs: {gap:+.3f} nats (tolerance {tol}) -> {'PASS' if passed else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
