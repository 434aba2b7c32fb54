"""cuvae: a hand-written variational autoencoder on NumPy and CuPy.

Importing the package loads neither CuPy nor Textual; the array backend is
chosen once, at the edge (``cuvae.backends.backend.get_backend``), and passed in.
"""

__version__ = "0.1.0"
