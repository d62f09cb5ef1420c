"""Loading: the main .arch file and the libraries its `use`s find (next to the file, then in the package), parsed
once and registered by name. Never imports torch."""
from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..opspec import PRIMITIVES
from . import ast as A
from .checks import CELL_STATEMENTS, check_binding
from .errors import ArchError
from .generators import GENERATORS
from .parse import MAX_SOURCE_BYTES, parse_file, parse_text, read_source

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def library_dirs() -> List[Path]:
    """Where `use` looks, after the using file's own folder: the package's archs (installed wheel), then
    the source checkout's archs/."""
    return [_PACKAGE_DIR / "archs", _PACKAGE_DIR.parent / "archs"]


_DEFINITION = re.compile(r"^[ \t]*(block|network)[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.M)


@functools.lru_cache(maxsize=256)
def _definitions_in(path: str, mtime_ns: int, max_bytes: int = MAX_SOURCE_BYTES) -> Tuple[Tuple[str, str], ...]:
    """(kind, name) of every definition in an .arch file, found without parsing it (the zoo's index of names)."""
    return tuple(m.groups() for m in _DEFINITION.finditer(read_source(path, max_bytes)))


class _Definitions(Mapping):
    """Blocks or networks by name. Every library file is parsed when `use`d (so its mistakes are reported), but
    its definitions are registered only when one of its names is first looked up."""

    def __init__(self, program: "Program"):
        self.program = program
        self.defined: Dict[str, object] = {}
        self.index: Dict[str, str] = {}  # name -> library file not parsed yet

    def __getitem__(self, name):
        if name not in self.defined and name in self.index:
            self.program._load_library(self.index[name])
        return self.defined[name]

    def __contains__(self, name):
        return name in self.defined or name in self.index

    def __iter__(self):
        yield from self.defined
        yield from (n for n in self.index if n not in self.defined)

    def __len__(self):
        return len(set(self.defined) | set(self.index))


class Program:
    """The main file and the libraries it uses (directly or through other libraries)."""

    def __init__(self, main: A.File, max_source_bytes: int = MAX_SOURCE_BYTES):
        self.main = main
        self.max_source_bytes = max_source_bytes
        self.files: Dict[str, A.File] = {main.path: main}
        self.blocks = _Definitions(self)
        self.networks = _Definitions(self)
        self.main_networks: List[str] = []
        self._indexed = {main.path}
        self._use_locs: Dict[str, tuple] = {}  # library path -> (loc, source) of the `use` that pulled it in
        self.resolved: Dict[str, str] = {}  # `use` name -> the file or folder it resolved to
        self._register(main, is_main=True)
        self.spaces: Dict[str, A.SpaceDef] = _spaces_of(main)  # design spaces (pycnn.dsl.space), by name

    def source_of(self, file: str) -> Optional[str]:
        f = self.files.get(file)
        return f.source if f is not None else None

    def _register(self, f: A.File, is_main: bool = False):
        seen_here = set()
        for item in f.items:
            if isinstance(item, (A.BlockDef, A.NetworkDef, A.NetworkAlias)):
                if item.name in seen_here:
                    raise ArchError(f"'{item.name}' is defined twice in this file", item.loc, f.source)
                seen_here.add(item.name)
                for param in getattr(item, "params", ()):
                    check_binding(param.name, param.loc, f.source, "a parameter")
                table = self.blocks if isinstance(item, A.BlockDef) else self.networks
                if isinstance(item, A.BlockDef) and (item.name in PRIMITIVES or item.name in GENERATORS):
                    raise ArchError(f"block name '{item.name}' is a built-in layer; choose another name",
                                    item.loc, f.source)
                if isinstance(item, A.BlockDef) and item.name in CELL_STATEMENTS:
                    raise ArchError(f"block name '{item.name}' starts a cell statement ({', '.join(CELL_STATEMENTS)}"
                                    f"); choose another name", item.loc, f.source)
                if item.name not in table.defined:  # the main file and earlier libraries take precedence
                    table.defined[item.name] = item
                if is_main and not isinstance(item, A.BlockDef):
                    self.main_networks.append(item.name)
        for item in f.items:
            if isinstance(item, A.Use):
                libs = _resolve_use(item, f.path, f.source)
                self.resolved.setdefault(".".join(item.path), _where(libs, os.path.join(*item.path)))
                for lib in libs:
                    if lib in self._indexed:
                        continue
                    self._indexed.add(lib)
                    self._use_locs[lib] = (item.loc, f.source)
                    try:
                        # the whole library, so its mistakes are reported (cached: parsed once); its definitions
                        # are read off the parsed file, not found a second time in its text
                        library = parse_file(lib, self.max_source_bytes, item.loc, f.source)
                        definitions = [("block" if isinstance(d, A.BlockDef) else "network", d.name)
                                       for d in library.items
                                       if isinstance(d, (A.BlockDef, A.NetworkDef, A.NetworkAlias))]
                    except OSError as e:
                        raise ArchError(f"{lib}: {e.strerror or e}", item.loc, f.source) from None
                    except ArchError as e:  # unreadable: reported where `use` named the library
                        if e.loc is not None:
                            raise
                        raise ArchError(e.message, item.loc, f.source) from None
                    for kind, name in definitions:
                        table = self.blocks if kind == "block" else self.networks
                        if name not in table.defined and name not in table.index:
                            table.index[name] = lib

    def _load_library(self, path: str):
        loc, source = self._use_locs.get(path, (None, None))
        f = parse_file(path, self.max_source_bytes, loc, source)
        self.files[path] = f
        for table in (self.blocks, self.networks):
            for name in [n for n, p in table.index.items() if p == path]:
                del table.index[name]
        self._register(f)


def _spaces_of(f: A.File) -> Dict[str, A.SpaceDef]:
    """The `space` definitions of a file, by name, in the order written."""
    spaces: Dict[str, A.SpaceDef] = {}
    for item in f.items:
        if isinstance(item, A.SpaceDef):
            if item.name in spaces:
                raise ArchError(f"space '{item.name}' is defined twice in this file", item.loc, f.source)
            spaces[item.name] = item
    return spaces


def _resolve_use(use: A.Use, from_file: str, source: str) -> List[str]:
    rel = os.path.join(*use.path)
    bases = []
    if from_file and not from_file.startswith("<"):
        bases.append(Path(from_file).resolve().parent)
    bases += library_dirs()
    found = [_library_in(base, rel) for base in bases]
    for k, files in enumerate(found):
        if files:
            package = next((f for f in found[k + 1:] if f), None)
            if k == 0 and len(bases) > len(library_dirs()) and package and package != files:
                # a folder next to the user's file hides the package's library of that name: say so
                warnings.warn(f"{use.loc.file}:{use.loc.line}: `use {'.'.join(use.path)}` found "
                              f"{_where(files, rel)} next to the file, not the package's {_where(package, rel)}",
                              stacklevel=2)
            return files
    raise ArchError(f"cannot find library '{'.'.join(use.path)}' (looked for {rel}.arch or {rel}/ next to the "
                    f"file and in the package's archs/)", use.loc, source)


def _library_in(base: Path, rel: str) -> List[str]:
    """The .arch files a `use` of `rel` finds in `base` (one file, or every regular file of a folder: a folder,
    FIFO or device named *.arch is skipped). A name the file system cannot hold finds nothing."""
    try:
        file = base / (rel + ".arch")
        if file.is_file():
            return [str(file.resolve())]
        folder = base / rel
        if folder.is_dir():
            return sorted(str(p.resolve()) for p in folder.glob("*.arch") if p.is_file())
    except (OSError, ValueError):
        pass
    return []


def _where(files: List[str], rel: str) -> str:
    """The file a `use` found, or its folder (with a final /)."""
    return files[0] if len(files) == 1 and files[0].endswith(rel + ".arch") else str(Path(files[0]).parent) + "/"


def load_program(source, file: Optional[str] = None, max_source_bytes: int = MAX_SOURCE_BYTES) -> Program:
    """Parse `source` (a path or .arch text); the libraries it `use`s are parsed as their names are needed."""
    if not isinstance(source, (str, os.PathLike)):
        hint = " (decode bytes first)" if isinstance(source, (bytes, bytearray)) else ""
        raise TypeError(f"source must be an .arch path or .arch text (str or os.PathLike), got "
                        f"{type(source).__name__}{hint}")
    if file is not None and not isinstance(file, str):
        raise TypeError(f"file must be a str naming the text in messages, got {type(file).__name__}")
    if isinstance(source, os.PathLike) or _looks_like_path(source):
        path = os.fspath(source)
        if not isinstance(path, str):
            raise TypeError(f"source path must be text, got {type(path).__name__}")
        if not os.path.lexists(path):
            raise ArchError(f"no such .arch file: {path}")
        main = parse_file(path, max_source_bytes)
    else:
        main = parse_text(source, file or "<text>", max_source_bytes)
    return Program(main, max_source_bytes)


def _looks_like_path(s: str) -> bool:
    """A one-line string naming an existing file, or ending in .arch with no braces, is a path; else it is text."""
    if "\n" in s or len(s) > 4096:
        return False
    try:
        if os.path.isfile(s):
            return True
    except (OSError, ValueError):
        return False
    return "{" not in s and s.strip().endswith(".arch")
