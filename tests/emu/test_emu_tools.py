"""tools/emu_vs_gpu.py is import-safe and a no-op without a GPU; its ULP distance is right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import emu_build

spec = importlib.util.spec_from_file_location("emu_vs_gpu", emu_build.ROOT / "tools" / "emu_vs_gpu.py")
emu_vs_gpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(emu_vs_gpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_without_gpu_it_skips_cleanly(capsys):
    assert emu_vs_gpu.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
    assert emu_vs_gpu.main(["--require-gpu"]) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_ulp_diff(dtype):
    a = torch.tensor([1.0, -1.0, 0.0, 2.0, float("nan")], dtype=dtype)
    up = torch.nextafter(a.double(), torch.tensor(float("inf"), dtype=torch.float64)).to(dtype) \
        if dtype == torch.float64 else torch.nextafter(a, torch.tensor(float("inf"), dtype=dtype))
    d = emu_vs_gpu.ulp_diff(a, up).tolist()
    assert d[:4] == [1, 1, 1, 1] and d[4] == 0
    assert emu_vs_gpu.ulp_diff(torch.tensor([0.0], dtype=dtype), torch.tensor([-0.0], dtype=dtype)).item() == 0


def test_gpu_cases_import():
    import gpu_cases

    assert Path(gpu_cases.__file__).parent == emu_build.EMU_TESTS
    names = [case.name for case in gpu_cases.CASES]
    assert names, "tools/emu_vs_gpu.py has no case to compare"
    assert len(set(names)) == len(names), "two GPU cases share a name"
    bindings = {p.stem[len("bind_"):] for p in emu_build.EMU_TESTS.glob("bind_*.cpp")}
    for case in gpu_cases.CASES:  # each case runs an op that has an emulation binding
        assert callable(case.fn) and any(case.name.startswith(op + "_") for op in bindings), case.name
