"""The ```python examples of docs/training.md and docs/explore.md run (so the pages stay true)."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = [(doc, i, code) for doc in ("training.md", "explore.md")
            for i, code in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.S))]


def test_docs_have_examples():
    assert {doc for doc, _, _ in EXAMPLES} == {"training.md", "explore.md"}


@pytest.mark.parametrize("doc,index,code", EXAMPLES, ids=[f"{d}-{i}" for d, i, _ in EXAMPLES])
def test_doc_example_runs(doc, index, code, tmp_path, monkeypatch, one_thread):
    (tmp_path / "archs").symlink_to(ROOT / "archs")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"docs/{doc} example {index + 1}", "exec"), {})
