"""Design spaces in the language (`space NAME of NETWORK { ... }`, pycnn.dsl.space) and the sampler over them
(pycnn.explore.space): what the declarations mean, their error messages, determinism, constraints and windows
on every sample, and the remembering sampler giving exactly what elaborating every draw afresh gives."""
import dataclasses
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pycnn import ArchError
from pycnn.dsl.space import Space
from pycnn.explore import space as explore_space
from pycnn.explore.space import Sampler, load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "archs" / "spaces"
TINY = {"input": (1, 8, 8)}


def stage(values, key):
    return [values[f"{key}{i}"] for i in range(1, 5)]


def test_space_declarations():
    space = Space.load(textwrap.dedent("""\
        use anynet
        space s of anynet(stem_width = 16, classes = 5) {
            sample d1..d3 = int(1, 4)
            sample w1..w4 = int(8, 64, dist=log, q=8)
            sample b1..b4 = choice(1.0, 0.5)
            sample g4 = int(2, 16, dist=pow2)
            shared b1..b4
            non_decreasing w1..w4
            require w4 % g4 == 0
            window flops(1e5, 2e6)
            window params(0, 5e5)
        }"""), file="s.arch")
    assert space.name == "s" and space.network == "anynet" and space.arch.name == "anynet.arch"
    assert space.fixed == {"stem_width": 16, "classes": 5}
    assert list(space.params) == ["d1", "d2", "d3", "w1", "w2", "w3", "w4", "b1", "b2", "b3", "b4", "g4"]
    w = space.params["w2"]
    assert (w.type, w.low, w.high, w.dist, w.q) == ("int", 8, 64, "log", 8)
    assert space.params["b3"].choices == (1.0, 0.5) and space.params["g4"].dist == "pow2"
    assert space.shared == [("b1", "b2", "b3", "b4")] and space.non_decreasing == [("w1", "w2", "w3", "w4")]
    assert space.flops == (1e5, 2e6) and space.param_count == (0, 5e5)
    assert space.satisfies({**dict.fromkeys(space.params, 1), "w1": 8, "w2": 8, "w3": 16, "w4": 32, "g4": 16})
    assert not space.satisfies({**dict.fromkeys(space.params, 1), "w1": 8, "w2": 8, "w3": 16, "w4": 40, "g4": 16})
    assert not space.satisfies({**dict.fromkeys(space.params, 1), "w1": 16, "w2": 8, "w3": 16, "w4": 32, "g4": 16})


# name -> (space text after `use anynet`, the error: file:line:col message, source line, caret)
ERRORS = {
    "unknown_network": ("space s of anynt { sample w1 = int(8, 16) }", """\
        unknown_network.arch:2:12: unknown network 'anynt' (did you mean 'anynet'?)
            space s of anynt { sample w1 = int(8, 16) }
                       ^^^^^"""),
    "unknown_parameter": ("space s of anynet {\n    sample w1..w5 = int(8, 16)\n}", """\
        unknown_parameter.arch:3:5: network 'anynet' has no parameter 'w5'; its parameters: input, classes, stem_width, d1, w1, g1, b1, d2, w2, g2, b2, d3, w3, g3, b3, d4, w4, g4, b4
                sample w1..w5 = int(8, 16)
                ^^^^^^^^^^^^^^^^^^^^^^^^^^"""),
    "bad_range": ("space s of anynet {\n    shared w1..v4\n}", """\
        bad_range.arch:3:12: a name range is written like w1..w4: the same name, numbered from low to high (got w1..v4)
                shared w1..v4
                       ^^^^^^"""),
    "unknown_law": ("space s of anynet {\n    sample w1 = uniform(8, 16)\n}", """\
        unknown_law.arch:3:17: unknown law 'uniform'; a parameter is sampled by int(low, high, dist=, q=), real(low, high, dist=, q=) or choice(a, b, ...)
                sample w1 = uniform(8, 16)
                            ^^^^^^^"""),
    "unknown_dist": ("space s of anynet {\n    sample w1 = int(8, 16, dist=lg)\n}", """\
        unknown_dist.arch:3:33: dist must be one of uniform, log, pow2 (did you mean 'log'?)
                sample w1 = int(8, 16, dist=lg)
                                            ^^"""),
    "pow2_bounds": ("space s of anynet {\n    sample g1 = int(1, 24, dist=pow2)\n}", """\
        pow2_bounds.arch:3:24: int: with dist=pow2, high must be a power of two, got 24
                sample g1 = int(1, 24, dist=pow2)
                                   ^^"""),
    "shared_laws": ("space s of anynet {\n    sample w1 = int(8, 16)\n    sample w2 = int(8, 32)\n"
                    "    shared w1, w2\n}", """\
        shared_laws.arch:5:5: shared parameters need one law: 'w2' (line 4) is not sampled like 'w1' (line 3)
                shared w1, w2
                ^^^^^^^^^^^^^"""),
    "not_sampled": ("space s of anynet {\n    sample w1..w4 = int(8, 16)\n    non_decreasing d1..d4\n}", """\
        not_sampled.arch:4:5: 'd1' is not a sampled parameter (sample it before this line)
                non_decreasing d1..d4
                ^^^^^^^^^^^^^^^^^^^^^"""),
    "require_name": ("space s of anynet {\n    sample w1 = int(8, 16)\n    require w1 % g1 == 0\n}", """\
        require_name.arch:4:18: unknown name 'g1' in a require (it may read the sampled and fixed parameters declared before it)
                require w1 % g1 == 0
                             ^^"""),
    "window_measure": ("space s of anynet {\n    sample w1 = int(8, 16)\n    window macs(1, 2)\n}", """\
        window_measure.arch:4:12: unknown window 'macs'; windows: flops, params
                window macs(1, 2)
                       ^^^^"""),
    "fixed_and_sampled": ("space s of anynet(w1 = 8) {\n    sample w1 = int(8, 16)\n}", """\
        fixed_and_sampled.arch:3:5: 'w1' is fixed in the space's header; it cannot be sampled too
                sample w1 = int(8, 16)
                ^^^^^^^^^^^^^^^^^^^^^^"""),
    "sampled_twice": ("space s of anynet {\n    sample w1..w4 = int(8, 16)\n    sample w4 = int(8, 64)\n}", """\
        sampled_twice.arch:4:5: 'w4' is sampled twice (first at line 3)
                sample w4 = int(8, 64)
                ^^^^^^^^^^^^^^^^^^^^^^"""),
    "low_above_high": ("space s of anynet {\n    sample w1 = int(16, 8)\n}", """\
        low_above_high.arch:3:17: int: low 16 is above high 8
                sample w1 = int(16, 8)
                            ^^^^^^^^^^"""),
}


@pytest.mark.parametrize("name", ERRORS)
def test_space_error_messages(name):
    text, expected = ERRORS[name]
    with pytest.raises(ArchError) as info:
        Space.load("use anynet\n" + text, file=f"{name}.arch")
    assert str(info.value) == textwrap.dedent(expected)


def test_a_require_that_is_not_a_condition_is_an_error():
    text = "use anynet\nspace s of anynet {\n    sample w1 = int(8, 16)\n    require w1 + 1\n}"
    space = Space.load(text, file="r.arch")
    with pytest.raises(ArchError, match=r"r.arch:4:13: a require must be true or false, got 9"):
        space.satisfies({"w1": 8})


@pytest.mark.parametrize("letter", "ae")
def test_sampling_is_deterministic_and_every_sample_meets_constraints_and_windows(letter):
    space = load_space(SPACES / f"anynetx_{letter}.arch")
    window, params = (2e4, 3e5), (0, 1e5)
    samples = Sampler(space, seed=11, extra=TINY, flops=window, params=params).take(6)
    again = Sampler(space, seed=11, extra=TINY, flops=window, params=params).take(6)
    assert [s.values for s in samples] == [s.values for s in again]
    assert [s.values for s in samples] != [s.values for s in Sampler(space, 12, TINY, window, params).take(6)]
    for s in samples:
        v = s.values
        assert window[0] <= s.flops <= window[1] and s.params <= params[1]
        assert all(1 <= d <= 16 for d in stage(v, "d")) and all(w % 8 == 0 and 8 <= w <= 1024 for w in stage(v, "w"))
        assert all(g in (1, 2, 4, 8, 16, 32) for g in stage(v, "g")) and set(stage(v, "b")) <= {1.0, 0.5, 0.25}
        assert all(round(w * b) % g == 0 for w, b, g in zip(stage(v, "w"), stage(v, "b"), stage(v, "g")))
        if letter == "e":
            assert len(set(stage(v, "b"))) == len(set(stage(v, "g"))) == 1
            assert stage(v, "w") == sorted(stage(v, "w")) and stage(v, "d") == sorted(stage(v, "d"))


@pytest.mark.parametrize("path,extra,window", [
    ("anynetx_a.arch", {"input": (1, 16, 16)}, (1e5, 2e6)),
    ("anynetx_d.arch", {"input": (1, 16, 16)}, None),
    ("regnetx.arch", {"input": (1, 16, 16), "classes": 10}, (1e6, 3e7)),
])
def test_remembering_sampler_gives_what_fresh_elaboration_gives(path, extra, window):
    """The sampler's block and layer memory and its early stop change nothing: the same samples with the same
    FLOPs, parameters and activations as elaborating each draw afresh (constraints checked while drawing, and
    on whole draws); and the AnyNetX `require` lines only refuse earlier what elaboration refuses (with whole
    draws refused, the same samples without them)."""
    space = load_space(SPACES / path)
    fast = Sampler(space, seed=2, extra=extra, flops=window)
    fresh = Sampler(space, seed=2, extra=extra, flops=window, remember=False)
    got = [(s.values, s.flops, s.params, s.acts) for s in fast.take(8)]
    assert got == [(s.values, s.flops, s.params, s.acts) for s in fresh.take(8)]
    assert fast.tries == fresh.tries
    whole = Sampler(space, seed=2, extra=extra, flops=window, early=False)
    reference = Sampler(dataclasses.replace(space, requires=[]), seed=2, extra=extra, flops=window, remember=False,
                        early=False)
    got = [(s.values, s.flops, s.params, s.acts) for s in whole.take(8)]
    assert got == [(s.values, s.flops, s.params, s.acts) for s in reference.take(8)]
    assert whole.tries == reference.tries
    net = fast.elaborate(fast.take(1)[0].overrides)  # a fresh IR for what needs one (latency, trials)
    assert net.total_params > 0


def test_anynetx_spaces_are_the_papers():
    """A..E as Radosavovic et al. 2020 narrow them: B shares b, C shares b and g, D adds non-decreasing widths,
    E non-decreasing depths."""
    shared, increasing = {}, {}
    for letter in "abcde":
        space = load_space(SPACES / f"anynetx_{letter}.arch")
        assert space.name == f"AnyNetX_{letter.upper()}" and space.network == "anynet"
        shared[letter] = {names[0][0] for names in space.shared}
        increasing[letter] = {names[0][0] for names in space.non_decreasing}
    assert shared == {"a": set(), "b": {"b"}, "c": {"b", "g"}, "d": {"b", "g"}, "e": {"b", "g"}}
    assert increasing == {"a": set(), "b": set(), "c": set(), "d": {"w"}, "e": {"w", "d"}}


def test_sampling_never_loads_torch():
    code = ("import sys; from pycnn.explore.space import Sampler, load_space; "
            "Sampler(load_space('archs/spaces/anynetx_e.arch'), extra={'input': (1, 8, 8)}).take(2); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_bench_command(capsys):
    assert explore_space.main(["--bench", str(SPACES / "anynetx_c.arch"), "--samples", "3", "--input", "1x8x8"]) == 0
    assert re.search(r"AnyNetX_C: \d+ samples/s, the reference [\d.]+ samples/s: [\d.]+x", capsys.readouterr().out)
    assert explore_space.main(["--bench", str(SPACES / "none.arch")]) == 2
    assert "no such design-space file" in capsys.readouterr().err


@pytest.mark.parametrize("doc", ["language.md", "explore.md"])
def test_doc_space_examples_sample(doc):
    """Every space written in an ```arch example of the docs loads and samples."""
    text = (ROOT / "docs" / doc).read_text()
    examples = [e for e in re.findall(r"```arch\n(.*?)```", text, flags=re.S) if re.search(r"^space ", e, re.M)]
    assert examples
    for i, example in enumerate(examples):
        space = Space.load(example, file=f"docs/{doc} space example {i + 1}")
        for s in Sampler(space, seed=0, extra=TINY).take(2):
            assert space.satisfies(s.values) and s.flops > 0


def test_blocks_that_read_their_position_are_not_reused_across_positions():
    """A block reading block_index, even when it comes in as another block's argument, is remembered per
    position: the sampler's parameter counts stay those of a fresh elaboration."""
    space = Space.load(textwrap.dedent("""\
        block leaf(w, stride=1) { conv(w, k=1, groups=block_index % 2 + 1) }
        block wrap(w, stride=1, unit=none) { unit(w, stride=stride) }
        network n(input = 8x8x8, w = 8, u = leaf) {
            stage s1 = 4 x wrap(w, unit=u) stride 1
        }
        space s of n { sample w = choice(8, 16) }"""), file="p.arch")
    fast = [(s.values, s.params) for s in Sampler(space, seed=0).take(4)]
    assert fast == [(s.values, s.params) for s in Sampler(space, seed=0, remember=False).take(4)]


def test_a_layer_reading_in_is_remembered_per_block_input():
    """`in` inside a block is the block's input channels, not the layer's: a layer reading it (an se after a
    conv) is remembered per value of `in`; the sampler's counts stay those of a fresh elaboration."""
    space = Space.load(textwrap.dedent("""\
        block sq(w, stride=1) { conv(w, k=1) conv(round(in / 2) + w, k=1) }
        network n(input = 8x8x8, w1 = 8, w2 = 8) {
            stage s1 = 1 x sq(w1) stride 1
            stage s2 = 1 x sq(w2) stride 1
        }
        space s of n { sample w1..w2 = choice(8, 16, 32) }"""), file="i.arch")
    fast = [(s.values, s.params, s.flops) for s in Sampler(space, seed=0).take(12)]
    assert fast == [(s.values, s.params, s.flops) for s in Sampler(space, seed=0, remember=False).take(12)]


def test_a_space_over_a_network_with_cells_samples_what_fresh_elaboration_gives():
    """A cell's IR depends on the network outputs before it, which the sampler's memo keys do not hold."""
    space = Space.load(textwrap.dedent("""\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1, s=height(prev) != height(x) ? 2 : 1) bn }
            node right = x { conv(c, k=1) bn }
            output concat(left, right)
        }
        block plain(c) { conv(c, k=3) bn relu }
        network n(input = 3x8x8, classes = 5, w = 4, v = 4) {
            stem = conv(w, k=3, s=2)
            mid = conv(v, k=1)
            a = cell(4)
            stage s = 2 x plain(8)
            stage t = 2 x cell(4)
            head = gap flatten linear(classes)
        }
        space sp of n {
            sample w = int(4, 12, q=4)
            sample v = int(4, 12, q=4)
        }"""), file="cells.arch")
    fast = [(s.values, s.flops, s.params, s.acts) for s in Sampler(space, seed=1).take(8)]
    assert fast == [(s.values, s.flops, s.params, s.acts) for s in Sampler(space, seed=1, remember=False).take(8)]


def test_hostile_laws_and_name_ranges_are_arch_errors():
    network = "network n(input=3x8x8, w=1.0, w1=1) { body = conv(4, k=1) }\n"
    with pytest.raises(ArchError, match="a name range is written like w1..w4") as info:
        Space.load(network + "space s of n { sample w1..w%s = int(1, 2) }" % ("9" * 5000), file="r.arch")
    assert len(str(info.value)) < 400
    with pytest.raises(ArchError, match=r"q=1e-320 is too small"):
        Space.load(network + "space s of n { sample w = real(1, 2, q=1e-320) }", file="q.arch")


SMALL_SPACE = """\
use anynet
space small of anynet {
    sample d1..d3 = choice(1, 2, 3)
    sample w1..w2 = choice(8, 12, 16)
    sample g1..g2 = choice(2, 4, 8)
    sample b1 = choice(1.0, 0.5)
    shared g1..g2
    non_decreasing d1..d3
    require w1 % g1 == 0
    require round(w2 * b1) % g2 == 0 and w1 <= w2
}"""


def _chi_square(counts, cells, n):
    """Pearson's statistic of `counts` against the uniform law over `cells`, and a bound it passes with
    probability ~1 - 1e-6 when the draws follow that law (df + 7 standard deviations of the chi-square)."""
    expected = n / len(cells)
    assert set(counts) <= set(cells)
    stat = sum((counts.get(c, 0) - expected) ** 2 / expected for c in cells)
    df = len(cells) - 1
    return stat, df + 7 * (2 * df) ** 0.5


def test_drawing_with_early_refusal_samples_the_constrained_law():
    """Constraints checked while drawing (Space.draw_satisfying, each group of linked parameters drawn again
    from its start) give the law of refusing whole draws: the prior restricted to the constraints. With choices
    only, that law is uniform over the satisfying combinations, enumerated here; both ways of drawing match it
    (seeded, so this never flakes) and every draw meets the constraints."""
    import itertools
    import random

    space = Space.load(SMALL_SPACE, file="small.arch")
    names = [n for n in space.params if n != "g2"]  # g2 is g1's value
    cells = []
    for combo in itertools.product(*(space.params[n].choices for n in names)):
        values = dict(zip(names, combo), g2=combo[names.index("g1")])
        if space.satisfies(values):
            cells.append(tuple(values[n] for n in space.params))
    assert 100 < len(cells) < 300
    n = 25 * len(cells)
    early, whole = {}, {}
    rng = random.Random(5)
    refused = 0
    for _ in range(n):
        values, r = space.draw_satisfying(rng, 10_000)
        refused += r
        assert space.satisfies(values)
        key = tuple(values[k] for k in space.params)
        early[key] = early.get(key, 0) + 1
    drawn = 0
    while sum(whole.values()) < n:
        values = space.draw(rng)
        drawn += 1
        if space.satisfies(values):
            key = tuple(values[k] for k in space.params)
            whole[key] = whole.get(key, 0) + 1
    for counts in (early, whole):
        stat, bound = _chi_square(counts, cells, n)
        assert stat < bound, (stat, bound)
    assert refused + n < drawn  # and drawing with early refusal refuses fewer draws
    assert space.draw_satisfying(rng, 10_000)[0] is not None


def test_drawing_with_early_refusal_keeps_the_guards_of_the_written_order():
    """`require b1 > 0 and g1 > 0` written before `require w1 % g1 == 0` guards it, as whole draws check them in
    that order; drawing early, the modulo is ready first (b1 is drawn last) and must not fail on g1 == 0."""
    import random
    text = SMALL_SPACE.replace("choice(2, 4, 8)", "choice(0, 2, 4)").replace(
        "    require w1 % g1 == 0", "    require b1 > 0 and g1 > 0\n    require w1 % g1 == 0")
    space = Space.load(text, file="small.arch")
    rng = random.Random(0)
    for _ in range(200):
        values, _ = space.draw_satisfying(rng, 10_000)
        assert space.satisfies(values) and values["g1"] > 0


def test_a_param_pickles_after_drawing():
    import pickle
    import random
    p = Space.load(SMALL_SPACE, file="small.arch").params["w1"]
    p.sample(random.Random(0))
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.sample(random.Random(1)) == p.sample(random.Random(1))


def test_drawing_with_early_refusal_gives_up_after_its_tries():
    space = Space.load(SMALL_SPACE.replace("and w1 <= w2", "and w1 > 99"), file="small.arch")
    import random
    assert space.draw_satisfying(random.Random(0), 50) == (None, 50)
    never = Space.load(SMALL_SPACE.replace("require w1 % g1 == 0", "require 1 > 2"), file="small.arch")
    assert never.draw_satisfying(random.Random(0), 50) == (None, 50)
    with pytest.raises(explore_space.SpaceError, match="no sample satisfied"):
        Sampler(never, seed=0, max_tries=50).take(1)
