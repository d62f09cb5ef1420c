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
