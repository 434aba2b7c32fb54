"""step.cu and conv.cu compile, as CudaKernels / ConvCudaKernels compile them at run time, for the GPUs cuvae
targets: no GPU needed.

NVRTC (``nvidia-cuda-nvrtc-cu12``, in the ``test`` extra) through ctypes, with CudaKernels' own options
(``cuvae.backends.kernels.OPTIONS``) plus the architecture CuPy would add: PTX for compute_80 and a
cubin for sm_90, the latter through ptxas with ``-v``, ``-warn-spills`` and ``-warn-lmem-usage``. Any
error, warning, missing kernel or spill fails. Skips (saying why) where NVRTC is not installed.
"""

import pytest

import nvrtc_ctypes
from cuvae.backends.kernels import CONV_KERNELS, KERNELS, OPTIONS, source

PTXAS = ("-Xptxas=-v", "-Xptxas=-warn-spills", "-Xptxas=-warn-lmem-usage")
TARGETS = {"compute_80": ("-arch=compute_80",), "sm_90": ("-arch=sm_90", *PTXAS)}
SOURCES = {"step.cu": KERNELS, "conv.cu": CONV_KERNELS}


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return nvrtc_ctypes.load()
    except nvrtc_ctypes.NvrtcUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def compiled(nvrtc):
    return {(f, t): nvrtc_ctypes.compile_source(nvrtc, source(f), [*OPTIONS, *opts], SOURCES[f], name=f)
            for f in SOURCES for t, opts in TARGETS.items()}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("file", list(SOURCES))
def test_kernels_compile_without_errors_or_warnings(compiled, file, target):
    res = compiled[file, target]
    assert res.ok, f"{file} does not compile for {target}:\n{res.log}"
    problems = [line for line in res.log.splitlines() if "warning" in line.lower() or "error" in line.lower()]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("file", list(SOURCES))
def test_every_kernel_is_in_the_module(compiled, file, target):
    res, kernels = compiled[file, target], SOURCES[file]
    assert res.lowered == {k: k for k in kernels}  # extern "C": CuPy's get_function(name) finds each by name
    if res.ptx is not None:
        missing = [k for k in kernels if f".entry {k}(" not in res.ptx]
    else:
        missing = [k for k in kernels if k.encode() + b"\0" not in res.cubin]
    assert not missing


@pytest.mark.parametrize("file", list(SOURCES))
def test_no_kernel_spills_registers_on_sm90(compiled, file):
    report = nvrtc_ctypes.ptxas_report(compiled[file, "sm_90"].log)
    assert set(report) == set(SOURCES[file]), sorted(report)
    spills = {k: v for k, v in report.items() if v["spill_stores"] or v["spill_loads"] or v["stack"]}
    assert not spills, spills
    print(f"{file} sm_90 ptxas:", {k: v["registers"] for k, v in sorted(report.items())})


def test_a_broken_kernel_fails_the_compile_test(nvrtc):
    """The checks bite: an undeclared name fails the compile; cosf of an unbounded angle (the slow argument
    reduction, as step.cu had before sincospif) is the local-memory warning ptxas reports."""
    bad = nvrtc_ctypes.compile_source(nvrtc, source().replace("float t = 0.0f;", "float t = 0.0f + oops;"),
                                      [*OPTIONS, "-arch=compute_80"], KERNELS)
    assert not bad.ok and "oops" in bad.log
    spilly = nvrtc_ctypes.compile_source(nvrtc, source().replace(
        "    out[i] = r0 * c0;", "    out[i] = r0 * cosf(6.283185307179586f * r1);"),
        [*OPTIONS, *TARGETS["sm_90"]], KERNELS)
    assert spilly.ok and "Local memory used for function 'normal_philox'" in spilly.log
