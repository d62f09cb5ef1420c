"""Coverage that cannot rot: every ``__global__`` kernel in csrc/cuda must have been launched by the
emulation tests of this session. conftest.py moves this test to the end of the session and it only judges
when the whole emulation suite ran (otherwise it skips, saying why).
"""

from __future__ import annotations

import re

import pytest

import emu_build


def _included_sources() -> set[str]:
    """csrc/cuda files #included by some tests/emu/bind_*.cpp."""
    names = set()
    for path in emu_build.EMU_TESTS.glob("bind_*.cpp"):
        for inc in re.findall(r'#include\s+"([^"]+)"', path.read_text()):
            if "csrc/cuda/" in inc:
                names.add(inc.rsplit("/", 1)[-1])
    return names


def test_every_cuda_kernel_was_launched_in_emulation(emu_module, emu_suite_complete):
    kernels = emu_build.global_kernels()
    assert kernels, "found no __global__ kernel in csrc/cuda: the discovery is broken"
    if emu_suite_complete is not None:
        pytest.skip(f"coverage is judged only when the whole emulation suite runs ({emu_suite_complete})")
    launched = emu_module.launched()
    missing = sorted(k for k in kernels if k not in launched)
    if missing:
        included = _included_sources()
        lines = [f"  {k} ({kernels[k]}{'' if kernels[k] in included else ', not #included by any tests/emu/bind_*.cpp'})"
                 for k in missing]
        pytest.fail("CUDA kernels never launched by the emulation tests:\n" + "\n".join(lines) +
                    "\nAdd a binding in tests/emu/bind_<op>.cpp and a test that runs it (docs/emulation.md).")


def test_kernel_discovery_parses_declarations(tmp_path):
    (tmp_path / "a.cu").write_text(
        '#include "common.cuh"\n'
        "// __global__ void commented_out(int)\n"
        "template <typename T, int ACT>\n"
        "__global__ void __launch_bounds__(256, 2) fwd_kernel(const Params p) {}\n"
        "__global__ void\nplain_kernel(float* x) {}\n"
        "static __global__ __launch_bounds__(128) void bwd_kernel(int n);\n"
        'const char* s = "__global__ void in_string()";\n'
        "__device__ void helper() {}\n")
    assert emu_build.global_kernels(tmp_path) == {"fwd_kernel": "a.cu", "plain_kernel": "a.cu", "bwd_kernel": "a.cu"}
