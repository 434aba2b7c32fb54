"""The math and nothing else: ops (each forward beside its backward), the MLP and conv VAEs,
the K-sample objectives (average ELBO, IWAE), the flat parameter layout, Adam, finite-difference
gradient checks.

Written once against an array module ``xp`` (NumPy or CuPy) handed in by the caller.
May import: :mod:`cuvae.errors` only.
"""
