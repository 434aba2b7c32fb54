"""One run's trainer in a child process: the UI's Python never competes with training for the GIL.

The UI process prepares the run (data, checkpoint: :meth:`session.Session.prepare`) and hands a
picklable :class:`TrainJob` to a spawned child, which builds the backend and the Trainer and sends
the engine's events back over a pipe; the parent sends ``pause``, ``unpause`` and ``stop`` the other
way. Measured (scripts/tui_overhead.py): with the trainer in a thread of the UI process, every
redraw held the GIL the training loop needs between its BLAS calls, and UI-attached epochs ran at
0.6-0.9 of headless.

What crosses the pipe per step is the trainer's own :class:`StepMetrics` (host floats it reads at
its report interval, headless or not), and once per epoch a host copy of the parameters, taken after
the epoch's synchronisation: the UI adds no device synchronisation per step. No Textual here (the
child imports this module).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COMMANDS = ("pause", "unpause", "stop")


@dataclass
class TrainJob:
    """Everything the child needs to build the Trainer (host data only, so it pickles)."""

    config: object  # TrainConfig
    dataset: object  # cuvae.data.base.Dataset
    run_dir: Path
    resume: object  # Checkpoint | None
    device: str

    def build(self, listeners, log=None):
        from cuvae.backends.backend import get_backend
        from cuvae.engine.trainer import Trainer

        backend = get_backend(self.device, log=log)
        return Trainer(self.config, backend, self.dataset, self.run_dir, listeners=listeners, resume=self.resume)


def start_resource_tracker() -> None:
    """Start multiprocessing's helper process now, while sys.stderr is still the real one: spawning it
    passes stderr's descriptor on, and under Textual (whose stand-in has none) that fails."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


class TrainingProcess:
    """The parent's handle: start the child, send commands, read its messages until it ends.

    Messages: ``("event", event)`` for engine events, ``("epoch", EpochEnded, params)`` and
    ``("failed", one_line)``. Commands are safe to send from any thread.
    """

    def __init__(self, job: TrainJob) -> None:
        ctx = multiprocessing.get_context("spawn")  # not fork: the UI process runs threads (asyncio, BLAS, numba)
        self._conn, child_end = ctx.Pipe()
        self._child_end = child_end
        self.process = ctx.Process(target=child_main, args=(job, child_end), name="cuvae-trainer", daemon=True)
        self._send_lock = threading.Lock()
        self.paused = False

    def start(self) -> None:
        self.process.start()
        self._child_end.close()  # the parent keeps only its own end, so the child's exit reads as EOF

    def messages(self):
        """Yield the child's messages until it exits, then reap it (a reader leaving early does not wait)."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                break
            yield message
        self.process.join()
        self._conn.close()

    @property
    def exitcode(self) -> int | None:
        return self.process.exitcode

    def _send(self, command: str) -> None:
        with self._send_lock:
            try:
                self._conn.send(command)
            except (OSError, ValueError):  # the child has ended (or the pipe is closed): nothing to command
                pass

    def pause(self) -> None:
        self.paused = True
        self._send("pause")

    def unpause(self) -> None:
        self.paused = False
        self._send("unpause")

    def stop(self) -> None:
        self.paused = False
        self._send("stop")


def child_main(job: TrainJob, conn) -> None:
    """The child: build the trainer, obey commands, send events; a closed pipe means stop."""
    from cuvae.engine.events import EpochEnded, Notice, SamplesReady
    from cuvae.errors import CuvaeError

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the UI, which stops us by command
    devnull = os.open(os.devnull, os.O_WRONLY)  # the terminal belongs to the UI: nothing may print on it
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    lock = threading.Lock()
    state = {"trainer": None, "stop": False, "paused": False}

    def obey() -> None:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):  # the UI is gone: stop after the current step
                command = "stop"
            with lock:
                state["stop"] |= command == "stop"
                state["paused"] = command == "pause"
                trainer = state["trainer"]
            if trainer is not None and command in COMMANDS:
                getattr(trainer, command)()
            if command == "stop":
                return

    threading.Thread(target=obey, name="commands", daemon=True).start()
    holder = {}

    def send(message) -> None:
        try:
            conn.send(message)
        except (OSError, ValueError):  # the UI is gone
            if "trainer" in holder:
                holder["trainer"].stop()

    def listener(event) -> None:
        if isinstance(event, EpochEnded):
            t = holder["trainer"]
            send(("epoch", event, np.asarray(t.backend.to_host(t.params), dtype=np.float32)))
        elif not isinstance(event, SamplesReady):  # the UI draws its own pictures from the parameters
            send(("event", event))

    try:
        trainer = holder["trainer"] = job.build([listener], log=lambda m: send(("event", Notice(m, "information"))))
        with lock:
            stop, paused = state["stop"], state["paused"]
            state["trainer"] = trainer
        if stop:
            trainer.close()
            return
        if paused:
            trainer.pause()
        trainer.run()
    except CuvaeError as err:
        send(("failed", str(err)))
    except Exception as err:  # noqa: BLE001 - shown in the UI, never as a traceback
        send(("failed", f"unexpected {type(err).__name__}: {err}"))
    finally:
        conn.close()


def lower_priority(niceness: int) -> None:
    """Raise the calling thread's niceness to at least ``niceness`` (Linux keeps one per thread).

    Measured (scripts/tui_overhead.py): niceness for the whole UI buys training nothing, since the UI's
    share stays under its fair share anyway; at 19 the redraw stalled for seconds. Only the pictures and
    diagnostics workers, whose results may wait, use it."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < niceness:
            os.setpriority(os.PRIO_PROCESS, tid, niceness)
    except (AttributeError, OSError):  # not Linux-like, or not allowed: the thread keeps its priority
        pass


def leave_cores_to_training() -> None:
    """One BLAS thread for the UI process's own maths (pictures, diagnostics): the cores are the child's,
    and a second BLAS pool spinning beside the trainer's slows its every product."""
    import numpy  # noqa: F401 - loaded first: threadpoolctl limits only the BLAS libraries already loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")
