"""Where the math runs: the backend choice (made once, at the edge), numba CPU kernels, CuPy ops,
the CUDA sources with their NumPy twins (``kernels/``), the device-resident captured step (the MLP's
and the conv model's) and k models at once.

May import: :mod:`cuvae.nn`, :mod:`cuvae.errors`.
"""
