"""Imports run one way: every module of the package imports only modules of its own layer or of layers below
(DESIGN: parse -> elaborate -> IR -> passes -> modules -> ops; the tools above the compiler use it, nothing
below imports them), function-level imports included; and the language never loads torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pycnn"

# lowest first; a module may import its own layer and the layers before it. A name ending in ".*" is a
# subpackage with everything in it.
LAYERS = [
    ["pycnn.version", "pycnn.opspec", "pycnn.argtypes", "pycnn.dsl.errors", "pycnn.dsl.ast", "pycnn.dsl.brackets"],
    ["pycnn.ir", "pycnn.dsl.parse", "pycnn.dsl.evaluate", "pycnn.dsl.generators", "pycnn.dsl.checks"],
    ["pycnn.dsl.library", "pycnn.dsl.elaborate", "pycnn.dsl.literal", "pycnn.dsl", "pycnn.dsl.space"],  # the language (no torch)
    ["pycnn.passes.*", "pycnn.summary"],                                                # over the IR (no torch)
    ["pycnn.timing", "pycnn._C", "pycnn.allocator", "pycnn.memory", "pycnn.ops"],       # torch from here on
    ["pycnn.fused", "pycnn.decompositions", "pycnn.dispatch", "pycnn.nn.*", "pycnn.modules"],
    ["pycnn.runtime", "pycnn.report", "pycnn.initialize", "pycnn.lower", "pycnn.cells", "pycnn.features",
     "pycnn.reparam", "pycnn.build"],                                                   # IR -> modules
    ["pycnn.checkpoint", "pycnn.export", "pycnn.weights.*", "pycnn.zoo", "pycnn.deploy"],
    ["pycnn", "pycnn.training.*", "pycnn.bench.*", "pycnn.explore.*"],  # the facade (pycnn.train) and the user's work
    ["pycnn.cli", "pycnn.__main__"],                                                    # the command line
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
EXTENSIONS = {"pycnn._C"}  # compiled: imported, never walked


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        for entry in layer:
            if module == entry or (entry.endswith(".*") and (module + ".").startswith(entry[:-1])):
                return i
    raise AssertionError(f"{module} is in no layer of tests/test_imports.py: place it")


def imports_of(module: str, path: Path):
    """(line, imported pycnn module) of every import in the file, at any depth (function-level too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pycnn":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pycnn":
                continue
            for alias in node.names:  # `from . import ir` imports the module pycnn.ir
                sub = f"{target}.{alias.name}"
                yield node.lineno, sub if sub in MODULES or sub in EXTENSIONS else target


def upward_imports():
    bad = []
    for module, path in MODULES.items():
        for line, target in imports_of(module, path):
            if target != module and layer_of(target) > layer_of(module):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target} (a layer above)")
    return bad


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_only_run_down():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(monkeypatch):
    """The walker is not vacuous: ir importing lower is caught."""
    real = imports_of

    def with_upward(module, path):
        yield from real(module, path)
        if module == "pycnn.ir":
            yield 1, "pycnn.lower"

    monkeypatch.setitem(globals(), "imports_of", with_upward)
    assert upward_imports() == ["pycnn/ir.py:1: pycnn.ir imports pycnn.lower (a layer above)"]


@pytest.mark.parametrize("statement", ["import pycnn.dsl", "import pycnn; pycnn.parse('archs/regnetx32.arch')",
                                       "import pycnn; pycnn.summary('archs/regnetx32.arch', show=False)"])
def test_the_language_never_loads_torch(statement):
    code = f"import sys; {statement}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"{statement} loaded torch"


@pytest.mark.parametrize("order", ["import pycnn, torch", "import torch, pycnn", "import pycnn.dsl; import torch"])
def test_ops_register_in_either_import_order(order):
    code = f"{order}; print(torch.ops.pycnn.bn_act_forward.default.name())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.strip() == "pycnn::bn_act_forward"
