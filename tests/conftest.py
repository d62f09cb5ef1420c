import importlib.util
import os
import shutil
import sys
import tempfile

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# An editable install of another checkout may redirect `import pycnn`; the tests test this checkout's source.
_spec = importlib.util.find_spec("pycnn")
if _spec is None or not (_spec.origin or "").startswith(ROOT + os.sep):
    sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]


# The kernel choices the tests' networks measure (kernels="auto") are timed on a machine busy with the tests: kept
# out of the user's cache (pycnn.dispatch.cache_path), where they would steer the user's own runs (seen: races
# recorded at 100-300x their idle times, choosing the slower kernel). The subprocesses of CLI tests inherit it.
_KERNEL_CACHE = tempfile.mkdtemp(prefix="pycnn-test-kernel-cache-")
os.environ["PYCNN_CACHE_DIR"] = _KERNEL_CACHE


def pytest_unconfigure(config):
    shutil.rmtree(_KERNEL_CACHE, ignore_errors=True)


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


@pytest.fixture
def tiny_space(tmp_path):
    """A tiny AnyNet space (one block per stage, widths 8 or 16) so trials take a second."""
    path = tmp_path / "tiny.arch"
    path.write_text("""use anynet
space tiny of anynet(stem_width = 8) {
    sample d1..d4 = choice(1)
    sample w1..w4 = int(8, 16, q=8)
    sample b1..b4 = choice(1.0)
    sample g1..g4 = choice(8)
    non_decreasing w1..w4
}
""")
    return path
