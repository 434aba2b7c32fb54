"""The checks behind ``cuvae-doctor``: each backend's ops against NumPy's, a step against NumpyOps',
the time of a step, and the model's backward against float64 finite differences.

A :class:`Check` is a name, a function and the fix to print when it fails; :func:`run` turns it into a
:class:`Result` (ok / failed with the reason / skipped), never raising. The GPU checks are in
:mod:`cuvae.backends.selftest_gpu`. Everything here takes the ops (and ``to_dev``/``to_host``) as
arguments, so the same comparison serves NumbaOps and CupyOps.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from cuvae.nn.model import VAE, Arch
from cuvae.nn.ops import NumpyOps
from cuvae.nn.optim import Adam

CHAPTER = Arch(hidden=(256, 128), latent=8, likelihood="gaussian")  # the chapter recipe's model
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


class CheckFailed(Exception):
    """A check's own verdict: ``str`` is the reason (one line)."""


@dataclass
class Check:
    section: str
    name: str
    fn: Callable[[], tuple[str, dict]]  # -> (one-line detail, figures); raises on failure
    fix: str = ""


@dataclass
class Result:
    section: str
    name: str
    status: str  # "ok", "failed" or "skipped"
    detail: str
    fix: str = ""
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if isinstance(err, (CheckFailed, AssertionError)) and lines:
        return lines[0][:300]
    return f"{type(err).__name__}: {lines[0][:300]}" if lines else type(err).__name__


def run(check: Check) -> Result:
    t0 = time.perf_counter()
    try:
        detail, figures = check.fn()
    except Exception as err:  # noqa: BLE001 - any failure is this check's verdict, never the doctor's crash
        return Result(check.section, check.name, "failed", one_line(err), check.fix, time.perf_counter() - t0)
    return Result(check.section, check.name, "ok", detail, "", time.perf_counter() - t0, figures)


def skipped(section: str, name: str, reason: str, fix: str = "") -> Result:
    return Result(section, name, "skipped", reason, fix)


# ---- ops against NumpyOps ------------------------------------------------------------------------------
def _cases(dt, rng):
    """(op name, argument list) pairs covering every op NumbaOps/CupyOps override, as the model calls them."""
    f = lambda *s, scale=1.0: (rng.normal(size=s) * scale).astype(dt)  # noqa: E731
    logits = f(6, 50, scale=8.0)
    logits[0, :6] = [-800.0, 800.0, 0.0, -88.5, 87.9, -1e-8]  # saturation, the clamp and the origin
    x = rng.uniform(size=(6, 50)).astype(dt)
    head = f(5, 8, scale=2.0)  # mean | logvar as the views of one head, as the model has them
    e = lambda *s: np.empty(s, dt)  # noqa: E731
    return [
        ("linear", [f(7, 5), f(5, 3), f(3), e(7, 3)]),
        ("linear_backward", [f(7, 3), f(7, 5), f(5, 3), e(5, 3), e(3), e(7, 5)]),
        ("relu", [f(9, 11)]),
        ("relu_backward", [f(9, 11), np.maximum(f(9, 11), 0)]),
        ("sigmoid", [logits, e(6, 50)]),
        ("bernoulli_nll", [logits, x, e(6, 50)]),
        ("sse", [logits, x, e(6, 50)]),
        ("bernoulli_nll_grad", [logits, x, 0.37, e(6, 50)]),
        ("sse_grad", [logits, x, 0.37, e(6, 50)]),
        ("reparameterize", [head[:, :4], head[:, 4:], f(5, 4), e(5, 4)]),
        ("reparameterize_backward", [f(5, 4), head[:, 4:], f(5, 4), e(5, 4), e(5, 4)]),
        ("kl", [head[:, :4], head[:, 4:]]),
        ("kl_grad_add", [head[:, :4], head[:, 4:], 0.3, f(5, 4), f(5, 4)]),
        ("adam", [f(1001), f(1001), f(1001, scale=0.1), np.abs(f(1001, scale=0.01)), e(1001), 1e-2, 0.9, 0.999,
                  1e-8, 3]),
    ]


SCRATCH = {"bernoulli_nll": 2, "sse": 2, "adam": 4}  # an argument an op may use as scratch: not compared


def compare_ops(ops, dtypes=(np.float32, np.float64), to_dev=np.asarray, to_host=np.asarray) -> tuple[str, dict]:
    """Every overridden op of ``ops`` against NumpyOps on the same inputs: the return value and every array
    argument afterwards (the ops write in place). Raises CheckFailed naming the first op that differs."""
    ref, worst = NumpyOps(), {}
    for dt in dtypes:
        tol = TOL[dt]
        for name, args in _cases(dt, np.random.default_rng(0)):
            want_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
            want = getattr(ref, name)(*want_args)
            got_args = [to_dev(a.copy()) if isinstance(a, np.ndarray) else a for a in args]
            got = getattr(ops, name)(*got_args)
            scratch = SCRATCH.get(name)
            pairs = [(to_host(g), w) for i, (g, w) in enumerate(zip(got_args, want_args))
                     if isinstance(w, np.ndarray) and i != scratch]
            if (want is None) != (got is None):
                raise CheckFailed(f"{name} returns {'nothing' if got is None else 'a value'}, NumpyOps' does not")
            if want is not None:
                pairs.append((to_host(got), want))
            for g, w in pairs:
                g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
                scale = max(1.0, float(np.abs(w).max(initial=0)))
                atol = tol["atol"] * (scale if dt == np.float32 else 1) + (1e-6 * scale if dt == np.float32 else 0)
                rtol = tol["rtol"] * (10 if name == "adam" else 1)
                if g.shape != w.shape or not np.isfinite(g).all() or not np.allclose(g, w, rtol=rtol, atol=atol):
                    err = float(np.max(np.abs(g - w))) if g.shape == w.shape else float("nan")
                    raise CheckFailed(f"{name} ({np.dtype(dt).name}) differs from NumpyOps: max abs error {err:.3g}")
                worst[name] = max(worst.get(name, 0.0), float(np.max(np.abs(g - w) / (atol + rtol * np.abs(w)))))
    names = sorted(worst)
    top = max(worst.values(), default=0.0)
    kinds = " and ".join(np.dtype(d).name for d in dtypes)
    return (f"{len(names)} ops agree in {kinds} (worst at {top:.2f} of the tolerance)",
            {"ops": names, "worst_fraction_of_tolerance": top})


# ---- a whole training step against NumpyOps' ----------------------------------------------------------------
def step_vs_numpy(ops, dtype=np.float32, steps: int = 3, batch: int = 64, to_dev=np.asarray,
                  to_host=np.asarray) -> tuple[str, dict]:
    """``steps`` steps of the chapter model (loss, gradients, Adam) on ``ops`` and on NumpyOps, same weights
    and eps: losses, first gradients and final parameters agree (float32: Adam moves a parameter whose
    gradient rounds to the other sign by up to 2 lr, so parameters are compared to a tenth of the lr)."""
    rng = np.random.default_rng(1)
    xs = rng.uniform(size=(steps, batch, CHAPTER.in_dim)).astype(dtype)
    epss = rng.standard_normal((steps, batch, CHAPTER.latent)).astype(dtype)
    lr, out = 1e-3, {}
    for key, o, dev, host in (("ops", ops, to_dev, to_host), ("ref", NumpyOps(), np.asarray, np.asarray)):
        model = VAE(CHAPTER, o, dtype)
        p = dev(model.initial_params("glorot", 0))
        g = o.xp.zeros_like(p)
        P, G = model.layout.views(p), model.layout.views(g)
        adam = Adam(o, p.size, dtype, lr=lr)
        losses, first = [], None
        for x, eps in zip(xs, epss):
            losses.append([float(v) for v in model.loss_and_grad(P, G, dev(x), dev(eps), 0.9)])
            if first is None:
                first = np.array(host(g), np.float64)
            adam.step(p, g)
        out[key] = (np.array(losses), np.asarray(host(p), np.float64), first)
    (la, pa, ga), (lb, pb, gb) = out["ops"], out["ref"]
    f32 = np.dtype(dtype) == np.float32
    loss_tol, grad_tol, p_atol = (1e-4, 1e-3, 0.1 * lr) if f32 else (1e-10, 1e-8, 1e-10)
    rel = float(np.max(np.abs(la - lb) / np.maximum(np.abs(lb), 1e-6)))
    gerr = float(np.max(np.abs(ga - gb)) / max(float(np.abs(gb).max()), 1e-30))
    perr = float(np.max(np.abs(pa - pb)))
    name = np.dtype(dtype).name
    if not np.allclose(la, lb, rtol=loss_tol, atol=1e-6 if f32 else 1e-12):
        raise CheckFailed(f"{name}: losses differ from NumpyOps' (worst relative error {rel:.2g})")
    if gerr > grad_tol:
        raise CheckFailed(f"{name}: gradients differ from NumpyOps' ({gerr:.2g} of the largest gradient)")
    if perr > p_atol + (0 if f32 else 1e-8 * float(np.abs(pb).max())):
        raise CheckFailed(f"{name}: parameters after {steps} Adam steps differ (max abs error {perr:.2g})")
    return (f"{name}, {steps} steps of {CHAPTER.describe()} at batch {batch}: losses within {rel:.1e} relative, "
            f"parameters within {perr:.1e}", {"loss_rel_err": rel, "grad_rel_err": gerr, "param_abs_err": perr})


def step_vs_numpy_both(ops, **kw) -> tuple[str, dict]:
    d32, f32 = step_vs_numpy(ops, np.float32, **kw)
    d64, f64 = step_vs_numpy(ops, np.float64, **kw)
    return f"{d32}; {d64.split(',')[0]}: losses within {f64['loss_rel_err']:.1e}", {"float32": f32, "float64": f64}


def time_cpu_step(ops, batch: int = 100, steps: int = 30) -> tuple[str, dict]:
    """ms per training step (gather-free: the batch and eps preloaded) of the chapter model on ``ops``."""
    model = VAE(CHAPTER, ops, np.float32)
    p = model.initial_params("glorot", 0)
    g = np.zeros_like(p)
    P, G = model.layout.views(p), model.layout.views(g)
    adam = Adam(ops, p.size, np.float32)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch, CHAPTER.in_dim)).astype(np.float32)
    eps = rng.standard_normal((batch, CHAPTER.latent)).astype(np.float32)

    def step():
        model.loss_and_grad(P, G, x, eps, 1.0)
        adam.step(p, g)

    for _ in range(2):
        step()
    best = float("inf")
    for _ in range(3):  # best of 3 rounds of up to steps // 3 steps, a round cut at 0.5 s on a busy machine
        t0, done = time.perf_counter(), 0
        while done < steps // 3 and (done == 0 or time.perf_counter() - t0 < 0.5):
            step()
            done += 1
        best = min(best, (time.perf_counter() - t0) * 1e3 / done)
    load, cores = _load(), os.cpu_count() or 1
    busy = f"; the machine is busy (load average {load:.1f} on {cores} cores)" if load and load > cores else ""
    return (f"{CHAPTER.describe()}, batch {batch}: {best:.2f} ms a step ({best * 600 / 1e3:.2f} s a "
            f"60,000-image epoch){busy}", {"batch": batch, "ms_per_step": best, "s_per_epoch": best * 600 / 1e3,
                                           "load_average": load, "cpu_count": cores})


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):  # not on every platform
        return None


# ---- the hand-written backward against float64 finite differences ---------------------------------------
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-7  # those of cuvae.nn.gradcheck.assert_grad_close


def gradcheck(ops, arch: Arch = CHAPTER, per_tensor: int = 6, batch: int = 4, seed: int = 0,
              to_dev=np.asarray) -> list[tuple[str, float, float, bool]]:
    """(tensor, worst relative error, worst abs error, within tolerance) for each parameter tensor of ``arch``
    on ``ops`` in float64, against central differences at ``per_tensor`` random entries of each."""
    from cuvae.nn.gradcheck import numerical_grad

    rng = np.random.default_rng(seed)
    model = VAE(arch, ops, np.float64)
    flat = to_dev(model.initial_params("glorot", seed))
    grads = ops.xp.zeros_like(flat)
    P, G = model.layout.views(flat), model.layout.views(grads)
    x = to_dev(rng.uniform(size=(batch, arch.in_dim)))
    eps = to_dev(rng.standard_normal((batch, arch.latent)))
    beta = 0.8
    model.loss_and_grad(P, G, x, eps, beta)

    def f():
        r, k = model.losses(P, x, eps)
        return float(r.mean() + beta * k.mean())

    rows = []
    for name in P:
        n = int(np.prod(P[name].shape))
        idx = rng.choice(n, size=min(n, per_tensor), replace=False)
        analytic = np.asarray(_host(G[name]), np.float64).reshape(-1)[idx]
        numeric = numerical_grad(f, P[name], idx)
        err = np.abs(analytic - numeric)
        rel = err / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), 1e-8)
        rows.append((name, float(rel.max()), float(err.max()),
                     bool(np.all(err <= GRAD_ATOL + GRAD_RTOL * np.abs(numeric)))))
    return rows


def _host(a):
    return a.get() if hasattr(a, "get") else a


def gradcheck_check(ops, label: str, to_dev=np.asarray) -> tuple[str, dict]:
    rows = gradcheck(ops, to_dev=to_dev)
    table = {name: {"max_rel_err": rel, "max_abs_err": ab, "ok": ok} for name, rel, ab, ok in rows}
    bad = [name for name, *_, ok in rows if not ok]
    worst = max(rows, key=lambda r: r[1])
    if bad:
        raise CheckFailed(f"{label}: {', '.join(bad)} differ from finite differences beyond {GRAD_RTOL:g} relative "
                          f"+ {GRAD_ATOL:g} (worst {worst[0]}: relative error {worst[1]:.2g})")
    return (f"{label}, {CHAPTER.describe()} in float64: all {len(rows)} tensors agree (worst relative error "
            f"{worst[1]:.1e}, {worst[0]})", {"tensors": table})


# ---- the CPU section ----------------------------------------------------------------------------------------
def cpu_checks(gradcheck_too: bool = False) -> list[Check]:
    try:
        from cuvae.backends.cpu_ops import NumbaOps
    except ImportError as err:
        missing = str(err)

        def no_numba():
            raise CheckFailed(f"numba is not importable ({missing}); the CPU path runs on plain NumPy ops, about 2x "
                              f"slower")

        ops, fast = NumpyOps(), [Check("cpu", "numba kernels vs NumPy ops", no_numba, "pip install numba")]
    else:
        ops = NumbaOps()
        fast = [Check("cpu", "numba kernels vs NumPy ops", lambda: compare_ops(ops),
                      "report it: a numba kernel disagrees with its NumPy twin (use --device cpu with numba removed "
                      "meanwhile)")]
    checks = fast + [
        Check("cpu", "training step vs NumpyOps", lambda: step_vs_numpy_both(ops),
              "report it: the CPU step disagrees with the NumPy specification"),
        Check("cpu", "time a step", lambda: time_cpu_step(ops)),
    ]
    if gradcheck_too:
        checks.append(Check("gradcheck", "backward vs finite differences (CPU)",
                            lambda: gradcheck_check(ops, type(ops).__name__),
                            "report it: a hand-written gradient is wrong on this backend"))
    return checks


def time_captured_step(st, steps: int, batch: int, rounds: int = 1, before_epoch=None) -> tuple[float, np.ndarray, str]:
    """ms per step of a device step (DeviceStep or ConvDeviceStep): the best of ``rounds`` epochs of
    replays after epoch 1 captured its graph (each epoch's first step is not timed); returns (ms, the
    last loss sums, "gemm kind, graph or not"). ``before_epoch()`` runs before each epoch. Closes the step."""
    best = float("inf")
    try:
        for epoch in range(1, rounds + 2):
            if before_epoch is not None:
                before_epoch()
            st.start_epoch(epoch, np.ones(steps, np.float32), (epoch - 1) * steps)
            st.step(batch)
            st.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps - 1):
                st.step(batch)
            st.synchronize()
            if epoch > 1:
                best = min(best, (time.perf_counter() - t0) * 1e3 / (steps - 1))
        return best, st.read_sums(), f"{st.gemm_kind}, {'graph' if st.use_graph else 'no graph'}"
    finally:
        st.close()
