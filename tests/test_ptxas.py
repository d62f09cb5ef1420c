"""The nvcc build keeps ptxas's report per kernel source (tools/ptxas_log.sh): no kernel may spill."""

import re
from pathlib import Path

import pytest

import pycnn

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\w+)'")
SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_reports():
    """{source: text} of the newest build's reports (editable/wheel build dirs and tools/dev_build.sh)."""
    logs = sorted(ROOT.glob("build/*/ptxas/*.cu.log"), key=lambda p: p.stat().st_mtime)
    return {p.name: p.read_text() for p in logs}  # newest build wins per source


def spills(report: str):
    """[(kernel, arch, spill_store_bytes, spill_load_bytes)] parsed from one ptxas -v report."""
    out, current = [], None
    for line in report.splitlines():
        if m := ENTRY.search(line):
            current = (m.group(1), m.group(2))
        elif (m := SPILL.search(line)) and current:
            out.append((*current, int(m.group(1)), int(m.group(2))))
            current = None
    return out


def test_parser_reads_spills():
    report = ("ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'\n"
              "ptxas info    : Function properties for _Z3fooPf\n"
              "    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n")
    assert spills(report) == [("_Z3fooPf", "sm_90", 4, 12)]


@pytest.mark.skipif(not pycnn.build_info()["cuda"], reason="CUDA kernels not compiled in this build")
def test_no_kernel_spills_to_local_memory():
    reports = ptxas_reports()
    assert reports, "CUDA kernels were built but no ptxas report was found under build/*/ptxas/"
    cu_sources = {p.name + ".log" for p in (ROOT / "csrc" / "cuda").glob("*.cu")}
    assert cu_sources <= set(reports), f"no ptxas report for {sorted(cu_sources - set(reports))}"
    entries = [(src, *e) for src, text in reports.items() for e in spills(text)]
    assert entries, "ptxas reports hold no kernel entries"
    spilling = [e for e in entries if e[3] or e[4]]
    assert not spilling, "kernels spilling to local memory:\n" + "\n".join(map(str, spilling))
