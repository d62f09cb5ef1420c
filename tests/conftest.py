import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# An editable install of another checkout may redirect `import pycnn`; the tests test this checkout's source.
_spec = importlib.util.find_spec("pycnn")
if _spec is None or not (_spec.origin or "").startswith(ROOT + os.sep):
    sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (pytest -m cuda on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny inputs: one thread is as fast, and immune to OpenMP spin-waiting when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def randomized(model):
    """`model` in eval mode with non-trivial BatchNorm statistics and affine parameters (and Linear weights), so
    folding errors would show; seeded."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, std=0.1, generator=g)
    return model.eval()
