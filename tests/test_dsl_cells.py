"""Cells: blocks with named inputs whose body is a graph of nodes (`input x, prev`, `node`, `output`), the
network threading the latest outputs into them (or `from (...)`), the `pad` layer and channels/height/width of
a shape; golden tests of their errors. NASNet-A Large itself is checked in test_archs_params.py and
test_weights_parity.py."""
import copy
import pickle
import textwrap

import pytest
from golden_errors import check_error_message

import pycnn
from pycnn import ir

torch = pytest.importorskip("torch")
F = torch.nn.functional

NET = """\
block cell(c) {
    input x, prev
    node left = prev { conv(c, k=1, s=height(prev) != height(x) ? 2 : 1) bn }
    node right = x { conv(c, k=1) bn }
    node c0 = add(left { relu conv(c, k=3) bn }, right)
    node c1 = mul(c0, right { sigmoid })
    output concat(left, c0, c1)
}

block stem_cell(c) {
    input x
    node a = x { conv(c, k=3, s=2) bn }
    output add(a, a { relu })
}

network n(input = 3x8x8, classes = 5) {
    stem = stem_cell(4)
    a = cell(4)
    stage s = 2 x cell(4)
    b = cell(4) from (s.b2, input)
    head = gap flatten linear(classes)
}
"""


def run_by_hand(model, x0):
    """The network's function written out: which cell reads which outputs is the point."""
    def cell(m, x, prev):
        left, right = m.left(prev), m.right(x)
        c0 = m.c0_1(left) + right
        c1 = c0 * m.c1_2(right)
        return torch.cat([left, c0, c1], 1)

    stem_cell = model.stem.stem_cell1
    a0 = stem_cell.a(x0)
    stem = a0 + stem_cell.output_2(a0)  # the output's 2nd chain: output_2
    a = cell(model.a.cell1, stem, x0)                  # (stem, input): the two latest outputs
    b1 = cell(model.s.b1, a, stem)
    b2 = cell(model.s.b2, b1, a)
    b = cell(model.b.cell1, b2, x0)                    # from (s.b2, input)
    return model.head(b)


def test_cells_read_the_outputs_the_network_threads():
    net = pycnn.parse(NET)
    cells = {name: node for name, node in net.nodes() if isinstance(node, ir.Cell)}
    assert {k: v.sources for k, v in cells.items()} == {
        "stem.stem_cell1": (), "a.cell1": ("stem", "input"), "s.b1": ("a", "stem"), "s.b2": ("s.b1", "a"),
        "b.cell1": ("s.b2", "input")}
    strides = {name: layer.attrs["s"] for name, layer in net.layers() if name.endswith("left.conv1")}
    # height(prev) != height(x) where prev is the network's 8x8 input
    assert strides == {"a.cell1.left.conv1": (2, 2), "s.b1.left.conv1": (1, 1), "s.b2.left.conv1": (1, 1),
                       "b.cell1.left.conv1": (2, 2)}
    assert net.parts[1].out_shape == (12, 4, 4) and net.out_shape == (5,)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_a_cell_network_computes_its_graph(backend):
    torch.manual_seed(0)
    model = pycnn.compile(NET, backend=backend)
    ref = pycnn.compile(NET, backend="reference")
    ref.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8, 8)
    for train in (True, False):
        model.train(train)
        ref.train(train)
        with torch.no_grad():
            torch.testing.assert_close(model(x), run_by_hand(ref, x), rtol=1e-5, atol=1e-5)
    assert "s.b1.c0_1.conv1.weight" in model.state_dict()  # a merge's k-th chain: <node>_<k>


def test_a_cell_network_trains_pickles_and_gives_features():
    torch.manual_seed(0)
    model = pycnn.compile(NET, backend="reference")
    x = torch.randn(2, 3, 8, 8)
    model(x).sum().backward()
    assert model.a.cell1.left.conv1.weight.grad.abs().sum() > 0
    assert model.stem.stem_cell1.a.conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), y)
        torch.testing.assert_close(copy.deepcopy(model)(x), y)
        torch.testing.assert_close(model.forward_head(model.forward_features(x)), y)


def test_one_input_cells_go_anywhere_a_block_goes():
    src = """\
block twice(c) {
    input x
    node a = x { conv(c, k=1) }
    output concat(a, a { relu })
}
block outer(c) { twice(c) conv(c, k=1) }
network n(input = 3x8x8) {
    stem = conv(4) twice(4) outer(4)
    stage s = 2 x twice(4)
}
"""
    net = pycnn.parse(src)
    assert net.out_shape == (8, 8, 8)
    model = pycnn.compile(src, backend="reference").eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        stem = model.stem
        h = stem.conv1(x)
        t = stem.twice1.a(h)
        h = torch.cat([t, F.relu(t)], 1)
        t = stem.outer1.twice1.a(h)
        h = stem.outer1.conv1(torch.cat([t, F.relu(t)], 1))
        for b in (model.s.b1, model.s.b2):
            t = b.a(h)
            h = torch.cat([t, F.relu(t)], 1)
        torch.testing.assert_close(model(x), h)


def test_pad_crops_and_pads_like_zeropad2d():
    net = pycnn.parse("network n(input = 2x5x6) { body = pad(-1, 1, -1, 1) avgpool(1, s=2) pad(0, 2, 1, 0) }")
    assert net.out_shape == (2, 4, 5)
    model = pycnn.compile("network n(input = 2x5x6) { body = pad(-1, 1, -1, 1) avgpool(1, s=2) pad(0, 2, 1, 0) }")
    x = torch.randn(1, 2, 5, 6)
    expected = F.pad(F.pad(x, (-1, 1, -1, 1))[:, :, ::2, ::2], (0, 2, 1, 0))
    torch.testing.assert_close(model(x), expected)


def test_shape_functions_read_a_cells_inputs():
    src = """\
block cell() {
    input x, prev
    node y = prev { conv(channels(x) + height(prev) + width(prev), k=1) }
    output y
}
network n(input = 3x8x6) {
    stem = conv(4)
    c = cell
}
"""
    assert pycnn.parse(src).out_shape == (4 + 8 + 6, 8, 6)


CASES = {
    "unknown_value": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node c0 = add(lft, x)
            output c0
        }
        network n(input = 3x8x8) {
            stem = conv(8)
            a = cell(8)
        }""",
        """\
        unknown_value.arch:4:19: node 'c0' reads 'lft', which is not an input or an earlier node (did you mean 'left'?)
                node c0 = add(lft, x)
                              ^^^
          in block 'cell' (instance a.cell1) instantiated at unknown_value.arch:9:9"""),
    "cell_in_block": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node right = x { conv(c, k=1) }
            node c0 = add(left { conv(c, k=3) }, right)
            output concat(left, c0)
        }
        block outer(c) { cell(c) }
        network n(input = 3x8x8) {
            stem = conv(8)
            a = outer(8)
        }""",
        """\
        cell_in_block.arch:8:18: block 'cell' is a cell with 2 inputs (x, prev): use it as a stage's block or the first item of a network part, where the network gives it the outputs before it
            block outer(c) { cell(c) }
                             ^^^^
          in block 'outer' (instance a.outer1) instantiated at cell_in_block.arch:11:9"""),
    "cell_not_first": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node right = x { conv(c, k=1) }
            node c0 = add(left { conv(c, k=3) }, right)
            output concat(left, c0)
        }
        network n(input = 3x8x8) {
            stem = conv(8)
            a = conv(8) cell(8)
        }""",
        """\
        cell_not_first.arch:10:17: block 'cell' is a cell with 2 inputs (x, prev): use it as a stage's block or the first item of a network part, where the network gives it the outputs before it
                a = conv(8) cell(8)
                            ^^^^"""),
    "from_not_cell": (
        """\
        network n(input = 3x8x8) {
            stem = conv(8)
            a = conv(8) from (stem, input)
        }""",
        """\
        from_not_cell.arch:3:23: `from` gives the inputs of a cell with several inputs; 'conv' is not a cell
                a = conv(8) from (stem, input)
                                  ^^^^"""),
    "from_unknown": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node right = x { conv(c, k=1) }
            node c0 = add(left { conv(c, k=3) }, right)
            output concat(left, c0)
        }
        network n(input = 3x8x8) {
            stem = conv(8)
            stage s = 2 x cell(8)
            a = cell(8) from (s.b3, s.b1)
        }""",
        """\
        from_unknown.arch:11:23: no network output named 's.b3' before this (did you mean 's.b2'?); a cell reads `input`, earlier parts and stage blocks (like s1.b2)
                a = cell(8) from (s.b3, s.b1)
                                  ^^^^"""),
    "from_count": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node right = x { conv(c, k=1) }
            node c0 = add(left { conv(c, k=3) }, right)
            output concat(left, c0)
        }
        network n(input = 3x8x8) {
            stem = conv(8)
            a = cell(8) from (stem)
        }""",
        """\
        from_count.arch:10:23: cell 'cell' takes 2 inputs (x, prev); `from` gives 1
                a = cell(8) from (stem)
                                  ^^^^"""),
    "merge_shapes": (
        """\
        block cell(c) {
            input x, prev
            node c0 = add(x { conv(c, k=3, s=2) }, prev)
            output c0
        }
        network n(input = 3x8x8) {
            stem = conv(3)
            a = cell(3)
        }""",
        """\
        merge_shapes.arch:3:15: node 'c0': add: cannot add values of different shapes (x {...} 3x4x4; prev 3x8x8)
                node c0 = add(x { conv(c, k=3, s=2) }, prev)
                          ^^^
          in block 'cell' (instance a.cell1) instantiated at merge_shapes.arch:8:9"""),
    "unused_node": (
        """\
        block cell(c) {
            input x, prev
            node a = x { conv(c) }
            node b = prev { conv(c) }
            output a
        }
        network n(input = 3x8x8) {
            stem = conv(3)
            c = cell(3)
        }""",
        """\
        unused_node.arch:4:10: node 'b' is never used: neither a later node nor the output reads it
                node b = prev { conv(c) }
                     ^
          in block 'cell' (instance c.cell1) instantiated at unused_node.arch:9:9"""),
    "no_output": (
        """\
        block cell(c) {
            input x
            node a = x { conv(c) }
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        no_output.arch:1:1: cell 'cell' has no `output` (like output concat(a, b))
            block cell(c) {
            ^^^^^^^^^^^^^^^
          in block 'cell' (instance stem.cell1) instantiated at no_output.arch:6:12"""),
    "node_outside_cell": (
        """\
        block b(c) {
            conv(c)
            node a = x { conv(c) }
        }
        network n(input = 3x8x8) {
            stem = b(3)
        }""",
        """\
        node_outside_cell.arch:3:10: `node` belongs in a cell: a block that declares its inputs first (`input x, prev`)
                node a = x { conv(c) }
                     ^
          in block 'b' (instance stem.b1) instantiated at node_outside_cell.arch:6:12"""),
    "layer_in_cell": (
        """\
        block cell(c) {
            input x
            conv(c)
            output x
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        layer_in_cell.arch:3:5: a layer directly in a cell: put it in a node's chain, like `node y = x { conv }`
                conv(c)
                ^^^^^^^
          in block 'cell' (instance stem.cell1) instantiated at layer_in_cell.arch:7:12"""),
    "unknown_merge": (
        """\
        block cell(c) {
            input x
            output sum(x, x { conv(3) })
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        unknown_merge.arch:3:12: unknown merge 'sum'; a cell merges with add, concat, mul
                output sum(x, x { conv(3) })
                       ^^^
          in block 'cell' (instance stem.cell1) instantiated at unknown_merge.arch:6:12"""),
    "too_few_outputs": (
        """\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1) }
            node right = x { conv(c, k=1) }
            node c0 = add(left { conv(c, k=3) }, right)
            output concat(left, c0)
        }
        network n(input = 3x8x8) {
            a = cell(8)
        }""",
        """\
        too_few_outputs.arch:9:9: cell 'cell' takes 2 inputs (x, prev) but only 1 network output(s) come before it (the input counts); name them with `from (...)`
                a = cell(8)
                    ^^^^"""),
    "node_after_output": (
        """\
        block cell(c) {
            input x
            output x
            node a = x { conv(c) }
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        node_after_output.arch:4:10: node 'a' after the output (line 3): the output comes last
                node a = x { conv(c) }
                     ^
          in block 'cell' (instance stem.cell1) instantiated at node_after_output.arch:7:12"""),
    "pad_too_much": (
        """\
        network n(input = 3x8x8) {
            stem = pad(-4, -4, 0, 0)
        }""",
        """\
        pad_too_much.arch:2:16: pad(-4, -4, 0, 0) leaves 8x0 of the 8x8 input
                stem = pad(-4, -4, 0, 0)
                           ^^"""),
    "height_of_number": (
        """\
        block cell(c) {
            input x
            node a = x { conv(height(c)) }
            output a
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        height_of_number.arch:3:30: height() needs a CxHxW shape (like a cell's input), got a number
                node a = x { conv(height(c)) }
                                         ^
          in block 'cell' (instance stem.cell1) instantiated at height_of_number.arch:7:12"""),
    "input_twice": (
        """\
        block cell(c) {
            input x
            input y
            output x
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        input_twice.arch:3:5: a cell declares its inputs once, directly in its body
                input y
                ^^^^^^^
          in block 'cell' (instance stem.cell1) instantiated at input_twice.arch:7:12"""),
    "input_is_param": (
        """\
        block cell(c) {
            input c
            output c
        }
        network n(input = 3x8x8) {
            stem = cell(3)
        }""",
        """\
        input_is_param.arch:2:11: cell input 'c' has the name of a parameter or another input
                input c
                      ^
          in block 'cell' (instance stem.cell1) instantiated at input_is_param.arch:6:12"""),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_message(name):
    check_error_message(name, *CASES[name])


@pytest.mark.parametrize("body", ["output x { conv(4, k=1) }", "node nodes = x { conv(4, k=1) }\n output nodes",
                                  "node inputs = x { conv(4, k=1) }\n output inputs"])
def test_chains_may_take_any_node_name(body):
    """A cell's chains are submodules named after its nodes: `output`, `nodes` or `inputs` must not clash with
    what the cell module keeps."""
    source = "block c1(c) {\n input x\n %s\n}\nnetwork n(input = 3x8x8) { a = c1(4)\n head = gap flatten linear(2) }"
    model = pycnn.compile(source % body, backend="reference")
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 2)


def test_a_cell_part_followed_by_bn_and_act_runs_in_both_backends():
    source = textwrap.dedent("""\
        block cell(c) {
            input x, prev
            node left = prev { conv(c, k=1, s=height(prev) != height(x) ? 2 : 1) bn }
            node right = x { conv(c, k=1) bn }
            output concat(left, right)
        }
        network n(input = 3x8x8, classes = 5) {
            stem = conv(4, k=3, s=2)
            a = cell(4) bn relu
            head = gap flatten linear(classes)
        }""")
    torch.manual_seed(0)
    fused = pycnn.compile(source).eval()
    reference = pycnn.compile(source, backend="reference").eval()
    reference.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["input", "node", "output"])
def test_cell_statement_words_cannot_name_a_block(name):
    with pytest.raises(pycnn.ArchError, match=f"block name '{name}' starts a cell statement"):
        pycnn.parse(f"block {name}(c) {{ conv(c) }}\nnetwork n(input = 3x8x8) {{ a = {name}(4) }}", file="k.arch")


def test_a_crop_may_not_pass_the_far_edge():
    with pytest.raises(pycnn.ArchError, match=r"pad\(-10, 15, 0, 0\) leaves"):
        pycnn.parse("network n(input = 3x8x8) { body = conv(4, k=1) pad(-10, 15, 0, 0) }", file="p.arch")
