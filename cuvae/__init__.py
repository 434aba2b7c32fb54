"""cuvae: a hand-written variational autoencoder on NumPy and CuPy.

The public API is a few names, imported lazily so that ``import cuvae`` loads neither CuPy,
numba nor Textual::

    model = cuvae.fit(x_train, x_test, latent=8, epochs=10)   # your own arrays
    model = cuvae.load("runs/RUN")                             # a run of cuvae-train or cuvae-tui
    means, logvars = model.encode(x); images = model.sample(16)

The wings below it: ``nn`` (the math), ``backends`` (where it runs), ``data``, ``engine`` (the
loop), ``measure``, ``cli`` (the command lines); each folder's ``__init__`` says what it may import.
"""

import os

# OpenBLAS keeps its worker threads spinning for about 0.1 s after every product (2**28 cycles). Training
# calls a product every few hundred microseconds, so on a small machine the spinning worker holds a core
# all the time: cuvae-tui's drawing, the conv layers' parallel numba loops and anything else must then
# preempt a thread the next product waits for. 2**4 cycles lets it sleep at once; headless training
# runs as fast either way (measured: 19-27k examples/s both, full MNIST, 2 cores). OpenBLAS reads it
# once, when NumPy loads it, so it counts only where cuvae is imported first (every command line, the
# TUI's training child); a value set by the user is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "fit", "load"]


def __getattr__(name):
    if name in ("fit", "load", "Model"):
        from cuvae import api

        return getattr(api, name)
    raise AttributeError(f"module 'cuvae' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
