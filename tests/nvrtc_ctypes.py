"""NVRTC through ctypes, for tests that compile CUDA source without CuPy and without a GPU.

``pip install nvidia-cuda-nvrtc-cu12`` (the ``test`` extra) puts ``libnvrtc.so.12`` under
``site-packages/nvidia/cuda_nvrtc/lib``; a CUDA toolkit's copy is found through ``CUDA_PATH`` or the
loader's search path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import site
from dataclasses import dataclass


class NvrtcUnavailable(RuntimeError):
    pass


def find_nvrtc() -> list[str]:
    cands = []
    for base in [*site.getsitepackages(), site.getusersitepackages()]:
        for sub in ("cuda_nvrtc", "cu13", "cu12"):
            cands += sorted(glob.glob(os.path.join(base, "nvidia", sub, "lib", "libnvrtc.so*")), reverse=True)
    for env in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(env):
            cands += sorted(glob.glob(os.path.join(os.environ[env], "lib64", "libnvrtc.so*")), reverse=True)
    cands += sorted(glob.glob("/usr/local/cuda*/lib64/libnvrtc.so*"), reverse=True)
    if ctypes.util.find_library("nvrtc"):
        cands.append(ctypes.util.find_library("nvrtc"))
    return [c for c in dict.fromkeys(cands) if "builtins" not in c and ".alt." not in c]


def load() -> ctypes.CDLL:
    errors = []
    for path in find_nvrtc():
        try:
            lib = ctypes.CDLL(path)
            lib.nvrtcCompileProgram  # noqa: B018
            lib.path = path
            return lib
        except (OSError, AttributeError) as err:
            errors.append(f"{path}: {err}")
    raise NvrtcUnavailable("no libnvrtc found (pip install nvidia-cuda-nvrtc-cu12)" +
                           (f": {'; '.join(errors)}" if errors else ""))


@dataclass
class Result:
    ok: bool
    log: str
    ptx: str | None
    cubin: bytes | None
    lowered: dict[str, str | None]


def compile_source(lib, src: str, options, name_expressions=(), name="step.cu") -> Result:
    P = ctypes.c_void_p
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    prog = P()

    def check(rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(rc).decode()}")

    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None), "nvrtcCreateProgram")
    try:
        for expr in name_expressions:
            check(lib.nvrtcAddNameExpression(prog, expr.encode()), "nvrtcAddNameExpression")
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        rc = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        buf = ctypes.create_string_buffer(size.value)
        check(lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.value.decode(errors="replace")
        if rc != 0:
            return Result(False, log, None, None, {})
        ptx = cubin = None
        if any(o.startswith(("-arch=compute", "--gpu-architecture=compute")) for o in options):
            check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
            buf = ctypes.create_string_buffer(size.value)
            check(lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
            ptx = buf.value.decode()
        else:
            check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
            buf = ctypes.create_string_buffer(size.value)
            check(lib.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN")
            cubin = buf.raw
        lowered = {}
        for expr in name_expressions:
            out = ctypes.c_char_p()
            rc = lib.nvrtcGetLoweredName(prog, expr.encode(), ctypes.byref(out))
            lowered[expr] = out.value.decode() if rc == 0 and out.value else None
        return Result(True, log, ptx, cubin, lowered)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


_FN = re.compile(r"Compiling entry function '(\w+)'")
_USED = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(log: str) -> dict[str, dict[str, int]]:
    """ptxas -v's lines per kernel: registers, stack frame and spill bytes."""
    out, cur = {}, None
    for line in log.splitlines():
        m = _FN.search(line)
        if m:
            cur = out.setdefault(m.group(1), {})
            continue
        if cur is None:
            continue
        if (m := _SPILL.search(line)):
            cur.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        if (m := _USED.search(line)):
            cur["registers"] = int(m.group(1))
    return out
