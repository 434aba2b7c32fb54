"""``cuvae-doctor`` / ``python -m cuvae.doctor``: what this machine has, and whether cuvae computes right on it.

It lists the software and hardware cuvae uses, then runs the checks of :mod:`cuvae.backends.selftest`
(CPU) and :mod:`cuvae.backends.selftest_gpu` (GPU, where there is one): one line per check, ok or failed
with the reason and the fix, then a summary. Exit code 0 only when every check that applies passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

EPILOG = """\
examples:
  cuvae-doctor                    # environment, CPU checks, and the GPU checks where CuPy sees a GPU
  cuvae-doctor --gradcheck        # also the model's backward against float64 finite differences
  cuvae-doctor --device gpu       # a missing GPU is a failure (exit 1), not a skip
  cuvae-doctor --json > doctor.json
exit code: 0 when every check that applies passed, 1 when one failed, 2 on a usage error.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cuvae-doctor", description="Check that cuvae runs, and computes right, on "
                                "this machine: CPU path, GPU path (if any), optionally the gradients.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "gpu"], default="auto",
                   help="auto: GPU checks where CuPy sees a GPU, else skipped (default); cpu: CPU checks only; "
                        "gpu: the GPU checks must run (no GPU is a failure)")
    p.add_argument("--gradcheck", action="store_true",
                   help="also check the model's hand-written backward on each backend against float64 finite "
                        "differences; prints the worst relative error per parameter tensor")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the report")
    return p


# ---- the environment -----------------------------------------------------------------------------------------
def environment() -> dict:
    import numpy as np

    env = {"python": platform.python_version(), "python_path": sys.executable, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "numpy": np.__version__}
    try:
        import numba

        from cuvae.backends import cpu_ops

        env["numba"], env["numba_threads"] = numba.__version__, cpu_ops.threads()
    except ImportError as err:
        env["numba"], env["numba_error"] = None, str(err)
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
                       for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        env["blas"] = None
    from cuvae.backends import cuda_env

    env["cuda"] = cuda_env.probe()
    return env


def _blas_line(env) -> str:
    if env["blas"] is None:
        return "unknown (threadpoolctl is not installed)"
    if not env["blas"]:
        return "none found by threadpoolctl"
    return "; ".join(f"{b['internal_api']} {b['version']}, {b['num_threads']} thread"
                     f"{'s' if b['num_threads'] != 1 else ''} ({b['filepath']})" for b in env["blas"])


def environment_lines(env) -> list[tuple[str, str]]:
    c = env["cuda"]
    nf = "not found"
    gpus = "; ".join(f"{d['id']}: {d['name']} (compute {d['compute_capability']}, {d['memory_total_mb']:,} MB, "
                     f"{d['memory_free_mb']:,} MB free)" for d in c["devices"])
    return [
        ("Python", f"{env['python']} ({env['python_path']})"),
        ("NumPy", env["numpy"]),
        ("numba", f"{env['numba']} ({env['numba_threads']} threads)" if env["numba"] else
         f"not importable ({env.get('numba_error')})"),
        ("BLAS", _blas_line(env)),
        ("CPU", f"{env['cpu']}, {env['cpu_count']} logical cores"),
        ("CuPy", c["cupy"] or c.get("cupy_error") or "not installed"),
        ("CUDA driver", c["driver"] or nf),
        ("CUDA runtime", f"{c['runtime']} (CuPy's)" if c["runtime"] else nf),
        ("NVRTC", c["nvrtc"] or nf),
        ("CUDA headers", f"{c['headers']} (CUDA {c.get('headers_version') or 'version unknown'})" if c["headers"] else nf),
        ("cuBLAS", c["cublas"] or nf),
        ("GPU", gpus or (c.get("device_error") or "none visible")),
    ]


# ---- the checks -----------------------------------------------------------------------------------------------
def gpu_skip_reason(env, device: str) -> str | None:
    """Why the GPU checks do not run (None: they do)."""
    from cuvae.backends import cuda_env

    if device == "cpu":
        return "--device cpu"
    c = env["cuda"]
    if c["cupy"] and c["available"]:
        return None
    parts = cuda_env.missing(c)
    what = "; ".join(w for w, _ in parts)
    fixes = list(dict.fromkeys(f for _, f in parts))
    return f"missing {what}; fix: {'; '.join(fixes)}"


def collect(args, env, log=lambda line: None) -> tuple[list, str | None]:
    from cuvae.backends import selftest

    results = []

    def run_all(checks):
        for check in checks:
            r = selftest.run(check)
            results.append(r)
            log(r)

    run_all(selftest.cpu_checks(args.gradcheck))
    reason = gpu_skip_reason(env, args.device)
    if reason is None:
        from cuvae.backends import selftest_gpu

        try:
            checks = selftest_gpu.gpu_checks(args.gradcheck)
        except Exception as err:  # noqa: BLE001 - CuPy present but unusable: one failed line, not a crash
            r = selftest.Result("gpu", "set up the GPU checks", "failed", selftest.one_line(err),
                                "pip install 'cuvae[cuda12]' (or cuda13); check nvidia-smi")
            results.append(r)
            log(r)
        else:
            run_all(checks)
    elif args.device == "gpu":
        r = selftest.Result("gpu", "GPU checks", "failed", f"no usable GPU: {reason}")
        results.append(r)
        log(r)
    else:
        r = selftest.skipped("gpu", "GPU checks", reason)
        results.append(r)
        log(r)
    return results, reason


SECTIONS = {"cpu": "CPU path (NumPy + numba kernels)", "gpu": "GPU path (CuPy, step.cu, cuBLAS)",
            "gradcheck": "gradient check (float64 finite differences)"}


class Printer:
    """Prints each result as it comes (the checks take seconds): a section header when the section changes."""

    def __init__(self, out):
        self.out, self.section = out, None

    def __call__(self, r) -> None:
        if r.section != self.section:
            self.section = r.section
            print(SECTIONS.get(r.section, r.section), file=self.out, flush=True)
        mark = {"ok": "ok     ", "failed": "FAILED ", "skipped": "skipped"}[r.status]
        took = f"  ({r.seconds:.1f} s)" if r.seconds >= 0.05 else ""
        print(f"  {mark} {r.name}: {r.detail}{took}", file=self.out, flush=True)
        if r.status == "failed" and r.fix:
            print(f"          fix: {r.fix}", file=self.out, flush=True)
        if r.section == "gradcheck" and "tensors" in r.figures:
            for name, t in r.figures["tensors"].items():
                print(f"          {name:<8} worst relative error {t['max_rel_err']:.2e}  (abs {t['max_abs_err']:.1e})",
                      file=self.out, flush=True)


def summary(results, reason) -> dict:
    count = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    return {"passed": count["ok"], "failed": count["failed"], "skipped": count["skipped"],
            "gpu_skipped_reason": reason, "ok": count["failed"] == 0}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.perf_counter()
    env = environment()
    if args.json:
        results, reason = collect(args, env)
    else:
        out = sys.stdout
        print(f"cuvae doctor, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", file=out)
        print("environment", file=out)
        for key, value in environment_lines(env):
            print(f"  {key:<13} {value}", file=out)
        out.flush()
        results, reason = collect(args, env, log=Printer(out))
    s = summary(results, reason)
    s["seconds"] = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"environment": env, "checks": [r.to_dict() for r in results], "summary": s}, default=str))
    else:
        failed = [r.name for r in results if r.status == "failed"]
        verdict = (f"FAILED: {', '.join(failed)}" if failed else
                   "every check that applies passed" + (" (GPU checks skipped)" if reason else ""))
        print(f"summary: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped in {s['seconds']:.1f} s; "
              f"{verdict}")
    return 0 if s["ok"] else 1


def cli() -> int:
    from cuvae.engine.options import run_main

    try:
        return run_main(main)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
