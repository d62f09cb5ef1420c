#!/usr/bin/env bash
# The wheel (issue 17): `pip wheel --no-build-isolation .` from this checkout, installed into a fresh virtualenv
# and used from there, with no compiler step at install time. Run by .ci/run after the tests, where the README's
# editable install has already built everything: the wheel reuses that CMake build directory
# (pyproject.toml [tool.scikit-build] build-dir), so it links and packages but recompiles nothing.
# The venv sees torch (and the other dependencies) through a path line in a .pth file rather than
# --system-site-packages: that would also run the editable install's import hook, which puts this checkout's
# pycnn ahead of the wheel's.
#   tools/wheel_check.sh [WORK_DIR]     (default /tmp/pycnn-wheel-check; emptied first)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/tmp/pycnn-wheel-check}
py=${PYTHON:-python}
rm -rf "$work" && mkdir -p "$work"
start=$(date +%s)
"$py" -m pip wheel --no-build-isolation --no-deps --wheel-dir "$work/dist" "$src" >"$work/wheel.log" 2>&1 ||
  { tail -40 "$work/wheel.log" >&2; echo "wheel_check: pip wheel failed" >&2; exit 1; }
wheel=$(ls "$work"/dist/pycnn-*.whl)
echo "wheel_check: built $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) in $(( $(date +%s) - start )) s"
"$py" -m venv "$work/venv"
venv_site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$venv_site/system_site_packages.pth"
# No index, no dependencies, no build: a wheel installs by unpacking.
"$work/venv/bin/python" -m pip install --no-index --no-deps --no-build-isolation --quiet "$wheel"
cd "$work"  # not the checkout: pycnn must come from the venv
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
from pathlib import Path

import torch

import pycnn
import pycnn._C

venv = Path(sys.argv[1]).resolve()
for mod in (pycnn, pycnn._C):
    where = Path(mod.__file__).resolve()
    assert venv in where.parents, f"{mod.__name__} imported from {where}, not from the wheel in {venv}"
info = pycnn.build_info()
print("wheel_check: build_info", info)
arch = Path(pycnn.__file__).parent / "archs" / "mobilenet_v2.arch"
model = pycnn.compile(arch, classes=10, input=(3, 32, 32), width_mult=0.25, kernels="pycnn").eval()
reference = pycnn.compile(arch, classes=10, input=(3, 32, 32), width_mult=0.25, backend="reference").eval()
reference.load_state_dict(model.state_dict())
x = torch.randn(2, 3, 32, 32)
with torch.no_grad():
    y, y_ref = model(x), reference(x)
err = ((y - y_ref).abs().max() / y_ref.abs().max().clamp_min(1e-12)).item()
assert err < 1e-4, f"the wheel's fused MobileNetV2 differs from the reference by {err:.2e}"
print(f"wheel_check: pycnn {pycnn.__version__} from {Path(pycnn.__file__).parent}: fused MobileNetV2 forward "
      f"matches the reference ({err:.1e})")
PY
echo "wheel_check: done in $(( $(date +%s) - start )) s"
