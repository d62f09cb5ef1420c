#!/usr/bin/env python3
"""Build-time report of one ninja build: `python tools/build_times.py BUILD_DIR [--top N]`.

Reads BUILD_DIR/.ninja_log (the latest build in it) and, when the build ran under tools/cpu_time.py
(tools/time_build.sh does that), BUILD_DIR/cpu_times.tsv. Prints the ninja wall time, the sum of the jobs'
times, the critical path (the longest compile plus the link: pycnn's objects do not depend on each other)
and, with CPU times, the lower bound CPU sum / cores for the wall on that many cores (default: this
machine's), then the N longest jobs. On a shared machine compare CPU times: wall times stretch with the other load."""
import argparse
import os
from pathlib import Path


def ninja_jobs(build_dir: Path) -> tuple[dict[str, float], float]:
    """({output: seconds}, wall) of the latest build in .ninja_log: ninja appends each job as it ends, with
    times from the start of its build, so an end time that goes back starts another build."""
    runs: list[list[tuple[int, int, str]]] = [[]]
    last_end = -1
    for line in (build_dir / ".ninja_log").read_text().splitlines():
        if line.startswith("#"):
            continue
        start, end, _mtime, output, *_ = line.split("\t")
        if int(end) < last_end and runs[-1]:
            runs.append([])
        last_end = int(end)
        runs[-1].append((int(start), int(end), output))
    jobs = [j for j in runs[-1] if not j[2].endswith("cmake.verify_globs")]
    wall = (max(e for _, e, _ in jobs) - min(s for s, _, _ in jobs)) / 1000 if jobs else 0.0
    return {o: (e - s) / 1000 for s, e, o in jobs}, wall


def cpu_times(build_dir: Path) -> dict[str, float]:
    """{output: user + sys seconds} from tools/cpu_time.py's log (the last line of each output wins)."""
    path = build_dir / "cpu_times.tsv"
    if not path.exists():
        return {}
    times = {}
    for line in path.read_text().splitlines():
        user, sys_, _wall, output = line.split("\t")
        times[output] = float(user) + float(sys_)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", type=Path)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    jobs, wall = ninja_jobs(args.build_dir)
    cpu = cpu_times(args.build_dir)
    is_link = {o: o.endswith(".so") for o in jobs}  # everything else (objects, the precompiled header) compiles
    print(f"ninja wall {wall:.1f} s; {len(jobs)} jobs; sum of job wall times {sum(jobs.values()):.1f} s")
    for name, t in (("wall", jobs), ("CPU", cpu)):
        if not t:
            continue
        objs = [v for o, v in t.items() if not is_link.get(o, False)]
        link = sum(v for o, v in t.items() if is_link.get(o, False)) or sum(v for o, v in jobs.items() if is_link[o])
        line = f"by job {name}: critical path {max(objs) + link:.1f} s (longest compile {max(objs):.1f} + link {link:.1f})"
        if name == "CPU":
            total = sum(t.values())
            line += f"; CPU sum {total:.1f} s, / {args.cores} cores = {total / args.cores:.1f} s"
        print(line)
    print(f"\n{'CPU s':>7} {'wall s':>7}  job")
    order = sorted(jobs, key=lambda o: -(cpu.get(o) or jobs[o]))
    for o in order[: args.top]:
        c = f"{cpu[o]:7.1f}" if o in cpu else f"{'':>7}"
        print(f"{c} {jobs[o]:7.1f}  {o.replace('CMakeFiles/', '')}")


if __name__ == "__main__":
    main()
