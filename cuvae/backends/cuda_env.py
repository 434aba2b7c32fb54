"""What the GPU path needs, found or missing: CuPy, a driver and a device, NVRTC, the CUDA headers, cuBLAS.

:func:`probe` never raises and never needs a GPU; :func:`missing` turns its answer into the parts a
user must install, each with its fix. Used by ``--device gpu`` (:mod:`cuvae.backends.backend`) and by
``cuvae-doctor``. Importing this module imports nothing of CuPy; :func:`probe` does, when installed.
"""

from __future__ import annotations

EXTRA = {12: "cuda12", 13: "cuda13"}


def _version(v: int | None) -> str | None:
    """CUDA's 12090 -> "12.9"."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else None


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:200]}" if lines else type(err).__name__


def probe(full: bool = True) -> dict:
    """Versions, paths and devices of the CUDA stack as CuPy would use it (plain values, JSON-ready).

    ``full=False`` skips what opens a context on every device and the cuBLAS search (for ``--device gpu``).
    """
    info: dict = {"cupy": None, "cupy_major_cuda": None, "available": False, "driver": None, "runtime": None,
                  "nvrtc": None, "nvrtc_error": None, "headers": None, "cublas": None, "devices": [],
                  "device_error": None}
    try:
        import cupy
    except ImportError:
        return info
    except Exception as err:  # noqa: BLE001 - a broken install: report it, do not crash the doctor
        info["cupy_error"] = _one_line(err)
        return info
    info["cupy"] = cupy.__version__
    rt = cupy.cuda.runtime
    for key, fn in (("driver", "driverGetVersion"), ("runtime", "runtimeGetVersion")):
        try:
            info[key] = _version(getattr(rt, fn)())
        except Exception:  # noqa: BLE001 - no libcuda: stays None
            pass
    try:  # the CUDA major CuPy was built for: the extra to name
        info["cupy_major_cuda"] = int(rt.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001
        pass
    try:
        info["available"] = bool(cupy.is_available())
    except Exception as err:  # noqa: BLE001
        info["device_error"] = _one_line(err)
    if info["available"] and full:
        try:
            for i in range(rt.getDeviceCount()):
                props = rt.getDeviceProperties(i)
                name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
                with cupy.cuda.Device(i):
                    free, total = rt.memGetInfo()
                info["devices"].append({"id": i, "name": name, "compute_capability": f"{props['major']}.{props['minor']}",
                                        "memory_total_mb": total // 2**20, "memory_free_mb": free // 2**20})
        except Exception as err:  # noqa: BLE001
            info["device_error"] = _one_line(err)
    try:
        from cuda import pathfinder

        info["nvrtc"] = pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception as err:  # noqa: BLE001 - the plain CuPy wheel brings no NVRTC
        info["nvrtc_error"] = _one_line(err)
        try:  # CuPy may still find one its own way (an older CuPy, a system toolkit)
            from cupy.cuda import nvrtc

            info["nvrtc"] = f"loaded by CuPy (NVRTC {'.'.join(map(str, nvrtc.getVersion()))})"
        except Exception:  # noqa: BLE001
            pass
    try:
        from cuda import pathfinder

        info["headers"] = pathfinder.find_nvidia_header_directory("cudart")
    except Exception:  # noqa: BLE001
        pass
    info["headers_version"] = headers_version(info["headers"])
    if full:
        info["cublas"] = _cublas_path()
    return info


def headers_version(include_dir) -> str | None:
    """CUDART_VERSION of ``include_dir/cuda_runtime_api.h`` as "13.0" (None when unreadable)."""
    import re
    from pathlib import Path

    if not include_dir:
        return None
    try:
        text = (Path(include_dir) / "cuda_runtime_api.h").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", text)
    return _version(int(m.group(1))) if m else None


def _cublas_path() -> str | None:
    import ctypes

    try:
        from cuvae.backends.cuda_ops import find_cublas
    except Exception:  # noqa: BLE001 - CuPy broken or absent
        return None
    for path in find_cublas():
        try:
            lib = ctypes.CDLL(path)
            lib.cublasSgemmStridedBatched  # noqa: B018 - the entry point CublasGemm needs
            return path
        except (OSError, AttributeError):
            continue
    return None


def compile_missing(info: dict) -> list[str]:
    """The parts without which CuPy compiles no kernel at all (checked by ``--device gpu``)."""
    out = [] if info.get("nvrtc") else ["NVRTC (libnvrtc)"]
    return out + ([] if info.get("headers") else ["the CUDA headers"])


def extra_for(info: dict) -> str:
    """``cuvae[cuda12]`` or ``cuvae[cuda13]``: the one matching the CuPy installed (12 when unknown)."""
    return f"cuvae[{EXTRA.get(info.get('cupy_major_cuda'), 'cuda12')}]"


def missing(info: dict) -> list[tuple[str, str]]:
    """(what is missing, the fix) for each part of the GPU path that was not found."""
    extra = extra_for(info)
    if info.get("cupy") is None:
        why = info.get("cupy_error") or "CuPy (not installed)"
        return [(why, f"pip install '{extra}' (CUDA 12 driver) or 'cuvae[cuda13]' (CUDA 13 driver)")]
    out = []
    if not info.get("driver"):
        out.append(("an NVIDIA driver (libcuda), so no CUDA device", "install the NVIDIA driver (nvidia-smi shows it)"))
    elif not info.get("available"):
        out.append(("a visible CUDA device" + (f" ({info['device_error']})" if info.get("device_error") else ""),
                    "check nvidia-smi and CUDA_VISIBLE_DEVICES"))
    if not info.get("nvrtc"):
        out.append(("NVRTC (libnvrtc, CuPy compiles every kernel with it)", f"pip install '{extra}'"))
    if not info.get("headers"):
        out.append(("the CUDA headers (CuPy 14 needs them to compile)", f"pip install '{extra}'"))
    elif info.get("headers_version") and info.get("cupy_major_cuda") and \
            int(info["headers_version"].split(".")[0]) != info["cupy_major_cuda"]:
        out.append((f"CUDA {info['cupy_major_cuda']} headers (found CUDA {info['headers_version']}'s in "
                    f"{info['headers']}, which CuPy for CUDA {info['cupy_major_cuda']} may fail to compile with)",
                    f"pip install '{extra}'"))
    if not info.get("cublas"):
        out.append(("cuBLAS (libcublas)", f"pip install '{extra}'"))
    return out
