"""Training speed with cuvae-tui attached (diagnostics on) against headless training, measured in the
same run: epochs alternate between the two on one run directory (each resumes the last checkpoint),
and the script prints every epoch's examples/s, the median UI/headless ratio and its spread.

    python scripts/tui_overhead.py --pairs 3 --train-size 30000 --data-dir ../shared/data/mnist [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path


def last_rate(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["examples_per_s"]


def headless_epoch(args, runs: Path, epoch: int) -> float:
    from cuvae.cli.train import main

    run = runs / f"default-mnist-vae-z{args.latent}"
    assert main(["--out", str(run), *common(args), "--epochs", str(epoch), "--json"] +
                (["--resume", str(run)] if epoch > 1 else [])) == 0
    return last_rate(run)


async def ui_epoch(args, runs: Path, epoch: int) -> float:  # noqa: C901
    from cuvae_tui.app import make_app

    app = make_app(["--runs", str(runs), *common(args), "--epochs", str(epoch)])
    if args.no_diagnostics:  # to tell the diagnostics' share from the drawing's
        app._diag_busy = True
    async with app.run_test(size=(120, 40)) as pilot:
        while app.finished is None and app.error is None:
            await pilot.pause(0.1)
        while app._diag_busy and not args.no_diagnostics:  # the diagnostics of the epoch (its IWAE too) are part of the cost
            await pilot.pause(0.1)
        assert app.error is None, app.error
        await pilot.press("q")
    return last_rate(runs / f"default-mnist-vae-z{args.latent}")


def common(args) -> list[str]:
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    return ["--latent", str(args.latent), "--train-size", str(args.train_size), "--device", args.device, *data]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-diagnostics", action="store_true", help="the UI without its diagnostics worker")
    p.add_argument("--data-dir", help="a folder with the four MNIST IDX files (default: the usual search)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        epoch, ratios = 0, []
        epoch += 1
        headless_epoch(args, runs, epoch)  # warm-up epoch (compilation, caches), not counted
        for i in range(args.pairs):  # two epochs a turn; the second is timed (the first carries the start-up)
            epoch += 2
            h = headless_epoch(args, runs, epoch)
            epoch += 2
            u = asyncio.run(ui_epoch(args, runs, epoch))
            ratios.append(u / h)
            print(f"pair {i + 1}: headless {h:,.0f} ex/s, UI {u:,.0f} ex/s, ratio {u / h:.3f}", flush=True)
    print(f"median UI/headless {statistics.median(ratios):.3f}, spread {min(ratios):.3f}..{max(ratios):.3f} "
          f"over {len(ratios)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
