"""Fixtures for the emulation tests (CUDA kernels run on the CPU, see docs/emulation.md).

* ``emu_module``: the test-only extension, built once per session (cached on disk in build/emu).
* ``emu``: the same module, with the test run once per scheduling order in ``ORDERS``; use it for every
  kernel test, so a missing ``__syncthreads`` shows up as a failure under some order.
* ``emu_forward``: the module under the forward order only (for slow cases).
* ``schedule(mod, order, seed)``: context manager that switches the order temporarily.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import emu_build  # noqa: E402

# Thread orders between barriers: forward (thread 0 first), reverse, and two seeded shuffles.
ORDERS = [("forward", 0), ("reverse", 0), ("shuffle", 1), ("shuffle", 2)]
ORDER_IDS = ["forward", "reverse", "shuffle1", "shuffle2"]

COVERAGE_TEST = "test_emu_coverage.py"


@contextlib.contextmanager
def schedule(mod, order: str, seed: int = 0):
    previous = mod.get_schedule()
    mod.set_schedule(order, seed)
    try:
        yield mod
    finally:
        mod.set_schedule(*previous)


@pytest.fixture(scope="session")
def emu_module():
    return emu_build.build()


@pytest.fixture(params=ORDERS, ids=ORDER_IDS)
def emu(request, emu_module):
    with schedule(emu_module, *request.param):
        yield emu_module


@pytest.fixture
def emu_forward(emu_module):
    with schedule(emu_module, "forward", 0):
        yield emu_module


# ---- the coverage test runs last and only when the whole emulation suite ran --------------------------------
def pytest_collection_modifyitems(session, config, items):
    here = Path(__file__).resolve().parent
    last = [it for it in items if it.path.name == COVERAGE_TEST and it.path.parent == here]
    rest = [it for it in items if it not in last]
    items[:] = rest + last
    collected = {it.path.name for it in rest if it.path.parent == here}
    expected = {p.name for p in here.glob("test_*.py")} - {COVERAGE_TEST}
    config.stash[_partial_key] = sorted(expected - collected)


def pytest_deselected(items):
    here = Path(__file__).resolve().parent
    for it in items:
        if it.path.parent == here and it.path.name != COVERAGE_TEST:
            it.config.stash[_deselected_key] = True


_partial_key = pytest.StashKey[list]()
_deselected_key = pytest.StashKey[bool]()


@pytest.fixture
def emu_suite_complete(request):
    """None when every emulation test file was collected and nothing was deselected, else why not."""
    missing = request.config.stash.get(_partial_key, [])
    if missing:
        return "not collected: " + ", ".join(missing)
    if request.config.stash.get(_deselected_key, False):
        return "some emulation tests were deselected (-k/-m)"
    return None
