"""Every .arch file in archs/ parses, elaborates and builds; its summary matches the built module."""
import glob
import os

import pytest

import pycnn
from pycnn.dsl.elaborate import load_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH_FILES = sorted(glob.glob(os.path.join(ROOT, "archs", "*.arch")))
NETWORKS = [(os.path.relpath(f, ROOT), n) for f in ARCH_FILES for n in load_program(f).main_networks]


def test_arch_files_found():
    assert len(ARCH_FILES) >= 20
    assert len(NETWORKS) >= 60


@pytest.mark.parametrize("path", [os.path.relpath(f, ROOT) for f in ARCH_FILES])
def test_header_names_a_paper(path):
    text = open(os.path.join(ROOT, path)).read()
    assert text.startswith("#"), "each arch file starts with a comment naming its paper"


@pytest.mark.parametrize("path,network", NETWORKS, ids=[f"{n}" for _, n in NETWORKS])
def test_network_builds_and_summary_matches(path, network):
    torch = pytest.importorskip("torch")
    net = pycnn.parse(os.path.join(ROOT, path), network)
    summary = pycnn.summary(net, show=False)
    with torch.device("meta"):  # builds every module without allocating memory
        model = pycnn.compile(os.path.join(ROOT, path), network)
        out = model(torch.empty((1,) + tuple(net.input_shape)))
    assert sum(p.numel() for p in model.parameters()) == summary.total_params == net.total_params
    assert tuple(out.shape[1:]) == net.out_shape
    # module names and IR names agree
    module_names = {name for name, _ in model.named_modules()}
    for name, layer in net.layers():  # every layer is a module, the activations too
        assert name in module_names, name
