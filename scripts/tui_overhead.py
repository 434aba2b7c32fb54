"""Training speed with cuvae-tui attached (diagnostics on) against headless training, measured in the
same run: epochs alternate between the two on one run directory (each resumes the last checkpoint).

Two figures, because wall-clock speed on a shared machine is noisy:

* the wall ratio: each pair's UI-attached examples/s over the headless examples/s of the epoch just
  before it; the median and the spread over the pairs. The issue's target is >= 0.95. Trust it only
  on a quiet machine (the load average is printed beside it).
* the UI's CPU share, robust to load: during the timed UI epoch, the CPU seconds of the UI process
  (its drawing thread, the pictures and diagnostics workers, the pipe reader) over all the CPU seconds
  spent (the UI process plus the training child). When training keeps every core busy, the UI slows
  it by at least about this share, and in practice by more: measured on 2 cores with 2 BLAS threads,
  a 5% share went with a median wall ratio of 0.80, because the trainer's threads spend more CPU on
  the same epoch while the UI takes turns on their cores. With a core to spare it costs training
  about nothing.

    python scripts/tui_overhead.py --pairs 3 --train-size 20000 --data-dir ../shared/data/mnist [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def last_rate(run: Path) -> float:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["examples_per_s"]


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread, from its /proc stat line."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ui_threads() -> dict[str, float]:
    """CPU seconds of this process's threads: the UI thread (the main one) and the rest."""
    main = threading.main_thread().native_id
    out = {"UI thread": 0.0, "workers": 0.0}
    for tid in os.listdir("/proc/self/task"):
        try:
            s = cpu_seconds(f"/proc/self/task/{tid}/stat")
        except OSError:
            continue  # a thread that just ended
        out["UI thread" if int(tid) == main else "workers"] += s
    return out


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def headless_epoch(args, runs: Path, epoch: int) -> float:
    from cuvae.cli.train import main

    run = runs / f"default-mnist-vae-z{args.latent}"
    assert main(["--out", str(run), *common(args), "--epochs", str(epoch), "--json"] +
                (["--resume", str(run)] if epoch > 1 else [])) == 0
    return last_rate(run)


async def ui_epoch(args, runs: Path, epoch: int) -> tuple[float, dict]:
    """One UI-attached turn of two epochs; the CPU figures cover the second (timed) one."""
    from threadpoolctl import threadpool_limits

    from cuvae_tui.app import make_app

    app = make_app(["--runs", str(runs), *common(args), "--epochs", str(epoch)])
    if args.no_diagnostics:  # to tell the diagnostics' share from the drawing's
        app._diag_busy = True
    with threadpool_limits(1, user_api="blas"):  # as cuvae-tui's entry point sets it (training.leave_cores_to_training)
        async with app.run_test(size=(120, 40)) as pilot:
            # plain sleeps, not pilot.pause: the pilot's idle waits would be counted as UI work
            while not app.curves.epochs or app.curves.epochs[-1]["epoch"] < epoch - 1:
                assert app.error is None, app.error
                await asyncio.sleep(0.05)
            child = app.trainer.process.pid
            ui0, train0 = ui_threads(), cpu_seconds(f"/proc/{child}/stat")
            train1 = train0
            while app.curves.epochs[-1]["epoch"] < epoch:
                assert app.error is None, app.error
                await asyncio.sleep(0.05)
                try:
                    train1 = cpu_seconds(f"/proc/{child}/stat")  # read while the child lives
                except OSError:
                    break
            ui1 = ui_threads()
            while app._diag_busy and not args.no_diagnostics:  # let the last diagnostics finish before quitting
                await pilot.pause(0.1)
            await pilot.press("q")
    run = runs / f"default-mnist-vae-z{args.latent}"
    seconds = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["seconds"]
    cpu = {k: ui1[k] - ui0[k] for k in ui0}
    cpu["training child"] = train1 - train0
    cpu["epoch seconds"] = seconds
    return last_rate(run), cpu


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
    print(f"{os.cpu_count()} CPUs, load average {load()} at the start; device {args.device}, "
          f"{args.train_size:,} train examples, diagnostics {'off' if args.no_diagnostics else 'on'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        epoch, ratios, shares = 0, [], []
        epoch += 1
        headless_epoch(args, runs, epoch)  # warm-up epoch (compilation, caches), not counted
        for i in range(args.pairs):  # two epochs a turn; the second is timed (the first carries the start-up)
            epoch += 2
            h = headless_epoch(args, runs, epoch)
            epoch += 2
            u, cpu = asyncio.run(ui_epoch(args, runs, epoch))
            ui = cpu["UI thread"] + cpu["workers"]
            share = ui / max(ui + cpu["training child"], 1e-9)
            ratios.append(u / h)
            shares.append(share)
            print(f"pair {i + 1}: headless {h:,.0f} ex/s, UI {u:,.0f} ex/s, wall ratio {u / h:.3f} | timed UI epoch "
                  f"{cpu['epoch seconds']:.1f} s: UI thread {cpu['UI thread']:.2f} CPU s, workers {cpu['workers']:.2f}, "
                  f"training child {cpu['training child']:.2f}; UI share {100 * share:.1f}% | load {load()}", flush=True)
    print(f"wall ratio UI/headless: median {statistics.median(ratios):.3f}, spread {min(ratios):.3f}..{max(ratios):.3f} "
          f"over {len(ratios)} pairs (noisy under load; target >= 0.95)")
    print(f"UI CPU share (load-robust): median {100 * statistics.median(shares):.1f}%, "
          f"spread {100 * min(shares):.1f}..{100 * max(shares):.1f}% -> where training fills every core the wall ratio "
          f"is at most about {1 - statistics.median(shares):.3f}; load average {load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
