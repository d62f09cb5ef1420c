"""Every ```python example of docs/zoo.md and docs/export.md runs (each page's examples in order, in one
namespace, in a scratch folder), so the pages stay true. Blocks fenced ```python no-test are shown only."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def examples(page):
    text = open(os.path.join(ROOT, "docs", page)).read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", ["zoo.md", "export.md"])
def test_page_has_examples(page):
    assert len(examples(page)) >= 2


def run_page(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYCNN_KERNELS", "pycnn")  # no per-shape measuring of kernel choices: faster
    namespace = {}
    for index, code in enumerate(examples(page)):
        exec(compile(code, f"docs/{page} example {index + 1}", "exec"), namespace)  # noqa: S102 (our own docs)
    return namespace


@pytest.mark.usefixtures("one_thread")
def test_zoo_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torchvision")
    ns = run_page("zoo.md", tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "['regnety_200mf', 'regnety_400mf', 'regnety_600mf', 'regnety_800mf']" in out
    assert "did you mean resnet50" in out and "True 10" in out and "[16, 24, 32, 96, 320]" in out
    assert "regnetx32 4 (1, 32, 32)" in out and "never unpickles" in out
    assert ns["again"].ir.name == "regnetx32"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_export_page_runs(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    run_page("export.md", tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "True" in out and "torch.Size([3, 10])" in out
