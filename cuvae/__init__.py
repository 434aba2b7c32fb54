"""cuvae: a hand-written variational autoencoder on NumPy and CuPy.

The public API is a few names, imported lazily so that ``import cuvae`` loads neither CuPy,
numba nor Textual::

    model = cuvae.fit(x_train, x_test, latent=8, epochs=10)   # your own arrays
    model = cuvae.load("runs/RUN")                             # a run of cuvae-train or cuvae-tui
    means, logvars = model.encode(x); images = model.sample(16)

The wings below it: ``nn`` (the math), ``backends`` (where it runs), ``data``, ``engine`` (the
loop), ``measure``, ``cli`` (the command lines); each folder's ``__init__`` says what it may import.
"""

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "fit", "load"]


def __getattr__(name):
    if name in ("fit", "load", "Model"):
        from cuvae import api

        return getattr(api, name)
    raise AttributeError(f"module 'cuvae' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
