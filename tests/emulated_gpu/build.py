"""Compile CUDA source (step.cu or a copy of it) for the emulated device with the system C++ compiler.

The source is compiled unchanged behind ``cuda_emu.h``; for each ``extern "C" __global__`` kernel a
generated wrapper ``cuvae_emu_launch_<name>(grid, block, args)`` unpacks a CUDA-style argument array
(``void**``, one pointer per parameter, as cuLaunchKernel takes it) and runs the kernel on the
emulator. :func:`kernel_signatures` gives each parameter's C type, which the CuPy stand-in uses to
check the arguments the way the values CuPy would marshal must fit them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = HERE / "cuda_emu.h"
RUNTIME = HERE / "emu_runtime.cpp"
CUBLAS = HERE / "cublas_ref.c"

# C parameter types of step.cu -> the NumPy dtype an argument must have (pointers: of the pointee)
CTYPES = {"float": "float32", "double": "float64", "int": "int32", "unsigned int": "uint32", "long long": "int64",
          "unsigned long long": "uint64"}

VARIANTS = {  # compiler flags, flush-to-zero at run time
    # plain IEEE float: no contraction, denormals kept (the NumPy twins' arithmetic)
    "ieee": (["-ffp-contract=off"], False),
    # what a GPU does by default (--fmad=true) plus flush-to-zero (--ftz=true, as --use_fast_math would)
    "fma-ftz": (["-ffp-contract=fast", "-mfma"], True),
}


class BuildError(RuntimeError):
    pass


def fma_ftz_supported() -> str | None:
    """None if the "fma-ftz" variant can be built and run here, else why not."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return f"the fma-ftz variant sets x86 MXCSR bits; this is {platform.machine()}"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "cannot read /proc/cpuinfo to see whether the CPU has FMA"
    return None if " fma" in flags else "this CPU has no FMA instructions"


@dataclass(frozen=True)
class Param:
    ctype: str  # e.g. "float", "long long"
    pointer: bool
    name: str

    @property
    def dtype(self) -> str:
        return CTYPES[self.ctype]

    def __str__(self):
        return f"{self.ctype}{'*' if self.pointer else ''} {self.name}"


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Param, ...]
    barrier: bool  # calls __syncthreads: run with one std::thread per CUDA thread


_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)\s*\{')


def _strip_comments(src: str) -> str:
    src = re.sub(r"/\*.*?\*/", " ", src, flags=re.S)
    return re.sub(r"//[^\n]*", "", src)


def kernel_signatures(src: str) -> dict[str, Kernel]:
    code = _strip_comments(src)
    out = {}
    for m in _KERNEL.finditer(code):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        body = code[m.end():i]
        params = []
        for raw in m.group(2).split(","):
            p = " ".join(raw.replace("__restrict__", " ").replace("const ", " ").replace("*", " * ").split())
            pm = re.fullmatch(r"(.+?)\s*(\*?)\s*(\w+)", p)
            if not pm or pm.group(1) not in CTYPES:
                raise BuildError(f"kernel {m.group(1)}: cannot emulate parameter {raw.strip()!r}")
            params.append(Param(pm.group(1), bool(pm.group(2)), pm.group(3)))
        out[m.group(1)] = Kernel(m.group(1), tuple(params), "__syncthreads" in body)
    return out


def _wrappers(kernels: dict[str, Kernel]) -> str:
    lines = []
    for k in kernels.values():
        args = ", ".join(f"*({p.ctype}{'*' if p.pointer else ''}*)a[{i}]" for i, p in enumerate(k.params))
        lines.append(f"static void cuvae_emu_body_{k.name}(void** a) {{ {k.name}({args}); }}\n"
                     f'extern "C" int cuvae_emu_launch_{k.name}(const unsigned* grid, const unsigned* block, void** a) {{\n'
                     f"    return cuvae_emu_launch(grid, block, {int(k.barrier)}, cuvae_emu_body_{k.name}, a, "
                     f"__start_cuvae_shared, __stop_cuvae_shared);\n}}\n")
    return "\n".join(lines)


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _run(cmd, what):
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"{what} failed:\n{res.stderr[-4000:]}")


def build_runtime(cache: Path) -> Path:
    """The schedulers (emu_runtime.cpp): one shared library every build of the kernels links to."""
    key = hashlib.sha256(RUNTIME.read_bytes()).hexdigest()[:16]
    out = cache / f"runtime-{key}" / "libcuvae_emu.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        _run([compiler(), "-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", str(RUNTIME), "-o", str(tmp)],
             "compiling the emulator runtime")
        os.replace(tmp, out)
    return out


def build_kernels(src: str, cache: Path, variant: str = "ieee") -> tuple[Path, dict[str, Kernel]]:
    """Compile ``src`` for the emulator (cached by content in ``cache``); returns (.so path, kernels)."""
    kernels = kernel_signatures(src)
    flags = VARIANTS[variant][0]
    runtime = build_runtime(cache)
    key = hashlib.sha256("\0".join([src, HEADER.read_text(), str(runtime), *flags]).encode()).hexdigest()[:16]
    out = cache / f"kernels-{variant}-{key}.so"
    if not out.exists():
        work = cache / f"build-{key}-{variant}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "kernels.cu").write_text(src)
        (work / "main.cpp").write_text(f'#include "{HEADER}"\n#include "kernels.cu"\n\n{_wrappers(kernels)}')
        tmp = work / "lib.so"
        _run([compiler(), "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wno-unknown-pragmas", *flags,
              "-Wl,-Bsymbolic", "-x", "c++", str(work / "main.cpp"), "-x", "none", str(runtime),
              f"-Wl,-rpath,{runtime.parent}", "-o", str(tmp)], "compiling the kernels")
        os.replace(tmp, out)
    return out, kernels


def build_cublas(cache: Path) -> Path:
    """The reference cuBLAS, named as a real one so it is found where CuPy's would be."""
    key = hashlib.sha256(CUBLAS.read_bytes()).hexdigest()[:16]
    out = cache / f"cublas-{key}" / "libcublas.so.12"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        _run([os.environ.get("CC") or shutil.which("gcc") or compiler(), "-O2", "-fPIC", "-shared", "-Wall", "-x",
              "c" if (os.environ.get("CC") or shutil.which("gcc")) else "c++", str(CUBLAS), "-o", str(tmp)],
             "compiling the reference cuBLAS")
        os.replace(tmp, out)
    return out
