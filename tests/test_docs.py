"""Every ```arch example in docs/language.md compiles (so the reference stays true)."""
import os
import re

import pytest

import pycnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = open(os.path.join(ROOT, "docs", "language.md")).read()
EXAMPLES = re.findall(r"```arch\n(.*?)```", DOC, flags=re.S)


def test_doc_has_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_doc_example_compiles(index):
    torch = pytest.importorskip("torch")
    text = EXAMPLES[index]
    net = pycnn.parse(text, file=f"docs/language.md example {index + 1}")
    with torch.device("meta"):
        model = pycnn.compile(text)
        out = model(torch.empty((2,) + net.input_shape))
    assert tuple(out.shape[1:]) == net.out_shape
    assert sum(p.numel() for p in model.parameters()) == net.total_params


def test_doc_error_example_is_real():
    text = "use std\nnetwork n(input = 3x32x32) {\n    stage s1 = 2 x xblok(32) stride 2\n}\n"
    with pytest.raises(pycnn.ArchError) as info:
        pycnn.parse(text, file="resnet.arch")
    block = re.search(r"```text\n(resnet\.arch.*?)```", DOC, flags=re.S).group(1)
    assert str(info.value).strip() == block.strip()
