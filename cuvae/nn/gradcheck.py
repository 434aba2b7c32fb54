"""Central finite differences in float64, used by the tests to check every gradient."""

from __future__ import annotations

import numpy as np


def numerical_grad(f, x: np.ndarray, indices, h: float = 1e-6) -> np.ndarray:
    """d f / d x[i] for the flat ``indices`` of x, by central differences (x is restored)."""
    flat = x.reshape(-1)
    out = np.empty(len(indices))
    for k, i in enumerate(indices):
        old = flat[i]
        flat[i] = old + h
        fp = float(f())
        flat[i] = old - h
        fm = float(f())
        flat[i] = old
        out[k] = (fp - fm) / (2 * h)
    return out


def assert_grad_close(analytic, numeric, name: str, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    analytic, numeric = np.asarray(analytic, np.float64), np.asarray(numeric, np.float64)
    err = np.abs(analytic - numeric)
    tol = atol + rtol * np.abs(numeric)
    if np.any(err > tol):
        k = int(np.argmax(err - tol))
        raise AssertionError(
            f"gradient of {name} differs from finite differences at entry {k}: "
            f"analytic {analytic[k]:.10g}, numeric {numeric[k]:.10g} (max abs err {err.max():.3g})"
        )
