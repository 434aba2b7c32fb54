"""Training speed with cuvae-tui attached (diagnostics on) against headless cuvae-train, measured in
the same run: turns alternate on one run directory (each resumes the last checkpoint).

* A headless turn runs ``python -m cuvae.train`` in a process of its own, as a user would.
* A UI turn runs the app as cuvae-tui does (training.leave_cores_to_training: one BLAS thread in the
  UI process), the trainer in its spawned child.

Each turn trains --turn-epochs epochs. The first carries the start-up (imports, compilation, the
app's first frames) and is not counted; the others are timed by the trainer itself (examples/s over
its steps, metrics.jsonl). Figures:

* the wall ratio: each UI turn's examples/s over the headless turn's just before it; the median and
  the spread over the pairs. The issue's target is >= 0.95.
* the UI's CPU share over the timed epochs: CPU seconds of the UI process (its drawing thread, the
  pictures and diagnostics workers, the pipe reader) over those of the UI process and the training child.
* the UI's responsiveness: the longest gap between two of the app's redraw ticks (REDRAW_HZ a second)
  over the timed epochs, and the median gap.

    python scripts/tui_overhead.py --pairs 5 --train-size 60000 --data-dir ../shared/data/mnist [--device cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
BLOCK = 0.05  # the issue: nothing blocks the UI thread for more than 50 ms
ROOT = Path(__file__).resolve().parent.parent


def rates(run: Path, after: int) -> list[float]:
    """examples/s of every epoch of the run after epoch ``after``."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["examples_per_s"] for r in rows if r["epoch"] > after]


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread, from its /proc stat line."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each of this process's threads, by Python thread name (pool threads summed)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            seconds = cpu_seconds(f"/proc/self/task/{tid}/stat")
        except OSError:  # the thread has just ended
            continue
        name = names.get(int(tid), "native")
        name = name.split("-")[0] if name.startswith("ThreadPoolExecutor") else name
        out[name] = out.get(name, 0.0) + seconds
    return out


def own_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_dir(args, runs: Path) -> Path:
    return runs / f"default-mnist-vae-z{args.latent}"


def epochs_done(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def headless_turn(args, runs: Path, epochs: int, first: bool = False) -> tuple[list[float], float]:
    """The timed epochs' examples/s, and the trainer's CPU seconds over them (read from /proc while it runs)."""
    run, before = run_dir(args, runs), epochs - args.turn_epochs
    cmd = [sys.executable, "-m", "cuvae.train", "--out", str(run), *common(args), "--epochs", str(epochs), "--json"]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd + ([] if first else ["--resume", str(run)]), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
        cpu0 = cpu1 = None
        while proc.poll() is None:  # the timed epochs: from the end of the turn's first to the end of its last
            time.sleep(0.05)
            done = epochs_done(run)
            try:
                now = cpu_seconds(f"/proc/{proc.pid}/stat")
            except OSError:
                break
            if cpu0 is None and done >= before + 1:
                cpu0 = now
            if cpu1 is None and done >= epochs:
                cpu1 = now
        if proc.wait() != 0:
            err.seek(0)
            raise SystemExit(f"cuvae-train failed ({proc.returncode}): {err.read()[-2000:]}")
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else float("nan")
    return rates(run, before + 1), cpu


async def ui_turn_async(args, runs: Path, epochs: int) -> dict:
    from cuvae_tui.app import make_app

    app = make_app(["--runs", str(runs), *common(args), "--epochs", str(epochs)])
    if args.no_diagnostics:  # to tell the diagnostics' share from the drawing's
        app._diag_busy = True
    ticks, timed_from = [], epochs - args.turn_epochs + 2  # the first timed epoch (the turn's first is not)
    redraw = app._tick

    def counted_tick():
        ticks.append(time.monotonic())
        return redraw()

    app._tick = counted_tick  # before mount, where the redraw timer is set up
    callbacks = CallbackClock()
    ui0 = child0 = ui1 = child1 = None
    async with app.run_test(size=args.size) as pilot:
        # plain sleeps, not pilot.pause: the pilot's idle waits would be counted as UI work
        while app.finished is None:
            assert app.error is None, app.error
            await asyncio.sleep(0.1)  # this loop runs on the UI's thread: poll gently
            trainer = app.trainer
            try:
                now = cpu_seconds(f"/proc/{trainer.process.pid}/stat") if trainer and trainer.process.pid else None
            except OSError:  # the child has just ended
                now = None
            if ui0 is None and app.curves.epochs and app.curves.epochs[-1]["epoch"] >= timed_from - 1 and now:
                ui0, child0 = own_cpu(), now  # the timed epochs start
                callbacks.start()
                threads0 = thread_cpu()
            if ui0 is not None and now is not None:
                ui1, child1 = own_cpu(), now
        callbacks.stop()
        threads1 = thread_cpu()
        while app._diag_busy and not args.no_diagnostics:  # let the last diagnostics finish before quitting
            await asyncio.sleep(0.1)
        await pilot.press("q")
    if ui0 is None or ui1 is None:
        raise SystemExit("the timed epochs were too short to measure: pass a larger --train-size")
    timed = [t for t in ticks if callbacks.started <= t <= callbacks.stopped]  # over the timed epochs
    gaps = [b - a for a, b in zip(timed, timed[1:])] or [0.0]
    longest = max(zip(timed, timed[1:]), key=lambda ab: ab[1] - ab[0], default=(0.0, 0.0))
    return {"rates": rates(run_dir(args, runs), timed_from - 1), "ui_cpu": ui1 - ui0,
            "child_cpu": child1 - child0, "max_gap": max(gaps), "median_gap": statistics.median(gaps),
            "callbacks": callbacks, "in_longest_gap": callbacks.within(*longest), "threads": {k: threads1[k] - threads0.get(k, 0.0) for k in threads1}}


class CallbackClock:
    """Wall and CPU time of every callback the UI's event loop runs (each step of each of Textual's tasks),
    while started: a callback's CPU time is its own work on the UI thread; wall time beyond it is time it
    waited (for the GIL, or for a core)."""

    def __init__(self) -> None:
        self.longest_wall = (0.0, 0.0, "")  # (wall, cpu, what) of the callback with the longest wall time
        self.longest_cpu = (0.0, 0.0, "")
        self.over = 0  # callbacks of more than BLOCK seconds' wall time
        self.count = 0
        self.spans: list[tuple[float, float, float]] = []  # (start, end, cpu) of each callback
        self.cpu_by_what: dict[str, float] = {}
        self._original = asyncio.events.Handle._run

    def start(self) -> None:
        clock, original = self, self._original
        self.started = time.monotonic()
        self.gc_longest, self._gc_t0 = (0.0, -1), None
        gc.callbacks.append(self._gc)

        def timed_run(handle):
            w0, c0 = time.monotonic(), time.thread_time()
            try:
                return original(handle)
            finally:
                clock.record(w0, time.monotonic(), time.thread_time() - c0, handle)

        asyncio.events.Handle._run = timed_run

    def stop(self) -> None:
        asyncio.events.Handle._run = self._original
        self.stopped = time.monotonic()
        gc.callbacks.remove(self._gc)

    def _gc(self, phase: str, info: dict) -> None:
        """The longest garbage collection (any thread's: the UI's pauses with it)."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif self._gc_t0 is not None:
            took = time.perf_counter() - self._gc_t0
            if took > self.gc_longest[0]:
                self.gc_longest = (took, info["generation"])

    def within(self, a: float, b: float) -> tuple[float, float]:
        """Wall and CPU seconds of the callbacks run between a and b (the rest the loop spent waiting)."""
        inside = [(max(s, a), min(e, b), c) for s, e, c in self.spans if e > a and s < b]
        return sum(e - s for s, e, _ in inside), sum(c for *_, c in inside)

    def record(self, start: float, end: float, cpu: float, handle) -> None:
        wall = end - start
        self.spans.append((start, end, cpu))
        what = describe(handle)
        self.cpu_by_what[what] = self.cpu_by_what.get(what, 0.0) + cpu
        self.count += 1
        self.over += wall > BLOCK
        if wall > self.longest_wall[0]:
            self.longest_wall = (wall, cpu, what)
        if cpu > self.longest_cpu[1]:
            self.longest_cpu = (wall, cpu, what)


def describe(handle) -> str:
    """A task step's coroutine name, or the callback's name."""
    callback = getattr(handle, "_callback", None)
    task = getattr(callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        owner = getattr(getattr(coro, "cr_frame", None), "f_locals", {}).get("self")
        return f"{name} {owner.name} of {owner._target_repr}" if hasattr(owner, "_target_repr") else name  # which timer
    return getattr(callback, "__qualname__", repr(callback))


def ms(timing) -> str:
    wall, cpu, what = timing
    return f"{1e3 * wall:.0f} ms wall / {1e3 * cpu:.0f} ms CPU ({what})"


def ui_turn(args, runs: Path, epochs: int) -> dict:
    """As cuvae-tui's entry point does it: leave_cores_to_training (one BLAS thread here), then the app."""
    from cuvae_tui.training import leave_cores_to_training

    leave_cores_to_training()
    return asyncio.run(ui_turn_async(args, runs, epochs))


def common(args) -> list[str]:
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    return ["--latent", str(args.latent), "--train-size", str(args.train_size), "--device", args.device, *data]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--turn-epochs", type=int, default=3, help="epochs a turn; the first is not timed (default 3)")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-diagnostics", action="store_true", help="the UI without its diagnostics worker")
    p.add_argument("--size", default="120x40", help="the app's screen, COLSxROWS (default 120x40; 200x60 shows the "
                   "diagnostics panel)")
    p.add_argument("--data-dir", help="a folder with the four MNIST IDX files (default: the usual search)")
    args = p.parse_args()
    try:
        args.size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(args.size) == 2 and min(args.size) > 0
    except (ValueError, AssertionError):
        p.error(f"--size {args.size!r} is not COLSxROWS (e.g. 120x40)")
    if args.turn_epochs < 2:
        p.error("--turn-epochs must be at least 2 (the first epoch of a turn is not timed)")
    print(f"{os.cpu_count()} CPUs, load average {load()} at the start; device {args.device}, "
          f"{args.train_size:,} train examples, {args.turn_epochs} epochs a turn, diagnostics "
          f"{'off' if args.no_diagnostics else 'on'}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        epochs = 1
        headless_turn(args, runs, epochs, first=True)  # warm-up (compilation caches, data cache), not counted
        ratios, shares, gaps, ui_rates, hl_rates, walls, cpus = [], [], [], [], [], [], []
        for i in range(args.pairs):
            epochs += args.turn_epochs
            h_rates, h_cpu = headless_turn(args, runs, epochs)
            h = statistics.mean(h_rates)
            epochs += args.turn_epochs
            ui = ui_turn(args, runs, epochs)
            u = statistics.mean(ui["rates"])
            share = ui["ui_cpu"] / max(ui["ui_cpu"] + ui["child_cpu"], 1e-9)
            ratios.append(u / h)
            ui_rates.append(u)
            hl_rates.append(h)
            shares.append(share)
            gaps.append(ui["max_gap"])
            print(f"pair {i + 1}: headless {h:,.0f} ex/s, UI {u:,.0f} ex/s, wall ratio {u / h:.3f} | UI turn: UI process "
                  f"{ui['ui_cpu']:.2f} CPU s, training child {ui['child_cpu']:.2f} (headless {h_cpu:.2f}), UI share {100 * share:.1f}%; redraw "
                  f"gaps median {1e3 * ui['median_gap']:.0f} ms, longest {1e3 * ui['max_gap']:.0f} ms | load {load()}",
                  flush=True)
            cb = ui["callbacks"]
            walls.append(cb.longest_wall)
            cpus.append(cb.longest_cpu)
            print(f"        UI-thread callbacks: {cb.count:,}, {cb.over} over {1e3 * BLOCK:.0f} ms wall; longest wall "
                  f"{ms(cb.longest_wall)}; longest CPU {ms(cb.longest_cpu)}; in the longest redraw gap, callbacks ran "
                  f"{1e3 * ui['in_longest_gap'][0]:.0f} ms ({1e3 * ui['in_longest_gap'][1]:.0f} ms CPU); longest garbage "
                  f"collection {1e3 * cb.gc_longest[0]:.0f} ms (generation {cb.gc_longest[1]})", flush=True)
            top = sorted(((v, k) for k, v in cb.cpu_by_what.items()), reverse=True)[:4]
            print("        UI-thread CPU by callback: " + ", ".join(f"{k} {v:.2f} s" for v, k in top), flush=True)
            busy = sorted(((v, k) for k, v in ui["threads"].items() if v > 0), reverse=True)
            print("        UI process CPU by thread: " + ", ".join(f"{k} {v:.2f} s" for v, k in busy), flush=True)
    print(f"wall ratio UI/headless: median {statistics.median(ratios):.3f}, spread {min(ratios):.3f}..{max(ratios):.3f} "
          f"over {len(ratios)} pairs (target >= 0.95); the medians' ratio {statistics.median(ui_rates) / statistics.median(hl_rates):.3f} "
          f"(UI {statistics.median(ui_rates):,.0f} ex/s over headless {statistics.median(hl_rates):,.0f}, whose own turns "
          f"spread {min(hl_rates):,.0f}..{max(hl_rates):,.0f}: the machine's noise)")
    print(f"UI CPU share: median {100 * statistics.median(shares):.1f}%, spread {100 * min(shares):.1f}.."
          f"{100 * max(shares):.1f}%; longest redraw gap: median {1e3 * statistics.median(gaps):.0f} ms, worst "
          f"{1e3 * max(gaps):.0f} ms; load average {load()} at the end")
    print(f"longest UI-thread callback by wall time: {ms(max(walls))}; by CPU time: {ms(max(cpus, key=lambda c: c[1]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
