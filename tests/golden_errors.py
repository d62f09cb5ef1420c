"""The golden-message check of the .arch error tests: a source (dedented) must fail to parse with exactly the
expected message (dedented), whose first line starts with the error's file:line:column."""
import textwrap

import pytest

import pycnn
from pycnn import ArchError


def check_error_message(name: str, source: str, expected: str) -> None:
    with pytest.raises(ArchError) as info:
        pycnn.parse(textwrap.dedent(source), file=f"{name}.arch")
    assert str(info.value) == textwrap.dedent(expected)
    err = info.value
    assert textwrap.dedent(expected).splitlines()[0].startswith(f"{err.file}:{err.line}:{err.column}: ")
