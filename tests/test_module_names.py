"""Every shipped network keeps its state_dict (names and shapes) and its module names: tests/module_names.json holds,
per network, a hash of "name shape" per state_dict entry and a hash of the named_modules() names, computed
from the tree before the registry (commit 0b1d18d). A change that renames or reshapes anything fails here;
a deliberate one regenerates the file (run this file with PYCNN_WRITE_MODULE_NAMES=1) and says why."""
import glob
import hashlib
import json
import os

import pytest

import pycnn
from pycnn.dsl.elaborate import load_program

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "module_names.json")


def _digest(lines) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def names_of(path: str, network: str):
    with torch.device("meta"):
        model = pycnn.compile(os.path.join(ROOT, path), network)
    return [_digest(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items()),
            _digest(name for name, _ in model.named_modules())]


def current():
    return {f"{os.path.relpath(f, ROOT)}:{n}": names_of(os.path.relpath(f, ROOT), n)
            for f in sorted(glob.glob(os.path.join(ROOT, "archs", "*.arch"))) for n in load_program(f).main_networks}


@pytest.mark.slow
def test_state_dicts_and_module_names_are_unchanged():
    now = current()
    if os.environ.get("PYCNN_WRITE_MODULE_NAMES"):
        with open(SNAPSHOT, "w") as f:
            f.write("{\n" + ",\n".join(f'  "{k}": ["{v[0]}", "{v[1]}"]' for k, v in sorted(now.items())) + "\n}\n")
    expected = json.load(open(SNAPSHOT))
    assert set(now) == set(expected), "networks added or removed: regenerate tests/module_names.json"
    state = [k for k in now if now[k][0] != expected[k][0]]
    modules = [k for k in now if now[k][1] != expected[k][1]]
    assert not state, f"state_dict names or shapes changed: {state}"
    assert not modules, f"module names changed: {modules}"
