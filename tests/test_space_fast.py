"""The sampler's counting path (pycnn.explore.space._MemoElaborator: expressions remembered, block instances met
for the first time counted without their IR, a stage's repeated blocks counted at once) against the full
elaboration, on many random draws from every shipped space: the same samples, draws, rejections, FLOPs,
parameters, activations and the counts the elaborator's limits are checked on."""
import dataclasses
import json
import random
from pathlib import Path

import pytest

from pycnn.dsl.elaborate import Elaborator, Limits
from pycnn.explore.space import Sampler, _MemoElaborator, _Memory, complexity, load_space

SPACES = Path(__file__).resolve().parents[1] / "archs" / "spaces"
SHIPPED = sorted(p.name for p in SPACES.glob("*.arch"))


def test_every_shipped_space_is_checked():
    assert SHIPPED == ["anynetx_a.arch", "anynetx_b.arch", "anynetx_c.arch", "anynetx_d.arch", "anynetx_e.arch",
                       "regnetx.arch"]


def _run(sampler, n):
    """The samples and the refusals. Past a window's top the sampler stops elaborating, so a network that would
    also fail to elaborate further on counts as outside the window: the two refusals are compared as one sum
    where a window is given."""
    got = [(s.values, s.flops, s.params, s.acts) for s in sampler.take(n)]
    refused = sampler.rejected_arch + sampler.rejected_window
    return got, (sampler.tries, sampler.rejected_constraint, refused if sampler.flops else sampler.rejected_arch)


@pytest.mark.parametrize("path", SHIPPED)
def test_the_sampler_gives_what_full_elaboration_gives(path):
    """40 samples of each shipped space (and 6 with a FLOPs window that refuses most networks): the same as
    elaborating every draw afresh, refusals counted alike."""
    space = load_space(SPACES / path)
    extra = {"input": (1, 16, 16), "classes": 10}
    for seed, n, window in ((3, 40, None), (4, 6, (2e5, 1e6))):
        fast = _run(Sampler(space, seed, extra, window), n)
        assert fast == _run(Sampler(space, seed, extra, window, remember=False), n)


def test_networks_that_do_not_elaborate_are_refused_alike():
    """Without its `require` lines AnyNetX_A draws group widths that do not divide the block's inner width: the
    counting path leaves those to the elaborator, which refuses them as the full elaboration does."""
    space = dataclasses.replace(load_space(SPACES / "anynetx_a.arch"), requires=[])
    extra = {"input": (1, 16, 16)}
    fast = _run(Sampler(space, 5, extra), 10)
    assert fast[1][2] > 0  # some draws did not elaborate (no window: rejected_arch)
    assert fast == _run(Sampler(space, 5, extra, remember=False), 10)


@pytest.mark.parametrize("path", ["anynetx_a.arch", "regnetx.arch"])
def test_counts_are_the_elaborators(path):
    """Every count the elaborator keeps (layers, parameters, activation elements: what its limits are checked on)
    and the FLOPs and activations, for draws counted with nothing remembered before (every block instance met for
    the first time) and with everything remembered."""
    space = load_space(SPACES / path)
    rng, memory = random.Random(7), _Memory()
    for _ in range(30):
        overrides = {**space.fixed, **space.draw_satisfying(rng, 10_000)[0], "input": (1, 16, 16)}
        full = Elaborator(space.program, Limits())
        network = full.network(space.network, overrides)
        want = (full.n_layers, full.n_params, full.activation_elements, *complexity(network))
        for remembered in (_Memory(), memory):
            e = _MemoElaborator(space.program, Limits(), remembered)
            e.network(space.network, overrides)
            assert (e.n_layers, e.n_params, e.activation_elements, e.flops, e.n_params, e.acts) == want, overrides


@pytest.mark.parametrize("name", ["AnyNetX_A", "AnyNetX_E"])
def test_the_committed_exploration_is_drawn_again(name):
    """bench/results/explore-2026-12-03 (seed 0, 1x32x32, 500k:3M FLOPs, whole draws refused): the same 32
    networks with the same FLOPs, parameters and activations."""
    results = Path(__file__).resolve().parents[1] / "bench" / "results" / "explore-2026-12-03"
    last = {}  # the last record of an index counts (a failed trial is run again)
    for line in (results / f"{name}.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["index"]] = record
    records = [last[i] for i in range(32)]
    space = load_space(SPACES / f"anynetx_{name[-1].lower()}.arch")
    samples = Sampler(space, 0, {"input": (1, 32, 32)}, (5e5, 3e6), early=False).take(32)
    assert [(s.values, s.flops, s.params, s.acts) for s in samples] == \
        [(r["values"], r["flops"], r["params"], r["acts"]) for r in records]


def test_remembered_layers_tell_1_and_true_apart():
    """1 and true are equal (and hash alike) in Python: a layer remembered with groups=1 must not stand in for the
    same layer with groups=true, which the elaborator refuses."""
    from pycnn.dsl.errors import ArchError
    from pycnn.dsl.library import load_program
    program = load_program("""
block blk(f) {
    conv(4, k=3, groups=f, p=1)
}
network n(input = 4x8x8, classes = 10) {
    stage s1 = 1 x blk(1)
    stage s2 = 1 x blk(true)
    head = avgpool flatten linear(classes)
}
""", "typed.arch")
    for elaborator in (Elaborator(program, Limits()), _MemoElaborator(program, Limits(), _Memory())):
        with pytest.raises(ArchError, match="groups must be an integer, got true"):
            elaborator.network("n", {})
