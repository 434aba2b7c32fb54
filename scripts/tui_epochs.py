"""Training speed with cuvae-tui attached against the same training with no UI, epoch by epoch.

One real ``cuvae-tui`` runs in tmux (a real terminal, 120x40 unless --size); its training child trains
one run. The epochs alternate: in a *headless* epoch the UI process is frozen (SIGSTOP: neither it nor
the terminal does anything), in a *UI* epoch it runs as a user sees it (drawing, pictures,
diagnostics, the terminal's own work). The trainer is the same process throughout, so what differs
between neighbouring epochs is only the UI; turn-by-turn comparisons (scripts/tui_overhead.py) also
carry each process's start-up and the machine's minute-to-minute drift.

* The ratio: each UI block's examples/s (--block epochs in a row) over the mean of the headless blocks
  on either side (which cancels a steady drift); the median and the spread. The issue's target is >= 0.95.
* The UI's CPU (the cuvae-tui process, and separately the tmux server drawing it) over the UI epochs,
  and the trainer's CPU per epoch in both kinds.

Freezing is safe for the trainer: within an epoch it sends only a few small step reports (they wait in
the pipe); at the epoch's end it sends the parameters, so the UI is thawed as soon as the epoch's
metrics line appears, and frozen again only after it has read them (its read count from /proc).

The UI is frozen by the cgroup freezer where this machine has one the script may use (root, cgroup v1
freezer or v2 cgroup.freeze), else by SIGSTOP. SIGSTOP overstates the UI's cost: Textual handles the
SIGCONT that ends it by restarting its terminal mode and repainting the whole screen; the script says
which it used.

    python scripts/tui_epochs.py --epochs 40 --train-size 60000 --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
POLL = 0.01  # seconds between two looks at metrics.jsonl


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def bytes_read(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def children(pid: int) -> list[int]:
    """Its child processes, whichever of its threads started them."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except OSError:
            pass
    return out


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def param_bytes(run: Path) -> int:
    """What the trainer sends at an epoch's end: the parameters as float32 (the checkpoint's are float32)."""
    import numpy as np

    with np.load(run / "checkpoint.npz") as z:
        return z["params"].size * 4


def headless(epoch: int, args) -> bool:
    """Whether the UI is frozen for this epoch: after the skipped ones, blocks of --block epochs, headless
    first, then with the UI."""
    return epoch > args.skip and ((epoch - args.skip - 1) // args.block) % 2 == 0


def block_ratios(counted: list[dict], rate: dict, block: int) -> list[float]:
    """Each UI block's mean examples/s over the mean of the headless blocks on either side of it."""
    blocks = [counted[i:i + block] for i in range(0, len(counted), block)]
    kind = ["ui" if all(r["ui"] for r in b) else "headless" if not any(r["ui"] for r in b) else "mixed" for b in blocks]
    mean = lambda rows: statistics.mean(rate[r["epoch"]] for r in rows)  # noqa: E731
    out = []
    for i, b in enumerate(blocks):
        if kind[i] == "ui":
            around = [n for j in (i - 1, i + 1) if 0 <= j < len(blocks) and kind[j] == "headless" for n in blocks[j]]
            if around:
                out.append(mean(b) / mean(around))
    return out


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Freezer:
    """Freeze and thaw one process (all its threads, none of its children) through a cgroup freezer."""

    ROOTS = (Path("/sys/fs/cgroup/freezer"), Path("/sys/fs/cgroup"))  # cgroup v1's freezer, a pure v2 mount

    def __init__(self, pid: int) -> None:
        self.pid, self.group = pid, None
        for root in self.ROOTS:
            v1 = (root / "freezer.state").exists() or root.name == "freezer"
            if not root.is_dir() or not (v1 or (root / "cgroup.freeze").exists() or (root / "cgroup.controllers").exists()):
                continue
            group = root / f"cuvae-bench-{os.getpid()}"
            try:
                group.mkdir()
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                if group.exists():
                    group.rmdir()
                continue
            self.group, self.home, self.v1 = group, root, v1
            break
        self.how = "the cgroup freezer" if self.group else "SIGSTOP/SIGCONT (the cgroup freezer is not available)"

    def freeze(self) -> None:
        self._set(True)

    def thaw(self) -> None:
        self._set(False)

    def _set(self, frozen: bool) -> None:
        if self.group is None:
            os.kill(self.pid, signal.SIGSTOP if frozen else signal.SIGCONT)
        elif self.v1:
            (self.group / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
        else:
            (self.group / "cgroup.freeze").write_text("1" if frozen else "0")

    def close(self) -> None:
        if self.group is None:
            return
        self.thaw()
        try:
            (self.home / "cgroup.procs").write_text(str(self.pid))
        except OSError:  # it has ended
            pass
        self.group.rmdir()


class Tmux:
    """cuvae-tui in a tmux server of its own (its own socket: the user's sessions are not touched)."""

    def __init__(self, socket: str, size: tuple[int, int]) -> None:
        self.socket, self.size = socket, size

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def start(self, command: list[str]) -> int:
        """The UI's pid. It runs under a shell, not as the pane's own process: tmux continues a pane
        process that stops (SIGCONT), which would undo the freezing."""
        cols, rows = self.size
        self.tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), " ".join(command) + "; exit $?")
        shell = int(self.tmux("list-panes", "-F", "#{pane_pid}").split()[0])
        for _ in range(100):
            kids = children(shell)
            if kids:
                return kids[0]
            time.sleep(0.05)
        raise SystemExit("tui_epochs.py: cuvae-tui did not start in tmux")

    def server_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "#{pid}").strip())

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def epochs_written(run: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except OSError:
        return []


def find_trainer(ui: int, timeout: float = 120.0) -> int:
    """The UI's spawned training child (not multiprocessing's resource tracker)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for c in children(ui):
            try:
                line = cmdline(c)
            except OSError:
                continue
            if "spawn_main" in line and "resource_tracker" not in line:
                return c
        time.sleep(0.1)
    raise SystemExit("the UI started no training child within 2 minutes")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40, help="epochs in all (default 40)")
    p.add_argument("--skip", type=int, default=2, help="first epochs left out: start-up and warm-up (default 2)")
    p.add_argument("--block", type=int, default=2, help="epochs in a row of one kind (default 2: the UI's per-epoch "
                   "pictures, every 5 s, fall as they do when it runs throughout)")
    p.add_argument("--train-size", type=int, default=60000)
    p.add_argument("--latent", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", default="120x40", help="the terminal, COLSxROWS (default 120x40)")
    p.add_argument("--data-dir", help="a folder with the four MNIST IDX files (default: the usual search)")
    args = p.parse_args()
    if shutil.which("tmux") is None:
        p.exit(2, "tui_epochs.py: tmux is not installed (the UI runs in it): apt-get install tmux\n")
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
    except (ValueError, AssertionError):
        p.exit(2, f"tui_epochs.py: --size {args.size!r} is not COLSxROWS (e.g. 120x40)\n")
    if args.block < 1 or args.epochs < args.skip + 3 * args.block:
        p.exit(2, "tui_epochs.py: --epochs must leave at least three blocks after --skip (and --block >= 1)\n")
    print(f"{os.cpu_count()} CPUs, load average {load()} at the start; device {args.device}, {args.train_size:,} "
          f"train examples, {args.epochs} epochs (the first {args.skip} not counted), terminal {args.size} (tmux)",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        tui = [sys.executable, "-m", "cuvae_tui", "--runs", str(runs), "--latent", str(args.latent),
               "--train-size", str(args.train_size), "--epochs", str(args.epochs), "--device", args.device]
        if args.data_dir:
            tui += ["--data-dir", str(Path(args.data_dir).resolve())]
        term = Tmux(f"cuvae-bench-{os.getpid()}", size)
        frozen = False
        ui = freezer = None
        try:
            ui = term.start(tui)
            server = term.server_pid()
            trainer = find_trainer(ui)
            freezer = Freezer(ui)  # after the trainer has started: a child would inherit the UI's cgroup
            print(f"the UI is frozen by {freezer.how}", flush=True)
            run = None
            rows: list[dict] = []  # per epoch: kind and CPU seconds of the UI, tmux and the trainer
            unread = 0  # epochs meant to be headless that ran with the UI (it had not read the parameters)
            def cpus() -> tuple[float, float, float]:
                return cpu_seconds(ui), cpu_seconds(server), cpu_seconds(trainer)

            last = cpus()
            while True:
                if run is None:
                    found = list(runs.glob("*/metrics.jsonl")) if runs.exists() else []
                    run = found[0].parent if found else None
                done = epochs_written(run) if run else []
                if len(done) > len(rows):  # an epoch ended: thaw the UI, it has the parameters to read
                    now = cpus()
                    rows.append({"epoch": len(rows) + 1, "ui": not frozen,
                                 **dict(zip(("ui_cpu", "term_cpu", "trainer_cpu"), (b - a for a, b in zip(last, now))))})
                    if frozen:
                        freezer.thaw()
                        frozen = False
                    if len(rows) >= args.epochs:
                        break
                    if headless(len(rows) + 1, args):  # freeze once the epoch's parameters are read (~2 MB, z = 8)
                        read0, t0 = bytes_read(ui), time.monotonic()
                        expected = 0.99 * param_bytes(run)
                        while bytes_read(ui) - read0 < expected and time.monotonic() - t0 < 5.0:
                            time.sleep(POLL / 5)
                        if bytes_read(ui) - read0 >= expected:
                            freezer.freeze()
                            frozen = True
                        else:  # frozen now, the trainer would wait on the pipe for good: this one runs with the UI
                            unread += 1
                    last = cpus()
                time.sleep(POLL)
            time.sleep(1.0)
            term.keys("q")
            for _ in range(100):
                if not Path(f"/proc/{ui}").exists():
                    break
                time.sleep(0.1)
        finally:
            if freezer is not None:
                if frozen:
                    freezer.thaw()
                freezer.close()
            term.kill()
        metrics = epochs_written(run)

    rate = {m["epoch"]: m["examples_per_s"] for m in metrics}
    counted = [r for r in rows if r["epoch"] > args.skip]
    ratios = block_ratios(counted, rate, args.block)
    ui_rows, hl_rows = [r for r in counted if r["ui"]], [r for r in counted if not r["ui"]]
    for r in counted:
        print(f"epoch {r['epoch']:3d} {'UI      ' if r['ui'] else 'headless'} {rate[r['epoch']]:8,.0f} ex/s | CPU s: "
              f"UI {r['ui_cpu']:.2f}, tmux {r['term_cpu']:.2f}, trainer {r['trainer_cpu']:.2f}")
    med = statistics.median
    if unread:
        print(f"{unread} epochs meant to be headless ran with the UI (it had not read the parameters within 5 s); "
              "blocks with both kinds are left out")
    if not ratios:
        print("no UI block had a headless neighbour: pass more --epochs")
        return 1
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    print(f"UI blocks ({args.block} epochs) over their headless neighbours: median {med(ratios):.3f}, spread "
          f"{min(ratios):.3f}..{max(ratios):.3f}, quartiles {q[0]:.3f}..{q[2]:.3f} over {len(ratios)} UI blocks "
          f"(target >= 0.95); the medians' ratio of the epochs "
          f"{med(rate[r['epoch']] for r in ui_rows) / med(rate[r['epoch']] for r in hl_rows):.3f}")
    ui_cpu = sum(r["ui_cpu"] for r in ui_rows)
    term_cpu = sum(r["term_cpu"] for r in ui_rows)
    trainer_ui = sum(r["trainer_cpu"] for r in ui_rows)
    print(f"over the UI epochs: the UI process {ui_cpu:.2f} CPU s, tmux {term_cpu:.2f}, the trainer {trainer_ui:.2f} "
          f"(UI share {100 * ui_cpu / (ui_cpu + term_cpu + trainer_ui):.1f}%, with tmux "
          f"{100 * (ui_cpu + term_cpu) / (ui_cpu + term_cpu + trainer_ui):.1f}%); trainer CPU per epoch: UI epochs "
          f"{med(r['trainer_cpu'] for r in ui_rows):.2f}, headless {med(r['trainer_cpu'] for r in hl_rows):.2f} (medians); "
          f"load average {load()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
