"""Build the test-only emulation extension: csrc/cuda kernels compiled by the host compiler (-DPYCNN_EMU).

Every ``tests/emu/bind_*.cpp`` plus ``emu_module.cpp`` is compiled into ONE extension with
``torch.utils.cpp_extension.load`` (ninja; incremental, cached in ``build/emu/<name>``). Bind files
``#include`` the real kernel sources (``../../csrc/cuda/<op>.cu``), so no kernel code is copied.

``build_patched`` makes a deliberately broken variant for negative tests: the whole tree the bind files
see (tests/emu and csrc) is copied to a build directory, the requested text replacements are applied to
the copy, and that copy is compiled as a separate extension. Nothing under the repository is modified.
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMU_TESTS = ROOT / "tests" / "emu"
BUILD_ROOT = Path(os.environ.get("PYCNN_EMU_BUILD_DIR", ROOT / "build" / "emu"))

# -O1 keeps the one-time compile short; -fvisibility=hidden keeps two emulation modules (normal and
# patched) loaded in one process from sharing the emulator's inline state.
# PYCNN_EMU_OPT overrides the optimization level (e.g. -O0 -g to debug a kernel with gdb).
# -fno-strict-aliasing: CUDA code type-puns through reinterpret_cast (vector loads) as nvcc allows;
# -ffp-contract=off: never fuse a*b+c behind the kernel's back (write fmaf where a fused result is wanted).
# -fstack-clash-protection: a big stack frame probes page by page, so an overflow hits the fiber's guard page.
CFLAGS = ["-g0", "-DPYCNN_EMU=1", "-fvisibility=hidden", "-fno-strict-aliasing", "-ffp-contract=off",
          "-fstack-clash-protection", "-Wno-unused-function"]
OPT = os.environ.get("PYCNN_EMU_OPT", "-O1").split()


def bind_sources(tests_dir: Path = EMU_TESTS, only: list[str] | None = None) -> list[Path]:
    binds = sorted(tests_dir.glob("bind_*.cpp"))
    if only is not None:
        binds = [p for p in binds if p.stem[len("bind_"):] in only]
    return binds + [tests_dir / "emu_module.cpp"]


def _mapped_files():
    """(start, end, path) of each file-backed mapping of this process (/proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6:
                lo, hi = (int(v, 16) for v in fields[0].split("-"))
                yield lo, hi, fields[5].strip()


def loaded_cxx_runtime() -> str | None:
    """The path of the libstdc++ this process runs with (torch loaded it), or None."""
    for _, _, path in _mapped_files():
        if os.path.basename(path).startswith("libstdc++.so") and os.path.exists(path):  # not "... (deleted)"
            return path
    return None


# A member of libstdc++ that no extension instantiates itself (explicitly instantiated inside the library).
CXX_RUNTIME_PROBE = "_ZNSo9_M_insertImEERSoT_"  # std::ostream::_M_insert<unsigned long>


def has_private_cxx_runtime(library: str) -> bool:
    """Whether the shared object carries its own copy of libstdc++ (linked from libstdc++.a).

    That copy's iostreams and locale are never initialised in a process that already runs the shared
    libstdc++: the first ``ostringstream << unsigned`` crashes (the emulator on the first H200 machine).
    """
    import ctypes

    handle = ctypes.CDLL(library)
    try:
        address = ctypes.cast(getattr(handle, CXX_RUNTIME_PROBE), ctypes.c_void_p).value
    except AttributeError:
        return False
    real = os.path.realpath(library)
    return any(lo <= address < hi and os.path.realpath(path) == real for lo, hi, path in _mapped_files())


def _load(name: str, tests_dir: Path, csrc_dir: Path, build_dir: Path, verbose: bool, only=None, opt=None):
    import torch  # noqa: F401  (loads the process's libstdc++ before we look for it)
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    # Link the C++ runtime the process already runs with, by path: a toolchain that links libstdc++
    # statically (-static-libstdc++, or only libstdc++.a found) would otherwise give the module a second copy.
    runtime = loaded_cxx_runtime()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = cpp_extension.load(
            name=name,
            sources=[str(p) for p in bind_sources(tests_dir, only)],
            extra_cflags=(opt or OPT) + CFLAGS,
            extra_ldflags=[runtime] if runtime else [],
            extra_include_paths=[str(csrc_dir), str(csrc_dir / "cuda"), str(csrc_dir / "emu" / "shim"), str(tests_dir)],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    if has_private_cxx_runtime(module.__file__):
        raise RuntimeError(f"{module.__file__} carries its own copy of libstdc++ (linked statically), which crashes "
                           f"at its first iostream use; check CXX/LDFLAGS for -static-libstdc++ "
                           f"(process runtime: {runtime})")
    return module


def build(name: str = "pycnn_emu", verbose: bool | None = None):
    """The emulation module built from the repository's sources (cached across sessions)."""
    if verbose is None:
        verbose = bool(os.environ.get("PYCNN_EMU_VERBOSE"))
    return _load(name, EMU_TESTS, ROOT / "csrc", BUILD_ROOT / name, verbose)


def build_patched(tag: str, patches: dict[str, list[tuple[str, str]]], only: list[str] | None = None,
                  verbose: bool | None = None):
    """A module built from a copy of the sources with ``patches`` applied.

    ``only``: the bind files to compile (``["selftest"]`` for bind_selftest.cpp); default all.
    ``patches`` maps a repository-relative path (e.g. ``tests/emu/kernels/stencil.cu`` or
    ``csrc/cuda/dwconv.cu``) to ``[(old, new), ...]``; each ``old`` must occur exactly once.
    """
    if verbose is None:
        verbose = bool(os.environ.get("PYCNN_EMU_VERBOSE"))
    digest = hashlib.sha1(repr((sorted(patches.items()), only)).encode()).hexdigest()[:10]
    name = f"pycnn_emu_{tag}_{digest}"
    work = BUILD_ROOT / "patched" / name
    src = work / "src"
    # Mirror the layout (tests/emu + csrc) so relative includes keep working; refresh on every build so the
    # copy follows the repository, but only rewrite files whose content changed (ninja stays incremental).
    for sub in ("csrc", "tests/emu"):
        for path in (ROOT / sub).rglob("*"):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            rel = path.relative_to(ROOT)
            text = path.read_bytes()
            for old, new in patches.get(str(rel), []):
                s = text.decode()
                count = s.count(old)
                if count != 1:
                    raise ValueError(f"patch for {rel}: {old!r} occurs {count} times (expected once)")
                text = s.replace(old, new).encode()
            dst = src / rel
            if not dst.exists() or dst.read_bytes() != text:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(text)
    for rel in patches:
        if not (ROOT / rel).exists():
            raise FileNotFoundError(rel)
    # -O0: a patched module runs a handful of launches, so compile time matters more than speed.
    return _load(name, src / "tests" / "emu", src / "csrc", work / "build", verbose, only, ["-O0"])


def global_kernels(cuda_dir: Path = ROOT / "csrc" / "cuda") -> dict[str, str]:
    """``{kernel name: file}`` for every ``__global__`` function defined in ``csrc/cuda/*.cu``/``*.cuh``."""
    import re

    found: dict[str, str] = {}
    for path in sorted(list(cuda_dir.glob("*.cu")) + list(cuda_dir.glob("*.cuh"))):
        text = path.read_text()
        text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)  # comments
        text = re.sub(r"^\s*#[^\n]*(\\\n[^\n]*)*", " ", text, flags=re.M)  # preprocessor lines
        text = re.sub(r"__launch_bounds__\s*\([^)]*\)", " ", text)
        text = re.sub(r'"(\\.|[^"\\])*"', '""', text)  # string literals
        for m in re.finditer(r"\b__global__\b([^;{(]*?)\b([A-Za-z_]\w*)\s*\(", text):
            found.setdefault(m.group(2), path.name)
    return found


if __name__ == "__main__":  # python tests/emu/emu_build.py: build (verbose) and list what is emulated
    mod = build(verbose=True)
    print("module:", mod.__file__)
    print("submodules:", sorted(k for k in dir(mod) if not k.startswith("_") and isinstance(getattr(mod, k), type(sys))))
    print("kernels in csrc/cuda:", global_kernels())
